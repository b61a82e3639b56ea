//! arbor-boot: the boot-time root setup, `arbor-prepare-root`.
//!
//! Run in the initramfs once the physical root filesystem is mounted (at
//! `/root` by initramfs-tools, `$rootmnt`), it does what ostree's
//! `ostree-prepare-root` does (`src/switchroot/ostree-prepare-root.c`, no
//! composefs): reads `ostree=` from the kernel command line, resolves that
//! boot link to the deployment `ostree/deploy/STATEROOT/deploy/CSUM.SERIAL`,
//! and turns the mount point into the deployment:
//!
//! ```text
//! SYSROOT            the deployment (bind mount), writable
//! SYSROOT/usr        read-only bind mount
//! SYSROOT/etc        writable (its own bind mount when sysroot.readonly)
//! SYSROOT/var        ostree/deploy/STATEROOT/var, writable
//! SYSROOT/sysroot    the physical root; read-only when sysroot.readonly
//! /run/ostree-booted a{sv}: backing-root-device-inode, sysroot-ro, ...
//! ```
//!
//! `sysroot.readonly` comes from `[sysroot] readonly` of the deployment's
//! `usr/lib/ostree/prepare-root.conf` then `etc/ostree/prepare-root.conf`
//! (ostree's file and key), else the repository config's legacy
//! `[sysroot] readonly`; unlike ostree, the default is **true** (as on
//! Fedora CoreOS): arbor makes `/sysroot` writable only inside the private
//! mount namespace of a command that writes (`arbor_sysroot::writable`).
//!
//! Modules: [`resolve`] (`ostree=` and the boot links, usable on a plain
//! directory), [`mountinfo`] (`/proc/self/mountinfo`), [`state`] (`prepare-root.conf`, the `/run/ostree-booted`
//! dictionary). [`prepare_root`] does the mounts.
//!
//! The binary `arbor-prepare-root SYSROOT [KERNEL_CMDLINE]` calls
//! [`prepare_root`]; it depends on nothing but `anyhow` and `rustix`, so it
//! links statically for initramfs images that carry no libc:
//!
//! ```text
//! cargo rustc --release -p arbor-boot --bin arbor-prepare-root -- -C target-feature=+crt-static
//! ```

pub mod mountinfo;
pub mod resolve;
pub mod state;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};

pub use resolve::{find_karg, resolve_deployment, ResolvedDeployment, OSTREE_KARG};
use state::BootedValue;

/// Where `/run/ostree-booted` and friends are written: `/run`.
pub const RUN_DIR: &str = "/run";

/// The inputs of [`prepare_root`].
#[derive(Debug, Clone)]
pub struct PrepareRoot {
    /// The mount point of the physical root (initramfs-tools' `/root`);
    /// it must be a mount point.
    pub sysroot: PathBuf,
    /// The kernel command line (`/proc/cmdline`'s content).
    pub cmdline: String,
    /// `/run` (where `ostree-booted` goes; initramfs-tools moves the
    /// initramfs's `/run` into the new root).
    pub run_dir: PathBuf,
}

/// What [`prepare_root`] set up.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The deployment, relative to the physical root.
    pub deployment: PathBuf,
    /// Its stateroot.
    pub stateroot: String,
    /// Its commit.
    pub csum: String,
    /// Its serial.
    pub serial: u32,
    /// Whether `/sysroot` was left read-only.
    pub readonly: bool,
}

/// The prepare-root configuration file, relative to `usr/lib` and `etc`.
const CONFIG: &str = "ostree/prepare-root.conf";
/// Tells ostree's systemd generator that `/var` is already mounted.
const MOUNT_VAR_STAMP: &str = "ostree/initramfs-mount-var";
/// ostree ≤ 2022's `ostree-remount` reads this when /sysroot is read-only.
const READONLY_STAMP: &str = "ostree-sysroot-ro.stamp";
/// The temporary mount point of the new root, under the run directory.
const TMP_ROOT: &str = "ostree/.private/arbor-root.tmp";

/// Sets up the deployment named by `ostree=` as the new root at
/// `p.sysroot`, in ostree-prepare-root's order: the deployment bound on a
/// temporary mount point, `/etc` (when read-only) and `/usr` (read-only)
/// bound on themselves, the physical root bound on `sysroot/` and
/// detached from its old place, the stateroot's `/var` bound on `var/`,
/// `/run/ostree-booted` written, the new root moved onto `p.sysroot`, and
/// last `/sysroot` remounted read-only when configured. Each error names
/// the step and path; a failure leaves the mounts half done (the
/// initramfs then drops to its emergency shell, as with ostree).
pub fn prepare_root(p: &PrepareRoot) -> Result<Prepared> {
    let Some(karg) = find_karg(&p.cmdline, OSTREE_KARG) else {
        bail!("No ostree= argument on the kernel command line: nothing to boot");
    };
    let sysroot = std::fs::canonicalize(&p.sysroot)
        .with_context(|| format!("Resolving the sysroot {}", p.sysroot.display()))?;
    let d = {
        let fd = std::fs::File::open(&sysroot)
            .with_context(|| format!("Opening the sysroot {}", sysroot.display()))?;
        resolve_deployment(&fd, karg)?
    };
    let deploy = sysroot.join(&d.relpath);
    // The stateroot's /var is mounted by path: it must be a directory of
    // the sysroot, not a symlink (which the mount would follow from the
    // initramfs's root).
    {
        let fd = std::fs::File::open(&sysroot)
            .with_context(|| format!("Opening the sysroot {}", sysroot.display()))?;
        resolve::require_real_dir(&fd, &d.var_relpath())?;
    }
    let readonly = readonly_configured(&sysroot, &deploy)?;
    require_mount_point(&sysroot)?;
    // initramfs-tools mounts the root read-only unless `rw` is on the
    // command line, and nothing remounts it later (the OS's fstab has no
    // line for it; ostree has ostree-remount for that): remount the
    // filesystem writable here, so that /etc and /var are. /sysroot is
    // made read-only again below (per mount) when configured.
    if is_readonly(&sysroot)? {
        rustix::mount::mount_remount(&sysroot, MountFlags::empty(), "").with_context(|| {
            format!(
                "Remounting the physical root {} writable (it is mounted read-only)",
                sysroot.display()
            )
        })?;
    }
    for dir in ["sysroot", "usr", "etc", "var"] {
        require_dir(&deploy.join(dir))?;
    }
    let devino = std::fs::metadata(&deploy)
        .map(|m| (m.dev(), m.ino()))
        .with_context(|| format!("Inspecting {}", deploy.display()))?;

    // Moving mounts needs private (not shared) parents.
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .context("Making / a private mount")?;
    let tmp = p.run_dir.join(TMP_ROOT);
    std::fs::create_dir_all(&tmp).with_context(|| format!("Creating {}", tmp.display()))?;
    bind(&deploy, &tmp)?;
    if readonly {
        bind(&tmp.join("etc"), &tmp.join("etc"))?;
        remount(&tmp.join("etc"), false)?;
    }
    bind(&tmp.join("usr"), &tmp.join("usr"))?;
    remount(&tmp.join("usr"), true)?;
    // A bind of the physical root, then the original detached: a move
    // would put the physical root under a mount of itself (a cycle).
    bind(&sysroot, &tmp.join("sysroot"))?;
    rustix::mount::unmount(&sysroot, UnmountFlags::DETACH)
        .with_context(|| format!("Detaching {}", sysroot.display()))?;
    let phys = tmp.join("sysroot");
    bind_boot(&phys, &tmp)?;
    let var = phys.join(d.var_relpath());
    if readonly {
        bind(&var, &var)?;
        remount(&var, false)?;
    }
    bind(&var, &tmp.join("var"))?;
    for f in [
        MountPropagationFlags::DOWNSTREAM,
        MountPropagationFlags::SHARED,
    ] {
        rustix::mount::mount_change(tmp.join("var"), f)
            .with_context(|| format!("Changing the propagation of {}/var", tmp.display()))?;
    }
    write_run_state(&p.run_dir, devino, readonly)?;
    rustix::mount::mount_move(&tmp, &sysroot)
        .with_context(|| format!("Moving {} to {}", tmp.display(), sysroot.display()))?;
    std::fs::remove_dir(&tmp).with_context(|| format!("Removing {}", tmp.display()))?;
    if readonly {
        remount(&sysroot.join("sysroot"), true)?;
    }
    Ok(Prepared {
        deployment: d.relpath,
        stateroot: d.stateroot,
        csum: d.csum,
        serial: d.serial,
        readonly,
    })
}

/// `sysroot.readonly`: the deployment's `usr/lib` then `etc`
/// `ostree/prepare-root.conf` (a later file overrides), else the repository
/// config's legacy `[sysroot] readonly` when that says true, else true.
/// Symlinks in the deployment resolve inside it (and in the repository
/// config's path inside the sysroot), never in the initramfs.
fn readonly_configured(sysroot: &Path, deploy: &Path) -> Result<bool> {
    let mut value = None;
    for base in ["usr/lib", "etc"] {
        let rel = format!("{base}/{CONFIG}");
        let Some(text) = read_in_root(deploy, &rel)? else {
            continue;
        };
        if let Some(v) = state::sysroot_readonly(&text)
            .map_err(|e| anyhow::anyhow!("{}/{rel}: {e}", deploy.display()))?
        {
            value = Some(v);
        }
    }
    if value != Some(false) {
        return Ok(true);
    }
    Ok(read_in_root(sysroot, "ostree/repo/config")?
        .and_then(|t| state::sysroot_readonly(&t).ok().flatten())
        .unwrap_or(false))
}

/// The text of `rel` under the directory `root`, resolved as if `root`
/// were `/` (openat2 `RESOLVE_IN_ROOT`: an absolute symlink or a `..`
/// stays inside `root`); `None` if it does not exist.
fn read_in_root(root: &Path, rel: &str) -> Result<Option<String>> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let path = root.join(rel);
    let dir = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("Opening {}", root.display()))?;
    let fd = match rustix::fs::openat2(
        &dir,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("Opening {}", path.display())),
    };
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut text)
        .with_context(|| format!("Reading {}", path.display()))?;
    Ok(Some(text))
}

/// Whether `path` is on a read-only mount or filesystem.
fn is_readonly(path: &Path) -> Result<bool> {
    let st = rustix::fs::statvfs(path).with_context(|| format!("Inspecting {}", path.display()))?;
    Ok(st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
}

/// The physical root must be a mount point: it is detached once bound
/// under the new root.
fn require_mount_point(path: &Path) -> Result<()> {
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").context("Reading /proc/self/mountinfo")?;
    if !mountinfo::parse(&info).any(|m| Path::new(&m.mount_point) == path) {
        bail!("{} is not a mount point", path.display());
    }
    Ok(())
}

/// The deployment needs these directories as mount points; `sysroot/`
/// comes from the OS tree (ostree's convention, as `ostree -> sysroot/ostree`).
fn require_dir(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => bail!(
            "{} is not a directory (needed as a mount point)",
            path.display()
        ),
        Err(e) => Err(e).with_context(|| {
            format!(
                "The deployment has no {} (the OS tree must provide it, as for ostree)",
                path.display()
            )
        }),
    }
}

fn bind(src: &Path, dst: &Path) -> Result<()> {
    rustix::mount::mount_bind(src, dst)
        .with_context(|| format!("Bind-mounting {} on {}", src.display(), dst.display()))
}

/// Remounts the bind mount `path` read-only or writable (per mount point,
/// the filesystem is untouched).
fn remount(path: &Path, rdonly: bool) -> Result<()> {
    let mut flags = MountFlags::BIND;
    if rdonly {
        flags |= MountFlags::RDONLY;
    }
    let how = if rdonly { "read-only" } else { "writable" };
    rustix::mount::mount_remount(path, flags, "")
        .with_context(|| format!("Remounting {} {how}", path.display()))
}

/// As ostree ≤ 2022: when `/boot` is on the physical root (its
/// `boot/loader` is a symlink there), bind it on the deployment's `boot/`.
/// A separate boot partition is mounted later by fstab. Both `boot`
/// directories must be real directories (lstat, as ostree): a symlink
/// would be followed from the initramfs's root by the mount.
fn bind_boot(phys: &Path, root: &Path) -> Result<()> {
    let is_dir = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    let loader = phys.join("boot/loader");
    let on_root = is_dir(&phys.join("boot"))
        && std::fs::symlink_metadata(&loader).is_ok_and(|m| m.file_type().is_symlink());
    if on_root && is_dir(&root.join("boot")) {
        bind(&phys.join("boot"), &root.join("boot"))?;
    }
    Ok(())
}

/// `/run/ostree-booted` (as ostree 2023+: the deployment's (dev, ino),
/// no transient root, `sysroot-ro`), `/run/ostree/initramfs-mount-var`
/// (we mounted `/var`) and, when read-only, the older stamp.
fn write_run_state(run: &Path, devino: (u64, u64), readonly: bool) -> Result<()> {
    let data = state::encode_vardict(&[
        (
            "backing-root-device-inode",
            BootedValue::DevIno(devino.0, devino.1),
        ),
        ("root.transient", BootedValue::Bool(false)),
        ("root.transient-ro", BootedValue::Bool(false)),
        ("sysroot-ro", BootedValue::Bool(readonly)),
    ]);
    let write = |name: &str, data: &[u8]| {
        let path = run.join(name);
        let tmp = run.join(format!("{name}.tmp"));
        std::fs::write(&tmp, data)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .with_context(|| format!("Writing {}", path.display()))
    };
    write(MOUNT_VAR_STAMP, b"")?;
    if readonly {
        write(READONLY_STAMP, b"")?;
    }
    write("ostree-booted", &data)
}
