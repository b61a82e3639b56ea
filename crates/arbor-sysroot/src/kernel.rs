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
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::fsutil;

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
fn open_in_tree(root: &OwnedFd, path: &Path, flags: OFlags) -> Result<Option<OwnedFd>> {
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
fn hash_tree(
    h: &mut arbor_format::Sha256,
    root: &OwnedFd,
    dir: &OwnedFd,
    path: &Path,
) -> Result<()> {
    let mut names = dir_names(dir)?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let p = path.join(&name);
        match lstat_type(dir, &name)? {
            FileType::Directory => {
                let sub = open_child(dir, &name, OFlags::DIRECTORY)?;
                hash_tree(h, root, &sub, &p)?;
            }
            // As ostree, which opens and reads whatever it finds (a link
            // to a directory fails at the read).
            _ => {
                if let Some(fd) = open_in_tree(root, &p, OFlags::RDONLY)? {
                    hash_fd(h, fd, &p)?;
                }
            }
        }
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

/// Creates `name` in `dir` with `src`'s content, owner and mode (and, with
/// `times`, its access and modification times), synced.
fn copy_regular(src: OwnedFd, dir: &OwnedFd, name: &OsStr, times: bool) -> Result<()> {
    let mut s = File::from(src);
    let md = s.metadata()?;
    if !md.file_type().is_file() {
        bail!("Not a regular file");
    }
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .with_context(|| format!("Creating {}", name.to_string_lossy()))?;
    let mut d = File::from(fd);
    std::io::copy(&mut s, &mut d)?;
    rustix::fs::fchown(
        &d,
        Some(rustix::fs::Uid::from_raw(md.uid())),
        Some(rustix::fs::Gid::from_raw(md.gid())),
    )?;
    rustix::fs::fchmod(&d, Mode::from_raw_mode(md.mode() & 0o7777))?;
    if times {
        let ts = |sec: i64, nsec: i64| rustix::fs::Timespec {
            tv_sec: sec,
            tv_nsec: nsec as _,
        };
        rustix::fs::futimens(
            &d,
            &rustix::fs::Timestamps {
                last_access: ts(md.atime(), md.atime_nsec()),
                last_modification: ts(md.mtime(), md.mtime_nsec()),
            },
        )?;
    }
    d.sync_all()?;
    Ok(())
}

fn exists(dir: &OwnedFd, name: &str) -> Result<bool> {
    Ok(fsutil::file_type(dir, name)?.is_some())
}

/// Installs one file as `dest/f.dest` unless present: hardlinked when the
/// source is a regular file on the same file system (its data is a synced
/// repository object), else copied and synced, under a temporary name, then
/// renamed. A symlinked source is copied from its target inside the tree
/// (ostree would hardlink the symlink itself, a dangling link in /boot).
fn install_file(
    root: &OwnedFd,
    layout: &KernelLayout,
    src_dir: &OwnedFd,
    f: &BootFile,
    dest: &OwnedFd,
) -> Result<()> {
    if exists(dest, &f.dest)? {
        return Ok(());
    }
    let tmp = format!(".{}.tmp", f.dest);
    match rustix::fs::unlinkat(dest, tmp.as_str(), AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(e) => return Err(e).with_context(|| format!("Removing {tmp}")),
    }
    let regular = fsutil::file_type(src_dir, &f.src)? == Some(FileType::RegularFile);
    let linked = regular
        && match rustix::fs::linkat(
            src_dir,
            f.src.as_str(),
            dest,
            tmp.as_str(),
            AtFlags::empty(),
        ) {
            Ok(()) => true,
            Err(Errno::XDEV) | Err(Errno::MLINK) | Err(Errno::PERM) => false,
            Err(e) => return Err(e).with_context(|| format!("Linking {}", f.dest)),
        };
    if !linked {
        let path = Path::new(&layout.dir).join(&f.src);
        let src = open_in_tree(root, &path, OFlags::RDONLY)?
            .ok_or_else(|| anyhow!("{} does not exist", path.display()))?;
        copy_regular(src, dest, OsStr::new(&tmp), false)
            .with_context(|| format!("Copying {} to {}", path.display(), f.dest))?;
    }
    rustix::fs::renameat(dest, tmp.as_str(), dest, f.dest.as_str())
        .with_context(|| format!("Renaming {tmp}"))?;
    Ok(())
}

/// ostree's `copy_dir_recurse` into a new directory `name` of `dest`:
/// directories with their owner and mode, regular files copied with owner,
/// mode and times, symlinks recreated as they are (never followed); other
/// types skipped. Everything is synced.
fn copy_tree(src: &OwnedFd, dest_parent: &OwnedFd, name: &OsStr) -> Result<()> {
    let shown = name.to_string_lossy();
    rustix::fs::mkdirat(dest_parent, name, Mode::from_raw_mode(0o700))
        .with_context(|| format!("Creating {shown}"))?;
    let dest = open_child(dest_parent, name, OFlags::DIRECTORY)?;
    for n in dir_names(src)? {
        let shown = n.to_string_lossy();
        let st = rustix::fs::statat(src, &n, AtFlags::SYMLINK_NOFOLLOW)?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                let sub = open_child(src, &n, OFlags::DIRECTORY)?;
                copy_tree(&sub, &dest, &n).with_context(|| format!("In {shown}"))?;
            }
            FileType::RegularFile => {
                let fd = open_child(src, &n, OFlags::empty())?;
                copy_regular(fd, &dest, &n, true).with_context(|| format!("Copying {shown}"))?;
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(src, &n, Vec::new())?;
                rustix::fs::symlinkat(target.as_c_str(), &dest, &n)
                    .with_context(|| format!("Creating symlink {shown}"))?;
                rustix::fs::chownat(
                    &dest,
                    &n,
                    Some(rustix::fs::Uid::from_raw(st.st_uid)),
                    Some(rustix::fs::Gid::from_raw(st.st_gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )?;
            }
            _ => tracing::warn!("Not installing {shown}: not a file, directory or symlink"),
        }
    }
    let st = rustix::fs::fstat(src)?;
    rustix::fs::fchown(
        &dest,
        Some(rustix::fs::Uid::from_raw(st.st_uid)),
        Some(rustix::fs::Gid::from_raw(st.st_gid)),
    )?;
    rustix::fs::fchmod(&dest, Mode::from_raw_mode(st.st_mode & 0o7777))?;
    fsutil::fsync_dir(&dest)?;
    Ok(())
}

/// Installs the boot files into `ostree/STATEROOT-BOOTCSUM/` of `boot`,
/// each unless present, so that a present name always has complete
/// content, even after a power loss: single files are hardlinked or copied
/// and synced under a temporary name, then renamed; a `dtb` directory is
/// copied whole under `.dtb.tmp`, synced, then renamed. (ostree copies
/// `dtb` over itself in place on every deployment; its content is covered
/// by the boot checksum, so an existing complete copy is the same.) The
/// directory entries are made durable by the sync before the boot swap.
pub fn install(
    layout: &KernelLayout,
    deployment: &OwnedFd,
    boot: &OwnedFd,
    stateroot: &str,
) -> Result<()> {
    let dest_name = format!("ostree/{stateroot}-{}", layout.bootcsum);
    let dest = fsutil::ensure_dir_path(boot, &dest_name, 0o755)?;
    let src = open_in_tree(
        deployment,
        Path::new(&layout.dir),
        OFlags::RDONLY | OFlags::DIRECTORY,
    )?
    .ok_or_else(|| anyhow!("{} vanished", layout.dir))?;
    for f in layout.files() {
        install_file(deployment, layout, &src, f, &dest)
            .with_context(|| format!("Installing {} into /boot/{dest_name}", f.dest))?;
    }
    if let Some(Devicetree::Dir(d)) = &layout.devicetree {
        if !exists(&dest, d)? {
            let tmp = format!(".{d}.tmp");
            fsutil::remove_all(&dest, &tmp)?;
            let path = PathBuf::from(&layout.dir).join(d);
            let from = open_in_tree(deployment, &path, OFlags::RDONLY | OFlags::DIRECTORY)?
                .ok_or_else(|| anyhow!("{} vanished", path.display()))?;
            copy_tree(&from, &dest, OsStr::new(&tmp))
                .with_context(|| format!("Installing {d}/ into /boot/{dest_name}"))?;
            rustix::fs::renameat(&dest, tmp.as_str(), &dest, d.as_str())
                .with_context(|| format!("Renaming {tmp}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    const KVER: &str = "6.1.0-test";

    fn root(t: &Path) -> OwnedFd {
        fsutil::open_dir(rustix::fs::CWD, &t.to_string_lossy()).unwrap()
    }

    fn put(p: &Path, content: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    /// SHA-256 of the files' concatenation, by coreutils (not this code).
    fn sha256sum(files: &[PathBuf]) -> String {
        let out = std::process::Command::new("sh")
            .args(["-c", "cat \"$@\" | sha256sum", "sh"])
            .args(files)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()[..64].to_string()
    }

    fn modules(t: &Path) -> PathBuf {
        t.join(format!("usr/lib/modules/{KVER}"))
    }

    #[test]
    fn bootcsum_is_the_specs_and_missing_kernels_are_errors() {
        let t = tempfile::tempdir().unwrap();
        let err = find_kernel(&root(t.path())).unwrap_err();
        assert!(
            format!("{err:#}").contains("Failed to find kernel in /usr/lib/modules"),
            "{err:#}"
        );
        let m = modules(t.path());
        std::fs::create_dir_all(&m).unwrap();
        assert!(find_kernel(&root(t.path())).is_err());
        put(&m.join("vmlinuz"), "FAKE KERNEL\n");
        put(&m.join("initramfs.img"), "FAKE INITRAMFS\n");
        let k = find_kernel(&root(t.path())).unwrap();
        // §8.4's example: sha256(vmlinuz || initramfs.img).
        assert_eq!(
            k.bootcsum,
            "166ace07e5846366508186963b5030d981163988f4dda918aa18bdfc9b5465f6"
        );
        assert_eq!(k.initramfs.unwrap().dest, format!("initramfs-{KVER}.img"));
        // A symlinked vmlinuz resolves inside the tree only: /etc/passwd of
        // the host is never a kernel.
        std::fs::remove_file(m.join("vmlinuz")).unwrap();
        symlink("/etc/passwd", m.join("vmlinuz")).unwrap();
        assert!(find_kernel(&root(t.path())).is_err());
        // ... while an in-tree link is followed, as ostree follows it.
        put(&t.path().join("boot/vmlinuz-real"), "LINKED KERNEL\n");
        std::fs::remove_file(m.join("vmlinuz")).unwrap();
        symlink("/boot/vmlinuz-real", m.join("vmlinuz")).unwrap();
        let k = find_kernel(&root(t.path())).unwrap();
        assert_eq!(
            k.bootcsum,
            sha256sum(&[t.path().join("boot/vmlinuz-real"), m.join("initramfs.img")])
        );
    }

    #[test]
    fn modules_layout_hashes_kernel_initramfs_devicetree_only() {
        let t = tempfile::tempdir().unwrap();
        let m = modules(t.path());
        put(&m.join("vmlinuz"), "K\n");
        put(&m.join("initramfs"), "I (no .img)\n");
        put(&m.join("devicetree"), "DT\n");
        put(&m.join(".vmlinuz.hmac"), "HMAC\n");
        put(&m.join("aboot.img"), "ABOOT\n");
        put(&m.join("aboot.cfg"), "ABOOTCFG\n");
        // A dtb/ directory is ignored when devicetree exists.
        put(&m.join("dtb/x.dtb"), "X\n");
        let k = find_kernel(&root(t.path())).unwrap();
        assert_eq!(
            k.bootcsum,
            sha256sum(&[m.join("vmlinuz"), m.join("initramfs"), m.join("devicetree")])
        );
        let names: Vec<(&str, &str)> = k
            .files()
            .into_iter()
            .map(|f| (f.src.as_str(), f.dest.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("vmlinuz", "vmlinuz-6.1.0-test"),
                ("initramfs", "initramfs-6.1.0-test.img"),
                ("devicetree", "devicetree-6.1.0-test"),
                (".vmlinuz.hmac", ".vmlinuz-6.1.0-test.hmac"),
                ("aboot.img", "aboot-6.1.0-test.img"),
            ]
        );
        // initramfs.img wins over initramfs.
        put(&m.join("initramfs.img"), "I.img\n");
        let k = find_kernel(&root(t.path())).unwrap();
        assert_eq!(k.initramfs.unwrap().src, "initramfs.img");
        assert_eq!(
            k.bootcsum,
            sha256sum(&[
                m.join("vmlinuz"),
                m.join("initramfs.img"),
                m.join("devicetree")
            ])
        );
        // Only vmlinuz: its hash alone.
        for f in ["initramfs", "initramfs.img", "devicetree"] {
            std::fs::remove_file(m.join(f)).unwrap();
        }
        std::fs::remove_dir_all(m.join("dtb")).unwrap();
        let k = find_kernel(&root(t.path())).unwrap();
        assert_eq!(k.bootcsum, sha256sum(&[m.join("vmlinuz")]));
        assert_eq!((k.initramfs, k.devicetree), (None, None));
    }

    /// A dtb/ tree with subdirectories, names that sort differently by
    /// byte and by locale, and symlinks (in-tree, absolute, dangling, and
    /// one escaping the tree).
    fn dtb_tree(t: &Path) -> Vec<PathBuf> {
        let m = modules(t);
        put(&m.join("vmlinuz"), "K\n");
        put(&m.join("initramfs.img"), "I\n");
        let d = m.join("dtb");
        put(&d.join("b.dtb"), "b\n");
        put(&d.join("B.dtb"), "B\n");
        put(&d.join("a/y.dtb"), "a/y\n");
        put(&d.join("a/x.dtb"), "a/x\n");
        put(&d.join("a-z.dtb"), "a-z\n");
        std::fs::set_permissions(d.join("a/x.dtb"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        symlink("a/x.dtb", d.join("c-rel")).unwrap();
        symlink(
            format!("/usr/lib/modules/{KVER}/dtb/b.dtb"),
            d.join("d-abs"),
        )
        .unwrap();
        symlink("nowhere", d.join("e-dangling")).unwrap();
        // Outside the tree: never read.
        put(&t.parent().unwrap().join("outside.dtb"), "HOST FILE\n");
        symlink("../../../../../../../../outside.dtb", d.join("f-escape")).unwrap();
        // strcmp order of names: B.dtb, a (x.dtb, y.dtb), a-z.dtb, b.dtb,
        // c-rel, d-abs, e-dangling (nothing), f-escape (nothing). A path
        // sort would put a-z.dtb before a/x.dtb.
        vec![
            m.join("vmlinuz"),
            m.join("initramfs.img"),
            d.join("B.dtb"),
            d.join("a/x.dtb"),
            d.join("a/y.dtb"),
            d.join("a-z.dtb"),
            d.join("b.dtb"),
            d.join("a/x.dtb"),
            d.join("b.dtb"),
        ]
    }

    #[test]
    fn dtb_directory_is_hashed_sorted_recursively_inside_the_tree() {
        let base = tempfile::tempdir().unwrap();
        let t = base.path().join("deploy");
        let expected = dtb_tree(&t);
        let k = find_kernel(&root(&t)).unwrap();
        assert_eq!(k.devicetree, Some(Devicetree::Dir("dtb".into())));
        assert_eq!(k.bootcsum, sha256sum(&expected));
        // A symlink to a directory inside dtb/ cannot be read: an error, as
        // in ostree (which fails reading it).
        symlink("a", modules(&t).join("dtb/g-dir")).unwrap();
        assert!(find_kernel(&root(&t)).is_err());
    }

    #[test]
    fn install_copies_everything_atomically_and_only_once() {
        let base = tempfile::tempdir().unwrap();
        let t = base.path().join("deploy");
        dtb_tree(&t);
        let m = modules(&t);
        put(&m.join(".vmlinuz.hmac"), "HMAC\n");
        // An in-tree symlink as initramfs: its target's content is installed.
        std::fs::rename(m.join("initramfs.img"), t.join("initrd-real")).unwrap();
        symlink("../../../../initrd-real", m.join("initramfs.img")).unwrap();
        let boot_dir = base.path().join("boot");
        std::fs::create_dir(&boot_dir).unwrap();
        let k = find_kernel(&root(&t)).unwrap();
        let dest = boot_dir.join(format!("ostree/os-{}", k.bootcsum));
        // Leftovers of an interrupted install are replaced.
        put(&dest.join(".dtb.tmp/stale"), "stale\n");
        put(&dest.join(format!(".vmlinuz-{KVER}.tmp")), "stale\n");
        install(&k, &root(&t), &root(&boot_dir), "os").unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&dest)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                ".vmlinuz-6.1.0-test.hmac",
                "dtb",
                "initramfs-6.1.0-test.img",
                "vmlinuz-6.1.0-test"
            ]
        );
        let read = |p: &str| std::fs::read_to_string(dest.join(p)).unwrap();
        assert_eq!(read("vmlinuz-6.1.0-test"), "K\n");
        assert_eq!(read("initramfs-6.1.0-test.img"), "I\n");
        assert!(
            !std::fs::symlink_metadata(dest.join("initramfs-6.1.0-test.img"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        // Same file system: the kernel is a hardlink of the tree's file.
        assert_eq!(
            std::fs::metadata(dest.join("vmlinuz-6.1.0-test"))
                .unwrap()
                .ino(),
            std::fs::metadata(m.join("vmlinuz")).unwrap().ino()
        );
        // dtb/: the same tree, symlinks as symlinks, modes kept.
        assert_eq!(read("dtb/a/x.dtb"), "a/x\n");
        assert_eq!(read("dtb/B.dtb"), "B\n");
        let md = std::fs::metadata(dest.join("dtb/a/x.dtb")).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o600);
        assert_eq!(
            md.mtime(),
            std::fs::metadata(m.join("dtb/a/x.dtb")).unwrap().mtime()
        );
        assert_eq!(
            std::fs::metadata(dest.join("dtb/a")).unwrap().mode() & 0o7777,
            std::fs::metadata(m.join("dtb/a")).unwrap().mode() & 0o7777
        );
        for (l, target) in [
            ("c-rel", "a/x.dtb".to_string()),
            ("d-abs", format!("/usr/lib/modules/{KVER}/dtb/b.dtb")),
            ("e-dangling", "nowhere".to_string()),
        ] {
            assert_eq!(
                std::fs::read_link(dest.join("dtb").join(l)).unwrap(),
                PathBuf::from(target)
            );
        }
        assert!(!dest.join("dtb/stale").exists());
        // Present names are never rewritten.
        std::fs::write(dest.join("dtb/B.dtb"), "kept\n").unwrap();
        install(&k, &root(&t), &root(&boot_dir), "os").unwrap();
        assert_eq!(read("dtb/B.dtb"), "kept\n");
    }

    #[test]
    fn legacy_layouts_take_the_checksum_from_the_names() {
        let t = tempfile::tempdir().unwrap();
        let c = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let other = "f".repeat(64);
        let b = t.path().join("boot");
        put(&b.join(format!("vmlinuz-5.10-{c}")), "K\n");
        put(&b.join(format!("initramfs-5.10.img-{c}")), "I\n");
        // Not checksums: ignored.
        put(&b.join("vmlinuz-5.10"), "plain\n");
        put(&b.join(format!("vmlinuz-{}", c.to_uppercase())), "upper\n");
        put(&b.join(format!("vmlinuz-{}", &c[1..])), "short\n");
        let k = find_kernel(&root(t.path())).unwrap();
        assert_eq!(k.bootcsum, c);
        assert_eq!(k.dir, "boot");
        assert_eq!(k.kernel.dest, "vmlinuz-5.10");
        assert_eq!(k.initramfs.as_ref().unwrap().dest, "initramfs-5.10.img");
        assert_eq!(k.devicetree, None);
        // usr/lib/ostree-boot, when it exists, is the only one looked at.
        let u = t.path().join("usr/lib/ostree-boot");
        put(&u.join(format!("vmlinuz-{other}")), "K2\n");
        put(&u.join(format!("devicetree-imx-{other}")), "DT\n");
        let k = find_kernel(&root(t.path())).unwrap();
        assert_eq!(
            (k.dir.as_str(), k.bootcsum.as_str()),
            ("usr/lib/ostree-boot", other.as_str())
        );
        assert_eq!(k.kernel.dest, "vmlinuz");
        assert_eq!(
            k.devicetree,
            Some(Devicetree::File(BootFile {
                src: format!("devicetree-imx-{other}"),
                dest: "devicetree-imx".into()
            }))
        );
        assert_eq!(k.initramfs, None);
        // Checksums must agree.
        put(&u.join(format!("initramfs-{c}")), "I\n");
        let err = find_kernel(&root(t.path())).unwrap_err();
        assert!(format!("{err:#}").contains("Mismatched kernel checksum vs initrd"));
        // An empty usr/lib/ostree-boot hides boot/.
        std::fs::remove_dir_all(&u).unwrap();
        std::fs::create_dir(&u).unwrap();
        assert!(find_kernel(&root(t.path())).is_err());
    }

    #[test]
    fn module_layout_wins_unless_only_legacy_has_an_initramfs() {
        let t = tempfile::tempdir().unwrap();
        let c = "a".repeat(64);
        let m = modules(t.path());
        put(&m.join("vmlinuz"), "K\n");
        let u = t.path().join("usr/lib/ostree-boot");
        put(&u.join(format!("vmlinuz-{KVER}-{c}")), "K\n");
        // Neither has an initramfs: modules.
        assert_eq!(find_kernel(&root(t.path())).unwrap().dir, m_rel());
        // Only legacy has one: legacy (rpm-ostree's Fedora layout).
        put(&u.join(format!("initramfs-{KVER}.img-{c}")), "I\n");
        let k = find_kernel(&root(t.path())).unwrap();
        assert_eq!(
            (k.dir.as_str(), k.bootcsum.as_str()),
            ("usr/lib/ostree-boot", c.as_str())
        );
        // Both have one: modules.
        put(&m.join("initramfs.img"), "I\n");
        assert_eq!(find_kernel(&root(t.path())).unwrap().dir, m_rel());
    }

    fn m_rel() -> String {
        format!("usr/lib/modules/{KVER}")
    }

    #[test]
    fn several_kernels_are_refused_unless_the_bootcsum_decides() {
        let t = tempfile::tempdir().unwrap();
        let m = t.path().join("usr/lib/modules");
        put(&m.join("6.1/vmlinuz"), "K61\n");
        put(&m.join("6.2/vmlinuz"), "K62\n");
        // Directories without vmlinuz, symlinks and files do not count.
        put(&m.join("6.3-extra/modules.dep"), "\n");
        symlink("6.1", m.join("latest")).unwrap();
        put(&m.join("README"), "\n");
        let err = find_kernel(&root(t.path())).unwrap_err();
        assert!(
            format!("{err:#}").contains("Several kernels in usr/lib/modules (6.1, 6.2)"),
            "{err:#}"
        );
        let want = sha256sum(&[m.join("6.2/vmlinuz")]);
        let k = find_kernel_for(&root(t.path()), &want).unwrap();
        assert_eq!((k.kernel.dest.as_str(), k.bootcsum), ("vmlinuz-6.2", want));
        assert!(find_kernel_for(&root(t.path()), &"0".repeat(64)).is_err());
        // Legacy: the same rule; the initramfs is the one with the kernel's
        // checksum.
        std::fs::remove_dir_all(&m).unwrap();
        let (c1, c2) = ("1".repeat(64), "2".repeat(64));
        let b = t.path().join("boot");
        for c in [&c1, &c2] {
            put(&b.join(format!("vmlinuz-{c}")), "K\n");
            put(&b.join(format!("initramfs-{c}")), "I\n");
        }
        let err = find_kernel(&root(t.path())).unwrap_err();
        assert!(format!("{err:#}").contains("Several vmlinuz"), "{err:#}");
        let k = find_kernel_for(&root(t.path()), &c2).unwrap();
        assert_eq!(k.bootcsum, c2);
        assert_eq!(k.initramfs.unwrap().src, format!("initramfs-{c2}"));
    }
}
