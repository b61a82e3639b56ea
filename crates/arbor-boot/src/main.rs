//! `arbor-prepare-root SYSROOT [KERNEL_CMDLINE]`: turns the physical root
//! mounted at SYSROOT into the deployment named by `ostree=` (see the
//! arbor_boot crate docs). As ostree-prepare-root, the kernel command line
//! is `/proc/cmdline` unless given as the second argument. No clap: this
//! binary goes into the initramfs and stays small.

// Dev-dependencies of the library's tests.
#[cfg(test)]
use {arbor_format as _, tempfile as _};

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

const USAGE: &str = "Usage: arbor-prepare-root SYSROOT [KERNEL_CMDLINE]

Sets up the deployment named by the ostree= kernel argument as the new root
at SYSROOT (the mounted physical root, /root in an initramfs-tools initramfs):
/usr read-only, the stateroot's /var on /var, the physical root on /sysroot,
and writes /run/ostree-booted. KERNEL_CMDLINE defaults to /proc/cmdline.
";

fn run(args: &[String]) -> Result<Option<arbor_boot::Prepared>> {
    let (sysroot, cmdline) = match args {
        [flag] if flag == "--help" || flag == "-h" => {
            print!("{USAGE}");
            return Ok(None);
        }
        [flag] if flag == "--version" => {
            println!("arbor-prepare-root {}", env!("CARGO_PKG_VERSION"));
            return Ok(None);
        }
        [sysroot] => (
            sysroot,
            std::fs::read_to_string("/proc/cmdline").context("Reading /proc/cmdline")?,
        ),
        [sysroot, cmdline] => (sysroot, cmdline.clone()),
        _ => anyhow::bail!("expected SYSROOT [KERNEL_CMDLINE]\n\n{USAGE}"),
    };
    let p = arbor_boot::PrepareRoot {
        sysroot: PathBuf::from(sysroot),
        cmdline,
        run_dir: PathBuf::from(arbor_boot::RUN_DIR),
    };
    arbor_boot::prepare_root(&p).map(Some)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(Some(d)) => {
            // The initramfs console is the log: say what was booted.
            eprintln!(
                "arbor-prepare-root: booting {} (stateroot {}, sysroot {})",
                d.deployment.display(),
                d.stateroot,
                if d.readonly { "read-only" } else { "writable" }
            );
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("arbor-prepare-root: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
