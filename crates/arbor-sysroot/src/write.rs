//! Writing a new deployment list: the atomic boot switch.
//!
//! The new `loader.N` holds the BLS entries and the GRUB menu generated
//! from them ([`crate::grub`]).
//!
//! Crash guarantee: until the final `rename` of `boot/loader.tmp` over
//! `boot/loader` (or of `ostree/boot.B.tmp` over `ostree/boot.B` when only
//! the bootlinks change), the machine boots exactly the old list; after it,
//! exactly the new one. Everything the new list needs (deployment trees,
//! kernels, entries, bootlinks) is written and made durable with `syncfs`
//! before that rename; the rename is then synced too. Leftovers of an
//! interrupted write are not referenced by the active boot version and are
//! removed by [`cleanup`].

use std::collections::{BTreeSet, HashMap};
use std::os::fd::OwnedFd;

use anyhow::{bail, Context, Result};
use arbor_format::RefName;
use arbor_fs::failpoint::{self, hit};
use arbor_repo::refs::{RefSpec, RefUpdate};
use fn_error_context::context;

use crate::bls::BootEntry;
use crate::deployment::{parse_dir_name, Deployment};
use crate::fsutil;
use crate::kernel;
use crate::sysroot::{Sysroot, SysrootLock};

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteReport {
    /// Whether the boot entries changed (a new boot version) or only the
    /// bootlinks (a new sub-boot version).
    pub bootswap: bool,
    /// The active `boot.B.S` afterwards.
    pub subbootdir: String,
}

/// Gives each deployment its serial among those sharing its boot checksum.
fn assign_bootserials(list: &mut [Deployment]) {
    let mut seen: HashMap<String, u32> = HashMap::new();
    for d in list {
        let n = seen.entry(d.bootcsum.clone()).or_insert(0);
        d.bootserial = *n;
        *n += 1;
    }
}

/// `syncfs` of the sysroot and of `/boot` (which may be another mount),
/// then, for a separate `/boot`, ostree's freeze/thaw cycle
/// ([`crate::freeze`]).
fn full_sync(s: &Sysroot, boot: &OwnedFd) -> Result<()> {
    // `ostree/` (through the `/ostree` symlink of a booted system) is on
    // the physical root filesystem, where deployments and the repository
    // live, even when `/` is a composefs or overlay mount.
    let ostree = s.ostree_dir()?;
    rustix::fs::syncfs(&ostree).context("Syncing the sysroot")?;
    rustix::fs::syncfs(boot).context("Syncing /boot")?;
    boot_freeze_thaw(s, boot)
}

/// ostree's freeze/thaw cycle of a separate `/boot` ([`crate::freeze`]).
pub(crate) fn boot_freeze_thaw(s: &Sysroot, boot: &OwnedFd) -> Result<()> {
    if crate::freeze::boot_is_separate(s.ostree_dir()?, boot)? {
        crate::freeze::freeze_thaw(&s.path().join("boot"))?;
    }
    Ok(())
}

/// Removes `loader.{version}/grub.cfg` (the inactive loader's menu) and
/// syncs its directory.
fn remove_inactive_menu(boot: &OwnedFd, version: u8) -> Result<()> {
    let Some(dir) = fsutil::open_dir_optional(boot, &format!("loader.{version}"))? else {
        return Ok(());
    };
    match rustix::fs::unlinkat(&dir, crate::grub::GRUB_CFG, rustix::fs::AtFlags::empty()) {
        Ok(()) => fsutil::fsync_dir(&dir),
        Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("Removing boot/loader.{version}/grub.cfg")),
    }
}

/// `PRETTY_NAME` (else `ID`) of the deployment's os-release, as ostree
/// reads it: `usr/lib/os-release` if it exists, else `etc/os-release`; a
/// deployment with neither, or without both keys, is refused (ostree
/// refuses it too, so its boot entries could never be rewritten by
/// ostree). The file is often a symlink (`os.release.d/…`): it is
/// followed, as ostree follows it, but only inside the deployment.
pub(crate) fn os_name(deployment: &OwnedFd) -> Result<String> {
    use std::io::Read;
    let open = |p: &str| {
        kernel::open_in_tree(
            deployment,
            std::path::Path::new(p),
            rustix::fs::OFlags::RDONLY,
        )
    };
    let (p, fd) = match open("usr/lib/os-release")? {
        Some(fd) => ("/usr/lib/os-release", fd),
        None => (
            "/etc/os-release",
            open("etc/os-release")?.context(
                "Reading /etc/os-release: the deployment has no /usr/lib/os-release or /etc/os-release",
            )?,
        ),
    };
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .read_to_end(&mut bytes)
        .with_context(|| format!("Reading {p}"))?;
    let text = String::from_utf8_lossy(&bytes);
    let mut id = None;
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = unquote(v.trim());
        match k.trim() {
            "PRETTY_NAME" => return Ok(v),
            "ID" => id = Some(v),
            _ => {}
        }
    }
    id.with_context(|| format!("No PRETTY_NAME or ID in {p}"))
}

/// Removes shell quoting as os-release values use it.
fn unquote(v: &str) -> String {
    let b = v.as_bytes();
    if b.len() >= 2 && (b[0] == b'"' || b[0] == b'\'') && b[b.len() - 1] == b[0] {
        let inner = &v[1..v.len() - 1];
        if b[0] == b'"' {
            let mut out = String::new();
            let mut esc = false;
            for c in inner.chars() {
                if esc {
                    out.push(c);
                    esc = false;
                } else if c == '\\' {
                    esc = true;
                } else {
                    out.push(c);
                }
            }
            return out;
        }
        return inner.to_string();
    }
    v.to_string()
}

/// The BLS entry of deployment `i` of `list` for boot version `bootversion`.
fn boot_entry(
    list: &[Deployment],
    i: usize,
    bootversion: u8,
    layout: &kernel::KernelLayout,
    root: &OwnedFd,
) -> Result<BootEntry> {
    let d = &list[i];
    let n = list.len();
    let show_stateroot = list.iter().any(|x| x.stateroot != list[0].stateroot);
    let mut title = os_name(root)?;
    if let Some(v) = &d.version {
        if !title.contains(v.as_str()) {
            title.push(' ');
            title.push_str(v);
        }
    }
    title.push_str(" (ostree");
    if show_stateroot {
        title.push(':');
        title.push_str(&d.stateroot);
    }
    title.push_str(&format!(":{i})"));
    let mut kargs = d.kargs.clone();
    let link = format!(
        "/ostree/boot.{bootversion}/{}/{}/{}",
        d.stateroot, d.bootcsum, d.bootserial
    );
    kargs.replace(&format!("ostree={link}"));
    if layout.initramfs.is_none() {
        // No initramfs: the kernel runs ostree-prepare-root itself (ostree).
        kargs.replace(&format!("init={link}/usr/lib/ostree/ostree-prepare-root"));
    }
    let prefix = format!("/ostree/{}-{}", d.stateroot, d.bootcsum);
    // Starts from the entry the deployment was loaded from: other tools'
    // keys and overlay initrds survive the rewrite (ostree does the same).
    let mut e = d.bootconfig.clone();
    e.set("title", &title);
    e.set("version", &(n - i).to_string());
    e.set("options", &kargs.to_string());
    e.set("linux", &format!("{prefix}/{}", layout.kernel.dest));
    if let Some(f) = &layout.initramfs {
        e.set("initrd", &format!("{prefix}/{}", f.dest));
    }
    // Non-standard keys follow in the order ostree sets them (its writer
    // emits them in hash-table order, which only matters with aboot).
    if let Some(f) = &layout.aboot {
        e.set("aboot", &format!("{prefix}/{}", f.dest));
        // As ostree: the deployment's usr/lib/ostree-boot/aboot.cfg, even
        // when aboot.img came from usr/lib/modules/KVER.
        e.set(
            "abootcfg",
            &format!("/{}/usr/lib/ostree-boot/aboot.cfg", d.relpath()),
        );
    }
    match &layout.devicetree {
        Some(kernel::Devicetree::File(f)) => e.set("devicetree", &format!("{prefix}/{}", f.dest)),
        Some(kernel::Devicetree::Dir(name)) => e.set("fdtdir", &format!("{prefix}/{name}")),
        None => {}
    }
    Ok(e)
}

/// Writes the symlink farm `ostree/boot.B.S'/STATEROOT/BOOTCSUM/BOOTSERIAL`
/// for `list`, where S' is the inactive sub-boot version of B; returns S'.
fn create_bootlinks(s: &Sysroot, bootversion: u8, list: &[Deployment]) -> Result<u8> {
    let cur = if bootversion == s.bootversion {
        s.subbootversion
    } else {
        s.read_subbootversion(bootversion)?
    };
    let new = 1 - cur;
    let ostree = s.ostree_dir()?;
    let name = format!("boot.{bootversion}.{new}");
    fsutil::remove_all(&ostree, &name)?;
    let farm = fsutil::ensure_dir_path(&ostree, &name, 0o755)?;
    for d in list {
        let parent =
            fsutil::ensure_dir_path(&farm, &format!("{}/{}", d.stateroot, d.bootcsum), 0o755)?;
        let target = format!("../../../deploy/{}/deploy/{}", d.stateroot, d.dir_name());
        fsutil::symlink_replace(&parent, &target, &d.bootserial.to_string())?;
    }
    Ok(new)
}

/// Makes the deployments in `list` (default first) the sysroot's boot
/// configuration, atomically (see the module documentation). The booted
/// deployment must stay in the list. With `postclean`, [`cleanup`] runs
/// afterwards.
#[context("Writing deployments")]
pub fn write_deployments(
    s: &mut SysrootLock<'_>,
    list: Vec<Deployment>,
    postclean: bool,
) -> Result<WriteReport> {
    write_deployments_with(s, list, postclean, None)
}

/// [`write_deployments`] starting the boot counting of `probation` (a
/// token of [`crate::bootcount`]): the new default's menu counts its
/// boots. Always a full boot switch then (a new `loader.N`), so that the
/// menu that counts is the one this write makes.
pub fn write_deployments_with(
    s: &mut SysrootLock<'_>,
    list: Vec<Deployment>,
    postclean: bool,
    probation: Option<&str>,
) -> Result<WriteReport> {
    // A staged deployment stays staged only if the new list starts with it;
    // otherwise it is discarded (record first, then its directory).
    let staged = s.deployments.first().filter(|d| d.staged).cloned();
    if let Some(st) = &staged {
        if !list.first().is_some_and(|d| d.staged && d.same(st)) {
            crate::staged::remove_state(s)?;
            let dir = fsutil::open_dir(&s.fd, &format!("ostree/deploy/{}/deploy", st.stateroot))?;
            fsutil::remove_deployment_dir(&dir, &st.dir_name())?;
            fsutil::remove_all(&dir, &format!("{}.origin", st.dir_name()))?;
            s.load()?;
        }
    }
    let mut list: Vec<Deployment> = list.into_iter().filter(|d| !d.staged).collect();
    let current: Vec<Deployment> = s
        .deployments
        .iter()
        .filter(|d| !d.staged)
        .cloned()
        .collect();
    assign_bootserials(&mut list);
    if let Some(b) = s.booted {
        let booted = &s.deployments[b];
        if !list.iter().any(|d| d.same(booted)) {
            bail!("Attempting to remove booted deployment");
        }
    }
    for d in &list {
        if fsutil::file_type(&s.fd, &d.relpath())? != Some(rustix::fs::FileType::Directory) {
            bail!("Unable to find expected deployment root: {}", d.relpath());
        }
    }
    let requires_bootswap = probation.is_some()
        || list.len() != current.len()
        || list
            .iter()
            .zip(&current)
            .any(|(a, b)| !a.bootconfig_equal(b));
    let boot = fsutil::open_dir(&s.fd, "boot")?;
    let report = if !requires_bootswap {
        let noop = list
            .iter()
            .zip(&current)
            .all(|(a, b)| a.same(b) && a.bootserial == b.bootserial);
        if noop {
            return Ok(WriteReport {
                bootswap: false,
                subbootdir: format!("boot.{}.{}", s.bootversion, s.subbootversion),
            });
        }
        let b = s.bootversion;
        let sub = create_bootlinks(s, b, &list)?;
        hit(failpoint::BOOTLINKS_WRITTEN);
        full_sync(s, &boot)?;
        hit(failpoint::SYNCED_BEFORE_SWAP);
        let ostree = s.ostree_dir()?;
        fsutil::symlink_replace(&ostree, &format!("boot.{b}.{sub}"), &format!("boot.{b}"))?;
        hit(failpoint::SWAPPED);
        fsutil::fsync_dir(&ostree)?;
        WriteReport {
            bootswap: false,
            subbootdir: format!("boot.{b}.{sub}"),
        }
    } else {
        let nb = 1 - s.bootversion;
        let entries_dir = format!("loader.{nb}/entries");
        fsutil::remove_all(&boot, &format!("loader.{nb}"))?;
        let entries = fsutil::ensure_dir_path(&boot, &entries_dir, 0o755)?;
        for i in 0..list.len() {
            let d = &list[i];
            let root = s.deployment_dir(d)?;
            let layout = kernel::find_kernel_for(&root, &d.bootcsum)
                .with_context(|| format!("Deployment {}", d.dir_name()))?;
            if layout.bootcsum != d.bootcsum {
                bail!(
                    "Deployment {}: its kernel hashes to {}, not its boot checksum {}",
                    d.dir_name(),
                    layout.bootcsum,
                    d.bootcsum
                );
            }
            kernel::install(&layout, &root, &boot, &d.stateroot)?;
            let e = boot_entry(&list, i, nb, &layout, &root)?;
            let name = format!("ostree-{}-{}.conf", list.len() - i, d.stateroot);
            arbor_fs::atomic_write(&entries, &name, e.to_text().as_bytes(), 0o644)?;
        }
        // The GRUB menu of these entries, inside the directory the
        // rename below swaps in: GRUB sees it exactly when it sees them.
        crate::grub::write_grub_config(&boot, &format!("loader.{nb}"), probation)?;
        hit(failpoint::ENTRIES_WRITTEN);
        let sub = create_bootlinks(s, nb, &list)?;
        let ostree = s.ostree_dir()?;
        // boot.NB is not what the active entries (loader.B) point to.
        fsutil::symlink_replace(&ostree, &format!("boot.{nb}.{sub}"), &format!("boot.{nb}"))?;
        let _ = rustix::fs::unlinkat(&boot, "loader.tmp", rustix::fs::AtFlags::empty());
        rustix::fs::symlinkat(format!("loader.{nb}").as_str(), &boot, "loader.tmp")
            .context("Creating boot/loader.tmp")?;
        hit(failpoint::BOOTLINKS_WRITTEN);
        full_sync(s, &boot)?;
        hit(failpoint::SYNCED_BEFORE_SWAP);
        rustix::fs::renameat(&boot, "loader.tmp", &boot, "loader")
            .context("Swapping boot/loader")?;
        hit(failpoint::SWAPPED);
        fsutil::fsync_dir(&boot)?;
        // The menu of the now inactive loader.B goes at once, cleanup or
        // not: ostree's next write recreates only loader.B/entries, and a
        // grub.cfg left beside them would offer the old entries (the
        // generated menu also checks grub::MENU_STAMP, for a crash before
        // this unlink).
        remove_inactive_menu(&boot, s.bootversion)?;
        rustix::fs::syncfs(&boot)?;
        // As ostree's swap_bootloader: GRUB does not replay a journal, so
        // the rename must reach the filesystem proper.
        boot_freeze_thaw(s, &boot)?;
        ensure_boot_boot(&boot)?;
        WriteReport {
            bootswap: true,
            subbootdir: format!("boot.{nb}.{sub}"),
        }
    };
    // Change notification, as ostree: touch ostree/deploy.
    if let Ok(d) = fsutil::open_dir(&s.fd, "ostree/deploy") {
        rustix::fs::futimens(
            &d,
            &rustix::fs::Timestamps {
                last_access: now(),
                last_modification: now(),
            },
        )?;
    }
    s.load()?;
    if postclean {
        // As ostree, a failed cleanup fails the command; the message says
        // the switch itself is done.
        cleanup(s, true).context(
            "The new boot configuration is in place, but the final cleanup failed \
             (run 'arbor cleanup' again)",
        )?;
    }
    Ok(report)
}

fn now() -> rustix::fs::Timespec {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rustix::fs::Timespec {
        tv_sec: t.as_secs() as i64,
        tv_nsec: t.subsec_nanos() as _,
    }
}

/// `boot/boot -> .`, so `/boot/...` paths resolve whether or not /boot is
/// its own filesystem.
fn ensure_boot_boot(boot: &OwnedFd) -> Result<()> {
    match rustix::fs::symlinkat(".", boot, "boot") {
        Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(e) => Err(e).context("Creating boot/boot"),
    }
}

/// Names of the temporary files this crate writes (`.NAME.tmp`), or that
/// arbor-fs's atomic replacements leave after a crash.
fn is_tmp_name(name: &str) -> bool {
    arbor_fs::is_temporary_name(name) || (name.starts_with('.') && name.ends_with(".tmp"))
}

/// What [`cleanup`] removed.
#[derive(Debug, Default, Clone)]
pub struct CleanupReport {
    /// Deployment directories removed.
    pub deployments: Vec<String>,
    /// `/boot/ostree/*` directories removed.
    pub boot_dirs: Vec<String>,
    /// Repository objects pruned.
    pub pruned_objects: u64,
}

/// Removes what the active boot configuration does not use, in ostree's
/// order: the inactive boot versions, deployment directories (and their
/// `.origin`) not in the list, unused `/boot/ostree/*` directories; then
/// resets the repository refs `ostree/B/S/INDEX` to the deployments'
/// commits, deletes the extension refs no deployment uses and sets those
/// missing ([`crate::layered::collect_refs`]) and, with `prune`, deletes
/// objects no ref reaches (at depth 0, as ostree's `admin cleanup`).
///
/// The deployments are read again first, so all of this follows the
/// boot configuration on disk, not a list loaded before the lock was
/// last taken. While a deployment's commit cannot be read
/// ([`Deployment::layers_unknown`]) no extension ref is deleted, and the
/// prune still runs: those refs keep whatever that deployment can need
/// (a warning names it and the remedy).
#[context("Cleaning up the sysroot")]
pub fn cleanup(s: &mut SysrootLock<'_>, prune: bool) -> Result<CleanupReport> {
    // The list may be stale (the lock released and taken again since it
    // was read): what is removed below is decided on a fresh one.
    s.load()?;
    let mut report = CleanupReport::default();
    let (b, sub) = (s.bootversion, s.subbootversion);
    let boot = fsutil::open_dir(&s.fd, "boot")?;
    let ostree = s.ostree_dir()?;
    fsutil::remove_all(&boot, &format!("loader.{}", 1 - b))?;
    let _ = rustix::fs::unlinkat(&boot, "loader.tmp", rustix::fs::AtFlags::empty());
    for name in fsutil::list_names(&ostree)? {
        // Leftovers of a killed switch: `.boot.B.tmp-PID-N` (the unique
        // temporary names of arbor_fs::symlink_replace) and the older
        // fixed `boot.B.tmp`.
        let stale_link = name.starts_with(".boot.") && arbor_fs::is_temporary_name(&name);
        if stale_link || (name.starts_with("boot.") && name.ends_with(".tmp")) {
            fsutil::remove_all(&ostree, &name)?;
        }
    }
    for name in [
        format!("boot.{}", 1 - b),
        format!("boot.{}.0", 1 - b),
        format!("boot.{}.1", 1 - b),
        format!("boot.{b}.{}", 1 - sub),
    ] {
        fsutil::remove_all(&ostree, &name)?;
    }
    crate::deploy::remove_stale_previews(s)?;
    hit(failpoint::CLEANUP_BOOTVERSIONS);
    // Deployment directories not in the list.
    let active: BTreeSet<(String, String)> = s
        .deployments
        .iter()
        .map(|d| (d.stateroot.clone(), d.dir_name()))
        .collect();
    if let Some(deploy) = fsutil::open_dir_optional(&s.fd, "ostree/deploy")? {
        for root in fsutil::list_names(&deploy)? {
            let Some(dd) = fsutil::open_dir_optional(&deploy, &format!("{root}/deploy"))? else {
                continue;
            };
            for name in fsutil::list_names(&dd)? {
                if is_tmp_name(&name) {
                    fsutil::remove_deployment_dir(&dd, &name)?;
                    continue;
                }
                let base = name.strip_suffix(".origin").unwrap_or(&name);
                if parse_dir_name(base).is_err() {
                    continue;
                }
                if active.contains(&(root.clone(), base.to_string())) {
                    continue;
                }
                if name == base {
                    if s.is_running_root(&dd, &name)? {
                        // Never reached while the list holds the booted
                        // deployment; kept as ostree keeps it, to be safe.
                        tracing::warn!("not removing {name}: it is the running root");
                        continue;
                    }
                    report.deployments.push(format!("{root}/{name}"));
                    fsutil::remove_deployment_dir(&dd, &name)?;
                } else {
                    fsutil::remove_all(&dd, &name)?;
                }
                hit(failpoint::CLEANUP_DEPLOYMENT);
            }
            rustix::fs::fsync(&dd)?;
        }
    }
    // Kernel directories no deployment uses.
    let used: BTreeSet<String> = s
        .deployments
        .iter()
        .map(|d| format!("{}-{}", d.stateroot, d.bootcsum))
        .collect();
    if let Some(bo) = fsutil::open_dir_optional(&boot, "ostree")? {
        for name in fsutil::list_names(&bo)? {
            if fsutil::file_type(&bo, &name)? != Some(rustix::fs::FileType::Directory) {
                // A temporary of an interrupted write (e.g. of
                // finalize-failure.stamp): every writer here holds the
                // sysroot lock, as this cleanup does.
                if arbor_fs::is_temporary_name(&name) {
                    fsutil::remove_all(&bo, &name)?;
                }
                continue;
            }
            if used.contains(&name) {
                // Temporary files of an interrupted kernel install.
                let kd = fsutil::open_dir(&bo, &name)?;
                for f in fsutil::list_names(&kd)? {
                    if is_tmp_name(&f) {
                        fsutil::remove_all(&kd, &f)?;
                    }
                }
                continue;
            }
            // Only directories named STATEROOT-BOOTCSUM are ours.
            let ours = name
                .rsplit_once('-')
                .is_some_and(|(_, c)| arbor_format::is_hex_checksum(c));
            if ours {
                fsutil::remove_all(&bo, &name)?;
                report.boot_dirs.push(name);
            }
        }
    }
    rustix::fs::syncfs(&s.fd)?;
    hit(failpoint::CLEANUP_FILES);
    // Deployment refs, then prune.
    let mut updates = Vec::new();
    let existing = arbor_repo::refs::list_refs_under(&s.repo, "heads/ostree")?;
    let mut wanted: HashMap<String, arbor_format::Checksum> = HashMap::new();
    for (i, d) in s.deployments.iter().enumerate() {
        wanted.insert(format!("ostree/{b}/{sub}/{i}"), d.csum);
    }
    // Only the deployment refs `ostree/B/S/INDEX` are ours to reset.
    let is_deployment_ref = |name: &str| {
        let parts: Vec<&str> = name.split('/').collect();
        parts.len() == 3
            && ["0", "1"].contains(&parts[0])
            && ["0", "1"].contains(&parts[1])
            && !parts[2].is_empty()
            && parts[2].bytes().all(|b| b.is_ascii_digit())
    };
    for (name, c) in existing.iter().filter(|(n, _)| is_deployment_ref(n)) {
        let full = format!("ostree/{name}");
        if wanted.get(&full) != Some(c) {
            updates.push(RefUpdate::delete(RefSpec::local(RefName::new(full)?)));
        }
    }
    for (name, c) in &wanted {
        let short = name.strip_prefix("ostree/").unwrap_or(name);
        if existing.iter().any(|(n, x)| n == short && x == c) {
            continue;
        }
        updates.push(RefUpdate::set(
            RefSpec::local(RefName::new(name.clone())?),
            *c,
        ));
    }
    // Sets before deletes, so no deployment commit is ever without a ref.
    updates.sort_by_key(|u| u.target.is_none());
    if !updates.is_empty() {
        arbor_repo::refs::update_refs(&s.repo.lock(false)?, &updates)?;
    }
    // The extension refs no deployment uses, before the prune they would
    // otherwise hold back.
    crate::layered::collect_refs(s)?;
    hit(failpoint::CLEANUP_REFS);
    if prune {
        // Safe with a deployment whose commit cannot be read: collect_refs
        // deleted no ref then, and the `arbor/composed/`, `arbor/bases/`
        // and `arbor/extensions/` refs (set with every composition,
        // restored by collect_refs when missing) keep every commit a
        // composed deployment can need.
        // A commit that is missing is skipped by the prune (as ostree's
        // traversal does); one that is present but cannot be read would
        // fail every prune: skip pruning then, saying what to do.
        let unknown = s.deployments.iter().find(|d| d.layers_unknown);
        if let Some(d) = unknown {
            let remedy = crate::layered::unknown_layers_remedy(s, d);
            if s.repo
                .has_object(arbor_format::ObjectType::Commit, &d.csum)?
            {
                tracing::warn!("Not pruning: {remedy}");
                return Ok(report);
            }
            tracing::warn!("Pruning with the extension refs kept: {remedy}");
        }
        let r = arbor_repo::prune::prune(
            &s.repo.lock(true)?,
            &arbor_repo::prune::PruneOptions {
                refs_only: true,
                depth: 0,
                ..Default::default()
            },
        )?;
        report.pruned_objects = r.deleted;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys ostree (today's; 2022.7 knows no aboot) writes for a
    /// usr/lib/modules/KVER with aboot.img and dtb/, and for a single
    /// devicetree file.
    #[test]
    fn boot_entry_has_aboot_and_fdtdir_keys_as_ostree() {
        let t = tempfile::tempdir().unwrap();
        let m = t.path().join("usr/lib/modules/6.1");
        std::fs::create_dir_all(m.join("dtb")).unwrap();
        for (f, c) in [
            ("vmlinuz", "K\n"),
            ("initramfs.img", "I\n"),
            ("aboot.img", "A\n"),
            ("dtb/x.dtb", "X\n"),
        ] {
            std::fs::write(m.join(f), c).unwrap();
        }
        std::fs::write(t.path().join("usr/lib/os-release"), "ID=testos\n").unwrap();
        let root = fsutil::open_dir(rustix::fs::CWD, &t.path().to_string_lossy()).unwrap();
        let layout = kernel::find_kernel(&root).unwrap();
        let csum = "c".repeat(64);
        let d = Deployment {
            stateroot: "os".into(),
            csum: arbor_format::Checksum::from_hex(&csum).unwrap(),
            deployserial: 0,
            bootcsum: layout.bootcsum.clone(),
            bootserial: 0,
            origin: None,
            kargs: crate::kargs::Kargs::parse("quiet"),
            version: None,
            layers: None,
            layers_unknown: false,
            staged: false,
            bootconfig: Default::default(),
        };
        let b = &layout.bootcsum;
        let e = boot_entry(std::slice::from_ref(&d), 0, 1, &layout, &root).unwrap();
        assert_eq!(
            e.to_text(),
            format!(
                "title testos (ostree:0)\nversion 1\n\
                 options quiet ostree=/ostree/boot.1/os/{b}/0\n\
                 linux /ostree/os-{b}/vmlinuz-6.1\n\
                 initrd /ostree/os-{b}/initramfs-6.1.img\n\
                 aboot /ostree/os-{b}/aboot-6.1.img\n\
                 abootcfg /ostree/deploy/os/deploy/{csum}.0/usr/lib/ostree-boot/aboot.cfg\n\
                 fdtdir /ostree/os-{b}/dtb\n"
            )
        );
        // A devicetree file: the standard `devicetree` key, no fdtdir.
        std::fs::write(m.join("devicetree"), "DT\n").unwrap();
        std::fs::remove_file(m.join("aboot.img")).unwrap();
        let layout = kernel::find_kernel(&root).unwrap();
        let d = Deployment {
            bootcsum: layout.bootcsum.clone(),
            ..d
        };
        let b = &layout.bootcsum;
        let e = boot_entry(&[d], 0, 1, &layout, &root).unwrap();
        assert_eq!(
            e.to_text(),
            format!(
                "title testos (ostree:0)\nversion 1\n\
                 options quiet ostree=/ostree/boot.1/os/{b}/0\n\
                 devicetree /ostree/os-{b}/devicetree-6.1\n\
                 linux /ostree/os-{b}/vmlinuz-6.1\n\
                 initrd /ostree/os-{b}/initramfs-6.1.img\n"
            )
        );
    }
}
