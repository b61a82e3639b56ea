//! Finding the deployment to boot: the `ostree=` kernel argument and its
//! resolution through the boot symlinks, without leaving the sysroot.

use std::os::fd::AsFd;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use rustix::fs::{AtFlags, FileType};

/// The kernel argument naming the boot link of the deployment.
pub const OSTREE_KARG: &str = "ostree";

/// At most this many symlinks are followed, as the kernel's `ELOOP` limit.
const MAX_SYMLINKS: usize = 40;

/// The value of the first `KEY=VALUE` argument of `cmdline`, as ostree's
/// `otcore_find_proc_cmdline_key`: arguments are separated by spaces (a
/// trailing newline, as `/proc/cmdline` has, is ignored), `KEY` must start
/// an argument and be followed by `=`, and the **first** occurrence wins.
/// No quoting: ostree does none either.
pub fn find_karg<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    let cmdline = cmdline.strip_suffix('\n').unwrap_or(cmdline);
    cmdline
        .split(' ')
        .find_map(|arg| arg.strip_prefix(key)?.strip_prefix('='))
}

/// The deployment a boot link resolves to, relative to the sysroot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedDeployment {
    /// `ostree/deploy/STATEROOT/deploy/CSUM.SERIAL`.
    pub relpath: PathBuf,
    /// The stateroot (`ostree/deploy/STATEROOT`).
    pub stateroot: String,
    /// The commit checksum (64 lowercase hex digits).
    pub csum: String,
    /// The deployment serial.
    pub serial: u32,
}

impl ResolvedDeployment {
    /// `ostree/deploy/STATEROOT/var`, relative to the sysroot: the
    /// stateroot's shared `/var`.
    pub fn var_relpath(&self) -> PathBuf {
        PathBuf::from(format!("ostree/deploy/{}/var", self.stateroot))
    }
}

/// Resolves the `ostree=` argument `karg` (e.g.
/// `/ostree/boot.1/default/BOOTCSUM/0`) inside the sysroot `sysroot`, as
/// ostree-prepare-root does: the target must be a symbolic link, and
/// following it (and `ostree/boot.B -> boot.B.S` on the way) must end at a
/// directory `ostree/deploy/STATEROOT/deploy/CSUM.SERIAL`.
///
/// Unlike ostree's `realpath()`, the walk is done one component at a time
/// relative to `sysroot` and never leaves it: an absolute symlink, or a
/// `..` above the sysroot, is refused (in the initramfs it would name a
/// file of the initramfs, not of the disk).
pub fn resolve_deployment(sysroot: impl AsFd, karg: &str) -> Result<ResolvedDeployment> {
    let sysroot = sysroot.as_fd();
    let target = karg.trim_start_matches('/');
    if target.is_empty() {
        bail!("ostree={karg}: names the sysroot itself, not a boot link");
    }
    let st = rustix::fs::statat(sysroot, target, AtFlags::SYMLINK_NOFOLLOW)
        .with_context(|| format!("Finding the boot link ostree={karg} in the sysroot"))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Symlink {
        bail!("ostree={karg}: the target is not a symbolic link");
    }
    let resolved = walk(sysroot, target).with_context(|| format!("Resolving ostree={karg}"))?;
    let rel = resolved.join("/");
    let st = rustix::fs::statat(sysroot, rel.as_str(), AtFlags::empty())
        .with_context(|| format!("Inspecting {rel}"))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        bail!("ostree={karg} resolves to {rel}, which is not a directory");
    }
    parse_deployment_path(&resolved).with_context(|| format!("ostree={karg} resolves to {rel}"))
}

/// Checks that `rel` is a directory under `sysroot` reached without any
/// symlink (each component is looked at with lstat): what is mounted by
/// path, as the stateroot's `var`, must not lead out of the sysroot.
pub fn require_real_dir(sysroot: impl AsFd, rel: &std::path::Path) -> Result<()> {
    let sysroot = sysroot.as_fd();
    let mut here = PathBuf::new();
    for c in rel.components() {
        here.push(c);
        let st = rustix::fs::statat(sysroot, &here, AtFlags::SYMLINK_NOFOLLOW)
            .with_context(|| format!("Inspecting {} in the sysroot", here.display()))?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {}
            FileType::Symlink => bail!(
                "{} is a symbolic link: {} must be a directory of the sysroot",
                here.display(),
                rel.display()
            ),
            _ => bail!("{} is not a directory", here.display()),
        }
    }
    Ok(())
}

/// Follows every symlink of `path` relative to `root`, returning the
/// components of the final path (which may not exist; the caller checks).
fn walk(root: rustix::fd::BorrowedFd<'_>, path: &str) -> Result<Vec<String>> {
    let mut done: Vec<String> = Vec::new();
    // Components still to visit, the next one last.
    let mut todo: Vec<String> = path.split('/').rev().map(str::to_string).collect();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                if done.pop().is_none() {
                    bail!("a \"..\" leads out of the sysroot");
                }
                continue;
            }
            _ => {}
        }
        done.push(c);
        let here = done.join("/");
        let st = match rustix::fs::statat(root, here.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => bail!("{here} does not exist"),
            Err(e) => return Err(e).with_context(|| format!("Inspecting {here}")),
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::Symlink {
            continue;
        }
        links += 1;
        if links > MAX_SYMLINKS {
            bail!("too many levels of symbolic links at {here}");
        }
        let target = rustix::fs::readlinkat(root, here.as_str(), Vec::new())
            .with_context(|| format!("Reading the symlink {here}"))?;
        let target = target
            .to_str()
            .with_context(|| format!("The symlink {here} has a non-UTF-8 target"))?;
        if target.starts_with('/') {
            bail!("the symlink {here} -> {target} is absolute: it would leave the sysroot");
        }
        done.pop();
        todo.extend(target.split('/').rev().map(str::to_string));
    }
    Ok(done)
}

/// Checks that `c` is `ostree/deploy/STATEROOT/deploy/CSUM.SERIAL`.
fn parse_deployment_path(c: &[String]) -> Result<ResolvedDeployment> {
    let [o, d1, stateroot, d2, name] = c else {
        bail!("not a deployment (expected ostree/deploy/STATEROOT/deploy/CHECKSUM.SERIAL)");
    };
    if o != "ostree" || d1 != "deploy" || d2 != "deploy" {
        bail!("not a deployment (expected ostree/deploy/STATEROOT/deploy/CHECKSUM.SERIAL)");
    }
    let bad_name = || anyhow::anyhow!("not a deployment directory name: {name:?}");
    let (csum, serial) = name.rsplit_once('.').ok_or_else(bad_name)?;
    let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    if csum.len() != 64 || !csum.bytes().all(hex) {
        return Err(bad_name());
    }
    if serial.is_empty() || !serial.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_name());
    }
    Ok(ResolvedDeployment {
        relpath: c.iter().collect(),
        stateroot: stateroot.clone(),
        csum: csum.to_string(),
        serial: serial.parse().map_err(|_| bad_name())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::path::Path;

    const CSUM: &str = "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d";

    #[test]
    fn kargs_are_found_as_ostree_finds_them() {
        for (cmdline, want) in [
            ("ostree=/a", Some("/a")),
            ("root=x ostree=/a rw\n", Some("/a")),
            ("ostree=/a ostree=/b", Some("/a")),
            ("  ostree=/a", Some("/a")),
            ("xostree=/a", None),
            ("ostree /a", None),
            ("ostreex=/a", None),
            ("ostree=", Some("")),
            ("", None),
        ] {
            assert_eq!(find_karg(cmdline, OSTREE_KARG), want, "{cmdline:?}");
        }
    }

    /// A sysroot with one deployment as arbor and ostree lay it out, and the
    /// boot link `ostree/boot.1/os/BOOTCSUM/0`.
    fn sysroot() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let p = t.path();
        std::fs::create_dir_all(p.join(format!("ostree/deploy/os/deploy/{CSUM}.0/usr"))).unwrap();
        std::fs::create_dir_all(p.join("ostree/deploy/os/var")).unwrap();
        std::fs::create_dir_all(p.join("ostree/boot.1.1/os/bb")).unwrap();
        symlink("boot.1.1", p.join("ostree/boot.1")).unwrap();
        symlink(
            format!("../../../deploy/os/deploy/{CSUM}.0"),
            p.join("ostree/boot.1.1/os/bb/0"),
        )
        .unwrap();
        t
    }

    fn open(p: &Path) -> std::fs::File {
        std::fs::File::open(p).unwrap()
    }

    fn resolve_err(root: &Path, karg: &str) -> String {
        format!("{:#}", resolve_deployment(open(root), karg).unwrap_err())
    }

    #[test]
    fn a_boot_link_resolves_to_its_deployment() {
        let t = sysroot();
        let d = resolve_deployment(open(t.path()), "/ostree/boot.1/os/bb/0").unwrap();
        assert_eq!(
            d.relpath,
            PathBuf::from(format!("ostree/deploy/os/deploy/{CSUM}.0"))
        );
        assert_eq!(
            (d.stateroot.as_str(), d.csum.as_str(), d.serial),
            ("os", CSUM, 0)
        );
        assert_eq!(d.var_relpath(), PathBuf::from("ostree/deploy/os/var"));
    }

    #[test]
    fn escapes_and_broken_links_are_refused() {
        let t = sysroot();
        let p = t.path();
        let links = p.join("ostree/boot.1.1/os/bb");
        // Out of the sysroot by "..", and by an absolute target.
        symlink("../../../../../../etc", links.join("1")).unwrap();
        symlink(
            format!("/ostree/deploy/os/deploy/{CSUM}.0"),
            links.join("2"),
        )
        .unwrap();
        // Dangling, and a loop.
        symlink("../../../deploy/os/deploy/nothing.0", links.join("3")).unwrap();
        symlink("4", links.join("4")).unwrap();
        // Not a deployment: the stateroot's var, and a file.
        symlink("../../../deploy/os/var", links.join("5")).unwrap();
        std::fs::write(p.join(format!("ostree/deploy/os/deploy/{CSUM}.1")), "").unwrap();
        symlink(
            format!("../../../deploy/os/deploy/{CSUM}.1"),
            links.join("6"),
        )
        .unwrap();
        // A directory, not a link.
        std::fs::create_dir(links.join("7")).unwrap();
        // A deployment-shaped name that is not CSUM.SERIAL.
        std::fs::create_dir_all(p.join("ostree/deploy/os/deploy/abc.0")).unwrap();
        symlink("../../../deploy/os/deploy/abc.0", links.join("8")).unwrap();
        for (n, want) in [
            ("1", "leads out of the sysroot"),
            ("2", "is absolute: it would leave the sysroot"),
            ("3", "does not exist"),
            ("4", "too many levels of symbolic links"),
            ("5", "not a deployment (expected"),
            ("6", "which is not a directory"),
            ("7", "the target is not a symbolic link"),
            ("8", "not a deployment directory name"),
        ] {
            let msg = resolve_err(p, &format!("/ostree/boot.1/os/bb/{n}"));
            assert!(msg.contains(want), "{n}: {msg}");
        }
        let msg = resolve_err(p, "/ostree/boot.0/os/bb/0");
        assert!(msg.contains("Finding the boot link"), "{msg}");
        assert!(resolve_err(p, "/").contains("names the sysroot itself"));
    }

    #[test]
    fn a_stateroot_var_that_is_a_symlink_is_refused() {
        let t = sysroot();
        let p = t.path();
        let d = resolve_deployment(open(p), "/ostree/boot.1/os/bb/0").unwrap();
        require_real_dir(open(p), &d.var_relpath()).unwrap();
        let var = p.join("ostree/deploy/os/var");
        for target in ["../../..", "/etc"] {
            std::fs::remove_dir_all(&var).ok();
            std::fs::remove_file(&var).ok();
            symlink(target, &var).unwrap();
            let e = format!(
                "{:#}",
                require_real_dir(open(p), &d.var_relpath()).unwrap_err()
            );
            assert!(
                e.contains("ostree/deploy/os/var is a symbolic link"),
                "{target}: {e}"
            );
        }
        std::fs::remove_file(&var).unwrap();
        std::fs::write(&var, "").unwrap();
        let e = format!(
            "{:#}",
            require_real_dir(open(p), &d.var_relpath()).unwrap_err()
        );
        assert!(e.contains("is not a directory"), "{e}");
    }
}
