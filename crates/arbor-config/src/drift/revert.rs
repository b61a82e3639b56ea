//! `drift --revert`: a new deployment of the same state without the drift.
//!
//! The state of a deployment is its base commit, its recorded rendered
//! configuration and its kernel arguments. [`revert`] deploys exactly
//! these again (a fresh checkout of the commit, the same origin, the same
//! arguments) with an `/etc` composed from the OS defaults and the
//! configuration alone ([`ConfigComposer`] with `keep_local: false`): the
//! admin's unmanaged changes are dropped. It becomes the default at once,
//! or at shutdown when staged; the drifted deployment stays as the
//! rollback target (as after any deploy), so nothing is lost until it is
//! cleaned up.
//!
//! `/usr` drift in a hardlinked checkout may be in the repository's
//! objects themselves: a fresh checkout links the same objects, so the
//! caller checks the new deployment again (`arbor fsck` and a re-pull
//! repair such objects).
//!
//! Staged, the `/etc` is composed at shutdown by `finalize`: the origin
//! then carries `[libostree-transient] arbor-drop-local-changes=true`
//! ([`DROP_LOCAL_KEY`]), which the composer honours and no later
//! deployment inherits.
//!
//! Crash guarantee: a deploy's (see `arbor_sysroot::deploy`).

use std::sync::Arc;

use anyhow::{bail, Result};
use arbor_sysroot::deploy::{carried_origin, deploy, DeployOptions, DeployReport};
use arbor_sysroot::sysroot::SysrootLock;
use fn_error_context::context;

use crate::apply::{ConfigComposer, DROP_LOCAL_KEY, TRANSIENT_GROUP};

/// Deploys the state of deployment `index` again without its drift (see
/// the module documentation); `stage`: switch at shutdown.
#[context("Reverting the drift of deployment {index}")]
pub fn revert(s: &mut SysrootLock<'_>, index: usize, stage: bool) -> Result<DeployReport> {
    s.load()?;
    let Some(d) = s.deployments().get(index).cloned() else {
        bail!("No deployment {index}");
    };
    if d.staged {
        bail!("Deployment {index} is staged: it has no drift yet");
    }
    let mut origin = carried_origin(&d, None);
    if stage {
        // Composed at shutdown by `finalize`: the origin carries the request.
        origin.set(TRANSIENT_GROUP, DROP_LOCAL_KEY, "true")?;
    }
    let opts = DeployOptions {
        stateroot: Some(d.stateroot.clone()),
        revision: d.csum.to_hex(),
        origin: Some(origin),
        exact_kargs: Some(d.kargs_without_ostree().args().to_vec()),
        stage,
        composer: Some(Arc::new(ConfigComposer::new(false))),
        ..Default::default()
    };
    deploy(s, &opts)
}
