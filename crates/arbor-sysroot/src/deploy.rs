//! Creating a deployment (ostree's `admin deploy`): a hardlink checkout of
//! the commit, its `/etc` prepared from `/usr/etc` and merged with the
//! merge deployment's changes, its origin written; then the new deployment
//! list, with the new one as the default, is written atomically.
//!
//! Crash guarantee: nothing before [`write_deployments`]'s atomic rename is
//! referenced by the boot configuration, so a crash leaves the old list
//! booting; leftovers (a partial deployment directory) are removed by the
//! next cleanup, and a new deploy of the same commit uses a fresh serial
//! or replaces the leftover.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arbor_format::Checksum;
use arbor_format::RepoMode;
use arbor_fs::failpoint::{self, hit};
use arbor_repo::checkout::{checkout, CheckoutOptions};
use arbor_repo::config::KeyFile;
use fn_error_context::context;
use rustix::fs::{AtFlags, FileType};
use serde::Serialize;

use crate::compose::{EtcComposer, ThreeWayMerge};
use crate::deployment::{parse_dir_name, validate_stateroot, Deployment};
use crate::etc_merge::{self, EtcDiff, PlanEntry};
use crate::fsutil;
use crate::kargs::Kargs;
use crate::kernel;
use crate::sysroot::{Sysroot, SysrootLock};
use crate::write::{write_deployments, WriteReport};

/// Options of [`deploy`].
#[derive(Debug, Clone, Default)]
pub struct DeployOptions {
    /// Stateroot (default: the booted one, or the only one).
    pub stateroot: Option<String>,
    /// What to deploy: a ref, `REMOTE:REF` or a commit checksum.
    pub revision: String,
    /// The origin to write (default: `refspec=REVISION`).
    pub origin: Option<KeyFile>,
    /// `--karg`: the kernel arguments, replacing the merge deployment's.
    pub kargs: Option<Vec<String>>,
    /// The exact kernel arguments (without `ostree=`), in order, instead
    /// of the merge deployment's; `kargs` and `karg_append` then edit them.
    pub exact_kargs: Option<Vec<String>>,
    /// `--karg-append`: arguments appended.
    pub karg_append: Vec<String>,
    /// `--retain`: keep every existing deployment.
    pub retain: bool,
    /// `--stage`: prepare now, switch at shutdown (`finalize`).
    pub stage: bool,
    /// `--lock-finalization` (with `stage`): finalization does nothing
    /// until [`crate::staged::set_finalization_locked`] unlocks it (ostree's
    /// lock file, [`crate::staged::STAGED_LOCKED`], written before the
    /// record, so no shutdown finalizes the deployment in between).
    pub lock_finalization: bool,
    /// Composes the new `/etc` (default: [`ThreeWayMerge`]). A staged
    /// deployment's `/etc` is composed by `finalize`, with its composer.
    pub composer: Option<Arc<dyn EtcComposer>>,
    /// Replaces the resolved revision with the commit to deploy (a
    /// composed commit of the base plus extensions); none: the revision.
    pub layering: Option<Arc<dyn crate::compose::CommitLayering>>,
}

/// What a deploy did (or, for a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    /// `CSUM.SERIAL` of the new deployment.
    pub deployment: String,
    /// Stateroot.
    pub stateroot: String,
    /// Commit deployed.
    pub checksum: String,
    /// The merge deployment, if any.
    pub merge_deployment: Option<String>,
    /// The admin's /etc changes carried over.
    pub etc: Option<EtcDiff>,
    /// Whether the boot entries changed.
    pub bootswap: bool,
}

/// The next free serial for `csum` in the stateroot: one more than the
/// largest among existing directories (leftovers included), else 0.
fn allocate_deployserial(s: &Sysroot, stateroot: &str, csum: &Checksum) -> Result<u32> {
    let dir = fsutil::open_dir(&s.fd, &format!("ostree/deploy/{stateroot}/deploy"))?;
    // As ostree, past every loaded deployment of the commit (the staged
    // one included), and past any directory on disk too.
    let mut next = s
        .deployments
        .iter()
        .filter(|d| d.stateroot == stateroot && d.csum == *csum)
        .map(|d| d.deployserial + 1)
        .max()
        .unwrap_or(0);
    for name in fsutil::list_names(&dir)? {
        if let Ok((c, serial)) = parse_dir_name(&name) {
            if c == *csum {
                next = next.max(serial + 1);
            }
        }
    }
    Ok(next)
}

/// The name prefix of `deploy --dry-run`'s scratch directories in the
/// repository's `tmp/`.
pub const PREVIEW_PREFIX: &str = "arbor-etc-preview-";

/// Removes every preview scratch directory (under the sysroot lock:
/// previews hold it while theirs exists).
pub fn remove_stale_previews(s: &SysrootLock<'_>) -> Result<()> {
    let Some(tmp) = fsutil::open_dir_optional(&s.fd, "ostree/repo/tmp")? else {
        return Ok(());
    };
    for name in fsutil::list_names(&tmp)? {
        if name.starts_with(PREVIEW_PREFIX) {
            fsutil::remove_all(&tmp, &name)
                .with_context(|| format!("Removing ostree/repo/tmp/{name}"))?;
        }
    }
    Ok(())
}

/// Moves a populated `/etc` of an old-style tree to `/usr/etc`, drops an
/// empty one, then creates `/etc` as a copy of `/usr/etc`.
fn prepare_etc(root: &OwnedFd) -> Result<()> {
    let etc = fsutil::open_dir_optional(root, "etc")?;
    let etc_populated = match &etc {
        Some(fd) => !fsutil::list_names(fd)?.is_empty(),
        None => false,
    };
    // `usr` is opened without following a symlink: the tree's content
    // never redirects a write outside the deployment.
    let usr = fsutil::open_tree_dir(root, "usr")?;
    let usr_etc = match &usr {
        Some(u) => fsutil::file_type(u, "etc")? == Some(FileType::Directory),
        None => false,
    };
    if usr_etc && etc_populated {
        bail!("Tree contains both /etc and /usr/etc");
    }
    if etc_populated {
        let u = usr
            .as_ref()
            .context("Tree has /etc but no /usr directory")?;
        rustix::fs::renameat(root, "etc", u, "etc").context("Moving /etc to /usr/etc")?;
    } else if etc.is_some() {
        rustix::fs::unlinkat(root, "etc", AtFlags::REMOVEDIR).context("Removing empty /etc")?;
    }
    if let (true, Some(u)) = (usr_etc || etc_populated, &usr) {
        etc_merge::copy_entry(u, root, "etc").context("Copying /usr/etc to /etc")?;
        // `copy_entry` named it usr's "etc" inside root: same name.
    }
    Ok(())
}

/// The admin's /etc changes in `merge`. With `preview` (the new defaults, and an empty scratch directory), also
/// what the merge does per path ([`etc_merge::plan`]).
pub fn etc_changes(
    s: &Sysroot,
    merge: &Deployment,
    preview: Option<(&OwnedFd, &OwnedFd)>,
) -> Result<(EtcDiff, Vec<PlanEntry>)> {
    let mroot = s.deployment_dir(merge)?;
    let (Some(orig), Some(modified)) = (
        fsutil::open_tree_dir(&mroot, "usr/etc")?,
        fsutil::open_tree_dir(&mroot, "etc")?,
    ) else {
        return Ok((EtcDiff::default(), Vec::new()));
    };
    let d = etc_merge::diff(&orig, &modified)?;
    let plan = match preview {
        Some((n, scratch)) => etc_merge::plan(&d, &orig, &modified, n, scratch)?,
        None => Vec::new(),
    };
    Ok((d, plan))
}

/// Carries the admin's /etc changes of `merge` into `new`'s /etc.
pub(crate) fn merge_etc(s: &Sysroot, merge: &Deployment, new: &Deployment) -> Result<EtcDiff> {
    let (diff, _) = etc_changes(s, merge, None)?;
    let root = s.deployment_dir(new)?;
    if let Some(new_etc) = fsutil::open_dir_optional(&root, "etc")? {
        let mroot = s.deployment_dir(merge)?;
        let modified = fsutil::open_dir(&mroot, "etc")?;
        etc_merge::apply(&diff, &modified, &new_etc)?;
        tracing::info!(
            "Copying /etc changes: {} modified, {} removed, {} added",
            diff.modified.len(),
            diff.removed.len(),
            diff.added.len()
        );
    }
    Ok(diff)
}

/// ostree's simple write policy: `new` first, then every current
/// deployment that is pinned, of another stateroot, booted, or the merge
/// deployment (all of them with `retain`). A staged one is dropped.
pub(crate) fn simple_list(
    s: &Sysroot,
    new: &Deployment,
    merge: Option<&Deployment>,
    retain: bool,
) -> Vec<Deployment> {
    let booted = s.booted.map(|i| &s.deployments[i]);
    let mut list = vec![new.clone()];
    for old in s.deployments.iter().filter(|d| !d.staged && !d.same(new)) {
        let keep = retain
            || old.pinned()
            || old.stateroot != new.stateroot
            || booted.is_some_and(|b| b.same(old))
            || merge.is_some_and(|m| m.same(old));
        if keep {
            list.push(old.clone());
        }
    }
    list
}

/// Makes a finished deployment's root immutable (`chattr +i`), as ostree
/// does, unless [`crate::Sysroot::set_mutable_deployments`] is on. A staged
/// deployment is sealed by `finalize`, after its /etc merge.
pub(crate) fn seal(s: &Sysroot, d: &Deployment) -> Result<()> {
    if s.mutable_deployments() {
        return Ok(());
    }
    fsutil::set_immutable(s.deployment_dir(d)?, true)
        .with_context(|| format!("Sealing deployment {}", d.dir_name()))
}

/// Removes `etc/.updated` of the deployment and `var/.updated` of its
/// stateroot, so systemd's `ConditionNeedsUpdate=` units run on its first
/// boot (as ostree does).
pub(crate) fn remove_updated_stamps(s: &Sysroot, d: &Deployment) -> Result<()> {
    let root = s.deployment_dir(d)?;
    let ostree = s.ostree_dir()?;
    for (dir, p) in [
        (&root, "etc/.updated".to_string()),
        (&ostree, format!("deploy/{}/var/.updated", d.stateroot)),
    ] {
        match rustix::fs::unlinkat(dir, p.as_str(), AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => {}
            Err(e) => return Err(e).with_context(|| format!("Removing {p}")),
        }
    }
    Ok(())
}

/// Resolves `revision` to a commit present in the system repository.
pub fn resolve_commit(s: &Sysroot, revision: &str) -> Result<Checksum> {
    let c = arbor_repo::refs::resolve_rev(&s.repo, revision)
        .with_context(|| format!("Resolving {revision}"))?;
    arbor_repo::objects::load_commit(&s.repo, &c)
        .with_context(|| format!("Loading commit {c} (pull it first)"))?;
    if s.repo.is_partial(&c)? {
        bail!("Commit {c} is only partially pulled: pull it completely first");
    }
    Ok(c)
}

/// The commit `layering` returns for `resolved`, checked as a resolved
/// revision is: present and complete in the system repository.
pub fn layered_commit(
    s: &SysrootLock<'_>,
    layering: &dyn crate::compose::CommitLayering,
    stateroot: &str,
    merge: Option<&Deployment>,
    resolved: &Checksum,
) -> Result<Checksum> {
    let c = layering
        .layer(s, stateroot, merge, resolved)
        .with_context(|| format!("Layering commit {resolved}"))?;
    if c != *resolved {
        resolve_commit(s, &c.to_hex())?;
    }
    Ok(c)
}

/// Deploys `opts.revision` as the new default deployment: with
/// `opts.layering`, the commit the hook returns for it (the report's
/// `checksum` and the new deployment are that commit's).
#[context("Deploying {}", opts.revision)]
pub fn deploy(s: &mut SysrootLock<'_>, opts: &DeployOptions) -> Result<DeployReport> {
    s.load()?;
    let stateroot = s.default_stateroot(opts.stateroot.as_deref())?;
    validate_stateroot(&stateroot)?;
    if !s.has_stateroot(&stateroot)? {
        bail!("Stateroot {stateroot} does not exist (run 'arbor admin os-init {stateroot}')");
    }
    if opts.stage && s.booted.is_none() {
        bail!("Cannot stage a deployment: not booted into this sysroot");
    }
    for a in opts
        .kargs
        .iter()
        .flatten()
        .chain(opts.exact_kargs.iter().flatten())
        .chain(&opts.karg_append)
    {
        Kargs::validate_arg(a)?;
        if a.split_once('=').map_or(a.as_str(), |(k, _)| k) == "ostree" {
            bail!("Invalid kernel argument {a:?}: ostree= is managed by arbor");
        }
    }
    crate::layered::refuse_internal_ref(&opts.revision)?;
    let resolved = resolve_commit(s, &opts.revision)?;
    let merge = s
        .merge_deployment(&stateroot)
        .map(|i| s.deployments[i].clone());
    // The hook runs before anything of the new deployment is written: its
    // error leaves the sysroot as it was.
    let csum = match &opts.layering {
        Some(l) => layered_commit(s, l.as_ref(), &stateroot, merge.as_ref(), &resolved)?,
        None => resolved,
    };
    let serial = allocate_deployserial(s, &stateroot, &csum)?;
    let mut d = Deployment {
        stateroot: stateroot.clone(),
        csum,
        deployserial: serial,
        bootcsum: String::new(),
        bootserial: 0,
        origin: None,
        kargs: Kargs::default(),
        version: None,
        layers: None,
        layers_unknown: false,
        staged: false,
        bootconfig: Default::default(),
    };
    s.read_commit_details(&mut d);
    let deploy_dir = fsutil::open_dir(&s.fd, &format!("ostree/deploy/{stateroot}/deploy"))?;
    let name = d.dir_name();
    fsutil::remove_deployment_dir(&deploy_dir, &name)?;
    // Until the deployment is recorded (boot entries or staged state),
    // nothing refers to it: a failure removes it again.
    let prepared = (|| -> Result<Option<EtcDiff>> {
        let user_mode = s.repo.mode() != RepoMode::Bare;
        checkout(
            &s.repo,
            &csum,
            &s.path().join(d.relpath()),
            &CheckoutOptions {
                hardlink: true,
                require_hardlinks: false,
                user_mode,
                union: false,
                subpath: None,
            },
            &arbor_repo::NullProgress,
        )?;
        hit(failpoint::DEPLOY_CHECKED_OUT);
        let root = s.deployment_dir(&d)?;
        let layout = kernel::find_kernel(&root)?;
        d.bootcsum = layout.bootcsum.clone();
        prepare_etc(&root)?;
        // The origin is known before /etc is composed: a composer reads
        // what the new deployment declares (its configuration) from it.
        d.origin = Some(match &opts.origin {
            Some(o) => o.clone(),
            None => {
                let mut o = KeyFile::default();
                o.set("origin", "refspec", &opts.revision)?;
                o
            }
        });
        // As `ostree admin deploy`: the merge deployment's arguments (or
        // the exact list given), each `--karg` replacing those with its
        // key, then the appended ones.
        d.kargs = match &opts.exact_kargs {
            Some(k) => Kargs::parse(&k.join(" ")),
            None => merge.as_ref().map(|m| m.kargs.clone()).unwrap_or_default(),
        };
        for a in opts.kargs.iter().flatten() {
            d.kargs.replace(a);
        }
        for a in &opts.karg_append {
            d.kargs.append(a);
        }
        let mut etc = None;
        if !opts.stage {
            let composer: &dyn EtcComposer = match &opts.composer {
                Some(c) => c.as_ref(),
                None => &ThreeWayMerge,
            };
            let diff = composer.compose(s, merge.as_ref(), &d, &root)?;
            etc = merge.is_some().then_some(diff);
        }
        // The boot entry's title needs it, read as ostree reads it once
        // /etc is in place; refused now, not at the switch (or at
        // shutdown, for a staged deployment).
        crate::write::os_name(&root)?;
        remove_updated_stamps(s, &d)?;
        hit(failpoint::DEPLOY_ETC_MERGED);
        let origin = d.origin.as_ref().expect("set above");
        let parent = fsutil::open_dir(&s.fd, &format!("ostree/deploy/{stateroot}/deploy"))?;
        arbor_fs::atomic_write(
            &parent,
            &format!("{name}.origin"),
            origin.to_text().as_bytes(),
            0o644,
        )?;
        Ok(etc)
    })();
    let etc = match prepared {
        Ok(etc) => etc,
        Err(e) => {
            let _ = fsutil::remove_deployment_dir(&deploy_dir, &name);
            let _ = fsutil::remove_all(&deploy_dir, &format!("{name}.origin"));
            return Err(e);
        }
    };
    hit(failpoint::DEPLOY_PREPARED);
    if opts.stage {
        // Recorded now; finalize merges /etc and writes the boot entries.
        let previous = s.deployments.first().filter(|x| x.staged).cloned();
        // A new stage is not locked by an old stage's lock file.
        crate::staged::remove_state(s)?;
        if opts.lock_finalization {
            crate::staged::set_finalization_locked(s, true)?;
        }
        crate::staged::write_state(s, &d, merge.as_ref())?;
        hit(failpoint::DEPLOY_STAGED);
        if let Some(p) = previous.filter(|p| !p.same(&d)) {
            let dir = fsutil::open_dir(&s.fd, &format!("ostree/deploy/{}/deploy", p.stateroot))?;
            fsutil::remove_deployment_dir(&dir, &p.dir_name())?;
            fsutil::remove_all(&dir, &format!("{}.origin", p.dir_name()))?;
        }
        s.load()?;
        return Ok(DeployReport {
            deployment: name,
            stateroot,
            checksum: csum.to_hex(),
            merge_deployment: merge.map(|m| m.dir_name()),
            etc: None,
            bootswap: false,
        });
    }
    seal(s, &d)?;
    let list = simple_list(s, &d, merge.as_ref(), opts.retain);
    let WriteReport { bootswap, .. } = write_deployments(s, list, true)?;
    Ok(DeployReport {
        deployment: name,
        stateroot,
        checksum: csum.to_hex(),
        merge_deployment: merge.map(|m| m.dir_name()),
        etc,
        bootswap,
    })
}

/// The origin a new deployment carries forward from `merge`: its key file
/// without the transient state (`[libostree-transient]`,
/// `override-commit`: an upgrade follows the ref again, as
/// `rpm-ostree upgrade` does; `unlocked`), with `refspec` replaced when
/// given (a switch, which also drops `unconfigured-state`, as ostree's
/// switch starts from a fresh origin).
pub fn carried_origin(merge: &Deployment, refspec: Option<&str>) -> KeyFile {
    let mut o = merge.origin.clone().unwrap_or_default();
    o.remove_group("libostree-transient");
    o.remove_key("origin", "override-commit");
    o.remove_key("origin", "unlocked");
    if let Some(r) = refspec {
        o.remove_key("origin", "unconfigured-state");
        o.set("origin", "refspec", r)
            .expect("constant group and key names are valid");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(p: &std::path::Path) -> OwnedFd {
        fsutil::open_dir(rustix::fs::CWD, &p.to_string_lossy()).unwrap()
    }

    #[test]
    fn etc_is_prepared_as_ostree_does() {
        // Defaults in /etc only: moved to /usr/etc, then copied to /etc.
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("etc")).unwrap();
        std::fs::create_dir_all(t.path().join("usr")).unwrap();
        std::fs::write(t.path().join("etc/a.conf"), "a\n").unwrap();
        prepare_etc(&open(t.path())).unwrap();
        assert_eq!(
            std::fs::read_to_string(t.path().join("usr/etc/a.conf")).unwrap(),
            "a\n"
        );
        assert_eq!(
            std::fs::read_to_string(t.path().join("etc/a.conf")).unwrap(),
            "a\n"
        );
        // Both populated: refused.
        let t = tempfile::tempdir().unwrap();
        for d in ["etc", "usr/etc"] {
            std::fs::create_dir_all(t.path().join(d)).unwrap();
            std::fs::write(t.path().join(d).join("x"), "x\n").unwrap();
        }
        let err = prepare_etc(&open(t.path())).unwrap_err();
        assert!(
            format!("{err:#}").contains("both /etc and /usr/etc"),
            "{err:#}"
        );
        // A /usr that is a symlink is never followed: /etc stays put.
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("etc")).unwrap();
        std::fs::write(t.path().join("etc/x"), "x\n").unwrap();
        std::os::unix::fs::symlink(outside.path(), t.path().join("usr")).unwrap();
        let err = prepare_etc(&open(t.path())).unwrap_err();
        assert!(format!("{err:#}").contains("no /usr directory"), "{err:#}");
        assert!(t.path().join("etc/x").exists());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        // An empty /etc beside /usr/etc is replaced by the copy.
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("etc")).unwrap();
        std::fs::create_dir_all(t.path().join("usr/etc")).unwrap();
        std::fs::write(t.path().join("usr/etc/b"), "b\n").unwrap();
        prepare_etc(&open(t.path())).unwrap();
        assert_eq!(
            std::fs::read_to_string(t.path().join("etc/b")).unwrap(),
            "b\n"
        );
    }
}
