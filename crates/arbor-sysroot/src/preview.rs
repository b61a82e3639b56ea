//! The `/etc` preview of a deploy (`deploy --dry-run`): per path, what
//! merging the admin's changes into a new commit's defaults would do,
//! changing nothing in the deployments.
//!
//! The preview is observed, not predicted: the commit's default `/etc` is
//! checked out into a scratch directory in the repository's `tmp/`
//! (`PREVIEW_PREFIX` + pid), the real merge runs on a copy of it
//! ([`crate::etc_merge::plan`]), and the result is compared with the admin's
//! version. So it shows what the deploy will do, or fails as the deploy
//! would. The scratch directory holds a copy of `/etc`, secrets included:
//! it is removed afterwards, and those of killed previews before (under
//! the sysroot lock, so none of them is in use).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use anyhow::Result;
use arbor_format::{Checksum, RepoMode};
use arbor_repo::checkout::{checkout, CheckoutOptions};

use crate::compose::CommitLayering;
use crate::deploy::{
    etc_changes, layered_commit, remove_stale_previews, resolve_commit, PREVIEW_PREFIX,
};
use crate::etc_merge::PlanEntry;
use crate::fsutil;
use crate::sysroot::{Sysroot, SysrootLock};

/// What deploying a commit would do to `/etc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcPreview {
    /// The commit the revision resolves to.
    pub commit: Checksum,
    /// The deployment whose `/etc` would be merged (`CSUM.SERIAL`); `None`
    /// when there is none: the new `/etc` is the commit's defaults.
    pub merge_deployment: Option<String>,
    /// Per path the admin changed, what the merge does (empty: no local
    /// changes, `/etc` takes the new defaults).
    pub plan: Vec<PlanEntry>,
}

/// Previews the `/etc` merge of deploying `revision` (a ref, `REMOTE:REF`
/// or a commit in the system repository) in `stateroot` (default as
/// [`Sysroot::default_stateroot`]). Under the sysroot lock, so the merge
/// deployment does not change while it is read.
///
/// Without the deploy's [`CommitLayering`] hook this previews the revision
/// itself; [`preview_layered`] previews what a deploy with the hook
/// deploys.
pub fn preview_etc(
    s: &mut SysrootLock<'_>,
    stateroot: Option<&str>,
    revision: &str,
) -> Result<EtcPreview> {
    preview_layered(s, stateroot, revision, None)
}

/// [`preview_etc`] of the commit a deploy with `layering` would deploy
/// (the preview's `commit` is that one, e.g. a composed commit). The hook
/// runs as in a deploy, so it may write to the repository (arbor-config's
/// composes the commit and sets its `arbor/composed/` and `arbor/bases/`
/// refs); the deployments do not change, and the next ref collection
/// ([`crate::layered::collect_refs`], every cleanup) deletes the refs no
/// deployment needs, the next prune the commit.
pub fn preview_layered(
    s: &mut SysrootLock<'_>,
    stateroot: Option<&str>,
    revision: &str,
    layering: Option<&dyn CommitLayering>,
) -> Result<EtcPreview> {
    s.load()?;
    let s = &*s;
    let stateroot = s.default_stateroot(stateroot)?;
    crate::layered::refuse_internal_ref(revision)?;
    let resolved = resolve_commit(s, revision)?;
    let m = s.merge_deployment(&stateroot);
    let commit = match layering {
        Some(l) => layered_commit(s, l, &stateroot, m.map(|m| &s.deployments[m]), &resolved)?,
        None => resolved,
    };
    let Some(m) = m else {
        return Ok(EtcPreview {
            commit,
            merge_deployment: None,
            plan: Vec::new(),
        });
    };
    let merge = &s.deployments[m];
    let tmp = scratch_dir(s)?;
    let result = (|| {
        std::fs::create_dir_all(tmp.join("result"))?;
        let scratch = fsutil::open_dir(rustix::fs::CWD, &tmp.join("result").to_string_lossy())?;
        let defaults = export_etc(s, &commit, &tmp.join("defaults"))?;
        let (_, plan) = etc_changes(s, merge, defaults.as_ref().map(|d| (d, &scratch)))?;
        anyhow::Ok(plan)
    })();
    // The copy of /etc goes in any case; failing to remove it does not
    // change the preview (the next preview or cleanup removes it).
    if let Err(e) = std::fs::remove_dir_all(&tmp) {
        tracing::warn!("Removing the preview's scratch {}: {e}", tmp.display());
    }
    Ok(EtcPreview {
        commit,
        merge_deployment: Some(merge.dir_name()),
        plan: result?,
    })
}

/// The preview's scratch directory, after removing those of earlier
/// previews that were killed.
fn scratch_dir(s: &SysrootLock<'_>) -> Result<PathBuf> {
    remove_stale_previews(s)?;
    Ok(s.path().join(format!(
        "ostree/repo/tmp/{PREVIEW_PREFIX}{}",
        std::process::id()
    )))
}

/// Checks out the default `/etc` of `commit` (its `/usr/etc`, or the
/// `/etc` of an old-style tree) into `dir`; `None` if it has neither.
fn export_etc(s: &Sysroot, commit: &Checksum, dir: &Path) -> Result<Option<OwnedFd>> {
    for sub in ["/usr/etc", "/etc"] {
        let opts = CheckoutOptions {
            hardlink: false,
            require_hardlinks: false,
            // Owners, modes and xattrs as the deployment will have them:
            // the same mode as the deploy's checkout.
            user_mode: s.repo.mode() != RepoMode::Bare,
            union: false,
            subpath: Some(sub.to_string()),
        };
        match checkout(&s.repo, commit, dir, &opts, &arbor_repo::NullProgress) {
            Ok(_) => {
                return Ok(Some(fsutil::open_dir(
                    rustix::fs::CWD,
                    &dir.to_string_lossy(),
                )?))
            }
            Err(e) if arbor_repo::reachable::is_not_found(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}
