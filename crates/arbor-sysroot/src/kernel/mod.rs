//! Finding a deployment's boot files the way ostree does
//! (`get_kernel_from_tree` in `ostree-sysroot-deploy.c`), their boot
//! checksum, and installing them under `/boot/ostree/STATEROOT-BOOTCSUM/`
//! (`install_deployment_kernel`).
//!
//! Two layouts exist, and ostree looks at both:
//!
//! * `usr/lib/modules/KVER/` (`get_kernel_from_tree_usrlib_modules`): the
//!   directory holding a regular file `vmlinuz`; optionally `initramfs.img`
//!   (else `initramfs`), `devicetree` (else a directory `dtb/`),
//!   `.vmlinuz.hmac` and `aboot.img`. The boot checksum is SHA-256 of
//!   vmlinuz ‖ initramfs ‖ devicetree, or of vmlinuz ‖ initramfs ‖ the
//!   contents of every file under `dtb/` (names sorted bytewise at each
//!   level, directories recursed in place). The HMAC and aboot files do
//!   not count.
//! * The legacy layout (`get_kernel_from_tree_legacy_layouts`): the first
//!   of `usr/lib/ostree-boot/` and `boot/` that exists (only that one is
//!   examined), holding `vmlinuz-…-CSUM` and optionally `initramfs-…-CSUM`
//!   and `devicetree-…-CSUM`, where CSUM (64 lowercase hex digits after
//!   the last `-`) must be the same for all and is the boot checksum. The
//!   installed names drop the `-CSUM` suffix.
//!
//! The module layout wins, except when it has no initramfs and the legacy
//! one does.
//!
//! Choice among several candidates: ostree takes the first in directory
//! order (`readdir`), which is not stable across file systems or even
//! across checkouts, so arbor cannot reproduce it. Arbor never guesses: a
//! new deployment with two `usr/lib/modules/*/vmlinuz`, or two legacy
//! `vmlinuz-*-CSUM`, is refused. For an existing deployment (whose boot
//! checksum is recorded in the sysroot, possibly by ostree) the candidate
//! with that checksum is taken, which is the one ostree took. A legacy
//! initramfs or devicetree is taken among several only if exactly one has
//! the kernel's checksum: with any other, ostree fails.
//!
//! Paths in the tree are untrusted. ostree follows symlinks when it reads
//! the boot files (relative to the host's `/`); arbor follows them too, but
//! only inside the deployment (`openat2` with `RESOLVE_IN_ROOT`), so an
//! in-tree relative link gives the same bytes and nothing outside the
//! deployment is ever read.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// One file to install: its name in the layout's directory, and under
/// `/boot/ostree/STATEROOT-BOOTCSUM/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFile {
    /// Name in [`KernelLayout::dir`].
    pub src: String,
    /// Name in the boot checksum directory.
    pub dest: String,
}

/// The device tree(s) of a layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Devicetree {
    /// One file (`devicetree` → `devicetree-KVER`; BLS key `devicetree`).
    File(BootFile),
    /// A directory (`dtb`), installed recursively under the same name
    /// (BLS key `fdtdir`).
    Dir(String),
}

/// The boot files of one deployment tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelLayout {
    /// Directory holding the files, relative to the deployment.
    pub dir: String,
    /// The kernel (`vmlinuz` → `vmlinuz-KVER`).
    pub kernel: BootFile,
    /// The initramfs (`initramfs.img` or `initramfs` → `initramfs-KVER.img`).
    pub initramfs: Option<BootFile>,
    /// The device tree file or directory.
    pub devicetree: Option<Devicetree>,
    /// The kernel's FIPS HMAC (`.vmlinuz.hmac` → `.vmlinuz-KVER.hmac`, the
    /// name dracut expects).
    pub hmac: Option<BootFile>,
    /// An Android boot image (`aboot.img` → `aboot-KVER.img`).
    pub aboot: Option<BootFile>,
    /// The boot checksum, hex.
    pub bootcsum: String,
}

impl KernelLayout {
    /// The single files to install, kernel first.
    pub fn files(&self) -> Vec<&BootFile> {
        let dt = match &self.devicetree {
            Some(Devicetree::File(f)) => Some(f),
            _ => None,
        };
        std::iter::once(&self.kernel)
            .chain(&self.initramfs)
            .chain(dt)
            .chain(&self.hmac)
            .chain(&self.aboot)
            .collect()
    }
}

/// Opens `path` (relative to the deployment root) following symlinks, but
/// resolving every one of them as if the deployment were `/`: absolute
/// targets and `..` never leave it. `None` if it does not exist.
pub(crate) fn open_in_tree(root: &OwnedFd, path: &Path, flags: OFlags) -> Result<Option<OwnedFd>> {
    // openat2 rejects flags that O_PATH ignores.
    let flags = if flags.contains(OFlags::PATH) {
        flags | OFlags::CLOEXEC
    } else {
        flags | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK
    };
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    // EAGAIN: a concurrent rename raced the `..` resolution; retry.
    for _ in 0..16 {
        match rustix::fs::openat2(root, path, flags, Mode::empty(), resolve) {
            Ok(fd) => return Ok(Some(fd)),
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::AGAIN) => continue,
            Err(Errno::NOSYS) => {
                bail!(
                    "Opening {}: openat2 is needed (Linux 5.6 or later)",
                    path.display()
                )
            }
            Err(e) => return Err(e).with_context(|| format!("Opening {}", path.display())),
        }
    }
    bail!("Opening {}: the tree keeps changing", path.display())
}

/// The type of what `path` resolves to inside the deployment.
fn type_in_tree(root: &OwnedFd, path: &Path) -> Result<Option<FileType>> {
    Ok(match open_in_tree(root, path, OFlags::PATH)? {
        Some(fd) => Some(FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode)),
        None => None,
    })
}

/// Names in a directory (bytes, any encoding), without `.` and `..`.
fn dir_names(dir: &OwnedFd) -> Result<Vec<OsString>> {
    let mut out = Vec::new();
    for e in rustix::fs::Dir::read_from(dir)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(OsStr::from_bytes(n).to_owned());
        }
    }
    Ok(out)
}

fn lstat_type(dir: &OwnedFd, name: &OsStr) -> Result<FileType> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .with_context(|| format!("Inspecting {}", name.to_string_lossy()))?;
    Ok(FileType::from_raw_mode(st.st_mode))
}

fn utf8(name: &OsStr, what: &str) -> Result<String> {
    name.to_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{what} {:?} is not UTF-8", name))
}

fn hash_fd(h: &mut arbor_format::Sha256, fd: OwnedFd, path: &Path) -> Result<()> {
    let mut f = File::from(fd);
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("Reading {}", path.display()))?;
        if n == 0 {
            return Ok(());
        }
        h.update(&buf[..n]);
    }
}

/// Hashes a file that must be a regular one once symlinks are resolved.
fn hash_file(h: &mut arbor_format::Sha256, fd: OwnedFd, path: &Path) -> Result<()> {
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        bail!("{} is not a regular file", path.display());
    }
    hash_fd(h, fd, path)
}

/// ostree's `checksum_dir_recurse`: the contents of every non-directory
/// under `dir`, names sorted bytewise at each level, subdirectories
/// hashed where they sort. A symlink contributes its target's content (a
/// dangling one nothing), resolved inside the tree.
///
/// Iterative: a stack of directories (one descriptor per level of the
/// current path) and one path buffer, so a deep tree cannot overflow the
/// stack.
fn hash_tree(
    h: &mut arbor_format::Sha256,
    root: &OwnedFd,
    dir: &OwnedFd,
    path: &Path,
) -> Result<()> {
    let sorted_rev = |d: &OwnedFd| -> Result<Vec<OsString>> {
        let mut names = dir_names(d)?;
        names.sort_by(|a, b| b.as_bytes().cmp(a.as_bytes()));
        Ok(names)
    };
    let mut path = path.to_path_buf();
    // Per directory entered: its descriptor and its names still to hash,
    // in reverse order (popped in bytewise order).
    let mut stack = vec![(rustix::io::dup(dir)?, sorted_rev(dir)?)];
    while let Some((d, names)) = stack.last_mut() {
        let Some(name) = names.pop() else {
            stack.pop();
            path.pop();
            continue;
        };
        path.push(&name);
        match lstat_type(d, &name)? {
            FileType::Directory => {
                let sub = open_child(d, &name, OFlags::DIRECTORY)?;
                let names = sorted_rev(&sub)?;
                stack.push((sub, names));
                continue;
            }
            // As ostree, which opens and reads whatever it finds (a link
            // to a directory fails at the read).
            _ => {
                if let Some(fd) = open_in_tree(root, &path, OFlags::RDONLY)? {
                    hash_fd(h, fd, &path)?;
                }
            }
        }
        path.pop();
    }
    Ok(())
}

/// Opens `name` in `dir` read-only, never following a symlink.
fn open_child(dir: &OwnedFd, name: &OsStr, flags: OFlags) -> Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        flags | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("Opening {}", name.to_string_lossy()))
}

/// The layout of `usr/lib/modules/KVER`, whose `vmlinuz` is a regular file.
fn modules_layout(root: &OwnedFd, kver: &str) -> Result<KernelLayout> {
    let dir = format!("usr/lib/modules/{kver}");
    let at = |n: &str| Path::new(&dir).join(n);
    let mut h = arbor_format::Sha256::new();
    let kernel = open_in_tree(root, &at("vmlinuz"), OFlags::RDONLY)?
        .ok_or_else(|| anyhow!("{dir}/vmlinuz vanished"))?;
    hash_file(&mut h, kernel, &at("vmlinuz"))?;
    let mut initramfs = None;
    for n in ["initramfs.img", "initramfs"] {
        if let Some(fd) = open_in_tree(root, &at(n), OFlags::RDONLY)? {
            hash_file(&mut h, fd, &at(n))?;
            initramfs = Some(BootFile {
                src: n.to_string(),
                dest: format!("initramfs-{kver}.img"),
            });
            break;
        }
    }
    let devicetree = if let Some(fd) = open_in_tree(root, &at("devicetree"), OFlags::RDONLY)? {
        hash_file(&mut h, fd, &at("devicetree"))?;
        Some(Devicetree::File(BootFile {
            src: "devicetree".to_string(),
            dest: format!("devicetree-{kver}"),
        }))
    } else if type_in_tree(root, &at("dtb"))? == Some(FileType::Directory) {
        let d = open_in_tree(root, &at("dtb"), OFlags::RDONLY | OFlags::DIRECTORY)?
            .ok_or_else(|| anyhow!("{dir}/dtb vanished"))?;
        hash_tree(&mut h, root, &d, &at("dtb"))?;
        Some(Devicetree::Dir("dtb".to_string()))
    } else {
        None
    };
    let present = |n: &str| Ok::<_, anyhow::Error>(type_in_tree(root, &at(n))?.is_some());
    let hmac = present(".vmlinuz.hmac")?.then(|| BootFile {
        src: ".vmlinuz.hmac".to_string(),
        dest: format!(".vmlinuz-{kver}.hmac"),
    });
    let aboot = present("aboot.img")?.then(|| BootFile {
        src: "aboot.img".to_string(),
        dest: format!("aboot-{kver}.img"),
    });
    Ok(KernelLayout {
        kernel: BootFile {
            src: "vmlinuz".to_string(),
            dest: format!("vmlinuz-{kver}"),
        },
        dir,
        initramfs,
        devicetree,
        hmac,
        aboot,
        bootcsum: h.finish().to_hex(),
    })
}

/// The `usr/lib/modules` layout, if any (see the module documentation for
/// the choice among several kernels).
fn find_modules_layout(root: &OwnedFd, expected: Option<&str>) -> Result<Option<KernelLayout>> {
    let Some(modules) = open_in_tree(
        root,
        Path::new("usr/lib/modules"),
        OFlags::RDONLY | OFlags::DIRECTORY,
    )?
    else {
        return Ok(None);
    };
    let mut kvers = Vec::new();
    for name in dir_names(&modules)? {
        if lstat_type(&modules, &name)? != FileType::Directory {
            continue;
        }
        let vmlinuz = Path::new("usr/lib/modules").join(&name).join("vmlinuz");
        if type_in_tree(root, &vmlinuz)? == Some(FileType::RegularFile) {
            kvers.push(utf8(&name, "Kernel version")?);
        }
    }
    kvers.sort();
    if kvers.len() <= 1 {
        return kvers.first().map(|k| modules_layout(root, k)).transpose();
    }
    let listed = kvers.join(", ");
    let Some(want) = expected else {
        bail!(
            "Several kernels in usr/lib/modules ({listed}): ostree would take the first \
             in directory order, which arbor cannot reproduce; keep one vmlinuz"
        );
    };
    let mut matching = Vec::new();
    for k in &kvers {
        let l = modules_layout(root, k)?;
        if l.bootcsum == want {
            matching.push(l);
        }
    }
    if matching.len() != 1 {
        bail!(
            "Several kernels in usr/lib/modules ({listed}), and {} of them with the \
             deployment's boot checksum {want}",
            matching.len()
        );
    }
    Ok(matching.pop())
}

/// ostree's check of a checksum string: 64 lowercase hex digits.
fn is_csum(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A legacy file name `PREFIX…-CSUM`.
#[derive(Debug)]
struct Legacy {
    name: String,
    namever: String,
    csum: String,
}

/// Picks one of several legacy candidates: the only one, or the only one
/// with checksum `want`.
fn pick(dir: &str, kind: &str, mut c: Vec<Legacy>, want: Option<&str>) -> Result<Option<Legacy>> {
    if c.len() <= 1 {
        return Ok(c.pop());
    }
    let mut names: Vec<&str> = c.iter().map(|l| l.name.as_str()).collect();
    names.sort();
    let names = names.join(", ");
    let Some(want) = want else {
        bail!(
            "Several {kind} files in {dir} ({names}): ostree would take the first in \
             directory order, which arbor cannot reproduce"
        );
    };
    let n = c.iter().filter(|l| l.csum == want).count();
    if n != 1 {
        bail!("Several {kind} files in {dir} ({names}), {n} of them with checksum {want}");
    }
    Ok(c.into_iter().find(|l| l.csum == want))
}

/// The legacy layout, if any.
fn find_legacy_layout(root: &OwnedFd, expected: Option<&str>) -> Result<Option<KernelLayout>> {
    let mut found = None;
    for p in ["usr/lib/ostree-boot", "boot"] {
        if let Some(fd) = open_in_tree(root, Path::new(p), OFlags::RDONLY | OFlags::DIRECTORY)? {
            found = Some((p, fd));
            break;
        }
    }
    let Some((dir, fd)) = found else {
        return Ok(None);
    };
    let (mut kernels, mut initramfs, mut dts) = (Vec::new(), Vec::new(), Vec::new());
    for name in dir_names(&fd)? {
        let bytes = name.as_bytes();
        let list = if bytes.starts_with(b"vmlinuz-") {
            &mut kernels
        } else if bytes.starts_with(b"initramfs-") {
            &mut initramfs
        } else if bytes.starts_with(b"devicetree-") {
            &mut dts
        } else {
            continue;
        };
        let dash = bytes.iter().rposition(|&b| b == b'-').unwrap_or(0);
        if !std::str::from_utf8(&bytes[dash + 1..]).is_ok_and(is_csum) {
            continue;
        }
        let name = utf8(&name, "Boot file name")?;
        list.push(Legacy {
            namever: name[..dash].to_string(),
            csum: name[dash + 1..].to_string(),
            name,
        });
    }
    let Some(kernel) = pick(dir, "vmlinuz-*-CSUM", kernels, expected)? else {
        return Ok(None);
    };
    let initramfs = pick(dir, "initramfs-*-CSUM", initramfs, Some(&kernel.csum))?;
    let devicetree = pick(dir, "devicetree-*-CSUM", dts, Some(&kernel.csum))?;
    if initramfs.as_ref().is_some_and(|i| i.csum != kernel.csum) {
        bail!("Mismatched kernel checksum vs initrd in {dir}");
    }
    if devicetree.as_ref().is_some_and(|d| d.csum != kernel.csum) {
        bail!("Mismatched kernel checksum vs device tree in {dir}");
    }
    let file = |l: Legacy| BootFile {
        src: l.name,
        dest: l.namever,
    };
    Ok(Some(KernelLayout {
        dir: dir.to_string(),
        bootcsum: kernel.csum.clone(),
        kernel: file(kernel),
        initramfs: initramfs.map(file),
        devicetree: devicetree.map(|d| Devicetree::File(file(d))),
        hmac: None,
        aboot: None,
    }))
}

fn find(deployment: &OwnedFd, expected: Option<&str>) -> Result<KernelLayout> {
    let modules = find_modules_layout(deployment, expected)?;
    let legacy = find_legacy_layout(deployment, expected)?;
    // ostree's precedence: the legacy layout only when the module one has
    // no initramfs and it has one (rpm-ostree's Fedora layout), or alone.
    Ok(match (modules, legacy) {
        (None, None) => {
            bail!("Failed to find kernel in /usr/lib/modules, /usr/lib/ostree-boot or /boot")
        }
        (Some(m), Some(l)) if m.initramfs.is_none() && l.initramfs.is_some() => l,
        (Some(m), _) => m,
        (None, Some(l)) => l,
    })
}

/// Finds the boot files of a new deployment; several candidate kernels
/// are an error (see the module documentation).
pub fn find_kernel(deployment: &OwnedFd) -> Result<KernelLayout> {
    find(deployment, None)
}

/// Finds the boot files of an existing deployment whose boot checksum is
/// `bootcsum`: among several candidate kernels, the one with that checksum.
pub fn find_kernel_for(deployment: &OwnedFd, bootcsum: &str) -> Result<KernelLayout> {
    find(deployment, Some(bootcsum))
}

mod install;
pub use install::install;

#[cfg(test)]
mod tests;
