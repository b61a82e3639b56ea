//! Running the external tools an image build needs, with errors that say
//! which Debian package provides a missing one and what the tool printed.

use std::ffi::OsStr;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The tools, with the Debian package providing each.
pub const TOOLS: &[(&str, &str)] = &[
    ("mkfs.ext4", "e2fsprogs"),
    (
        "grub-mkimage",
        "grub-common (and grub-pc-bin for the i386-pc modules)",
    ),
    ("qemu-img", "qemu-utils"),
    ("mkfs.erofs", "erofs-utils"),
    ("cp", "coreutils"),
];

/// The Debian package providing `tool`.
fn package_of(tool: &str) -> &'static str {
    TOOLS
        .iter()
        .find(|(t, _)| *t == tool)
        .map_or("(unknown)", |(_, p)| p)
}

/// A command for `tool` (found on PATH or in /usr/sbin, /sbin: e2fsprogs
/// lives there and a non-root PATH may lack them).
pub fn command(tool: &str) -> Command {
    for dir in ["/usr/sbin", "/sbin"] {
        let p = std::path::Path::new(dir).join(tool);
        if !is_on_path(tool) && p.exists() {
            return Command::new(p);
        }
    }
    Command::new(tool)
}

fn is_on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// Runs `cmd` (whose program is `tool`), failing with its stderr.
pub fn run(tool: &str, cmd: &mut Command) -> Result<Vec<u8>> {
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{tool} is not installed: install the Debian package {}",
            package_of(tool)
        ),
        Err(e) => return Err(e).with_context(|| format!("Running {tool}")),
    };
    if !out.status.success() {
        let args: Vec<&OsStr> = cmd.get_args().collect();
        bail!(
            "{tool} {} failed ({}): {}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_names_its_package() {
        let e = run("qemu-img", &mut Command::new("/nonexistent/qemu-img")).unwrap_err();
        assert!(e.to_string().contains("qemu-utils"), "{e}");
    }
}
