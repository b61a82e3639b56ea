//! Finding a deployment's kernel the way ostree does
//! (`usr/lib/modules/KVER/vmlinuz`, `initramfs.img`, `devicetree`), its
//! boot checksum, and installing it under `/boot/ostree/STATEROOT-BOOTCSUM/`.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};

use anyhow::{bail, Context, Result};
use rustix::fs::{AtFlags, FileType};
use rustix::io::Errno;

use crate::fsutil;

/// The boot files of one deployment tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelLayout {
    /// Kernel version (the `usr/lib/modules/` directory name).
    pub kver: String,
    /// Directory holding the files, relative to the deployment.
    pub dir: String,
    /// Whether `initramfs.img` (or `initramfs`) exists, and its name.
    pub initramfs: Option<String>,
    /// A single `devicetree` file, if any.
    pub devicetree: Option<String>,
    /// SHA-256 of kernel ‖ initramfs ‖ devicetree, hex.
    pub bootcsum: String,
}

impl KernelLayout {
    /// Installed file names: `(source name in dir, name under /boot/ostree/…)`.
    pub fn files(&self) -> Vec<(String, String)> {
        let k = &self.kver;
        let mut v = vec![("vmlinuz".to_string(), format!("vmlinuz-{k}"))];
        if let Some(i) = &self.initramfs {
            v.push((i.clone(), format!("initramfs-{k}.img")));
        }
        if let Some(d) = &self.devicetree {
            v.push((d.clone(), format!("devicetree-{k}")));
        }
        v
    }
}

fn is_regular(dir: impl AsFd, name: &str) -> Result<bool> {
    Ok(fsutil::file_type(dir, name)? == Some(FileType::RegularFile))
}

fn hash_into(h: &mut arbor_format::Sha256, dir: impl AsFd, name: &str) -> Result<()> {
    let mut f = fsutil::open_file(dir, name)?;
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("Reading {name}"))?;
        if n == 0 {
            return Ok(());
        }
        h.update(&buf[..n]);
    }
}

/// Finds the kernel in a deployment tree: the first `usr/lib/modules/KVER/`
/// (in name order, for a stable choice) holding a regular file `vmlinuz`.
pub fn find_kernel(deployment: &OwnedFd) -> Result<KernelLayout> {
    let Some(modules) = fsutil::open_dir_optional(deployment, "usr/lib/modules")? else {
        bail!("No kernel found: the tree has no usr/lib/modules/");
    };
    let mut names = fsutil::list_names(&modules)?;
    names.sort();
    for kver in names {
        let Some(d) = fsutil::open_dir_optional(&modules, &kver)? else {
            continue;
        };
        if !is_regular(&d, "vmlinuz")? {
            continue;
        }
        let initramfs = ["initramfs.img", "initramfs"]
            .into_iter()
            .map(|n| is_regular(&d, n).map(|ok| ok.then(|| n.to_string())))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .next();
        let devicetree = is_regular(&d, "devicetree")?.then(|| "devicetree".to_string());
        let mut h = arbor_format::Sha256::new();
        hash_into(&mut h, &d, "vmlinuz")?;
        if let Some(i) = &initramfs {
            hash_into(&mut h, &d, i)?;
        }
        if let Some(t) = &devicetree {
            hash_into(&mut h, &d, t)?;
        }
        return Ok(KernelLayout {
            dir: format!("usr/lib/modules/{kver}"),
            kver,
            initramfs,
            devicetree,
            bootcsum: h.finish().to_hex(),
        });
    }
    bail!("No kernel found: no usr/lib/modules/*/vmlinuz in the tree")
}

/// Copies the boot files into `boot/ostree/STATEROOT-BOOTCSUM/` (relative
/// to `boot`) unless present: each file is hardlinked (its data is a synced
/// repository object) or copied and synced, under a temporary name, then
/// renamed, so a present name always has complete content, even after a
/// power loss. The directory entries are made durable by the sync before
/// the boot swap.
pub fn install(
    layout: &KernelLayout,
    deployment: &OwnedFd,
    boot: &OwnedFd,
    stateroot: &str,
) -> Result<()> {
    let dest_name = format!("ostree/{stateroot}-{}", layout.bootcsum);
    let dest = fsutil::ensure_dir_path(boot, &dest_name, 0o755)?;
    let src = fsutil::open_dir(deployment, &layout.dir)?;
    for (from, to) in layout.files() {
        if rustix::fs::statat(&dest, to.as_str(), AtFlags::SYMLINK_NOFOLLOW).is_ok() {
            continue;
        }
        let tmp = format!(".{to}.tmp");
        let _ = rustix::fs::unlinkat(&dest, tmp.as_str(), AtFlags::empty());
        // A hardlink when /boot is on the same filesystem, as ostree does.
        match rustix::fs::linkat(&src, from.as_str(), &dest, tmp.as_str(), AtFlags::empty()) {
            Ok(()) => {}
            Err(Errno::XDEV) | Err(Errno::MLINK) | Err(Errno::PERM) => {
                // Synced before the rename: a name that exists after a power
                // loss must have its content, since it is never rewritten.
                fsutil::copy_file(&src, &from, &dest, &tmp, 0o644)
                    .and_then(|f| Ok(f.sync_all()?))
                    .with_context(|| format!("Installing {to} into /boot/{dest_name}"))?;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("Linking {to} into /boot/{dest_name}"))
            }
        }
        rustix::fs::renameat(&dest, tmp.as_str(), &dest, to.as_str())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(t: &tempfile::TempDir) -> OwnedFd {
        fsutil::open_dir(rustix::fs::CWD, &t.path().to_string_lossy()).unwrap()
    }

    #[test]
    fn bootcsum_is_the_specs_and_missing_kernels_are_errors() {
        let t = tempfile::tempdir().unwrap();
        let err = find_kernel(&root(&t)).unwrap_err();
        assert!(format!("{err:#}").contains("no usr/lib/modules"), "{err:#}");
        let m = t.path().join("usr/lib/modules/6.1.0-test");
        std::fs::create_dir_all(&m).unwrap();
        let err = find_kernel(&root(&t)).unwrap_err();
        assert!(
            format!("{err:#}").contains("no usr/lib/modules/*/vmlinuz"),
            "{err:#}"
        );
        std::fs::write(m.join("vmlinuz"), "FAKE KERNEL\n").unwrap();
        std::fs::write(m.join("initramfs.img"), "FAKE INITRAMFS\n").unwrap();
        let k = find_kernel(&root(&t)).unwrap();
        // §8.4's example: sha256(vmlinuz || initramfs.img).
        assert_eq!(
            k.bootcsum,
            "166ace07e5846366508186963b5030d981163988f4dda918aa18bdfc9b5465f6"
        );
        assert_eq!(k.initramfs.as_deref(), Some("initramfs.img"));
        // A symlinked vmlinuz is not a kernel (never followed).
        std::fs::remove_file(m.join("vmlinuz")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", m.join("vmlinuz")).unwrap();
        assert!(find_kernel(&root(&t)).is_err());
    }
}
