//! [`switch()`]: deploy what another refspec names, and follow it from then
//! on (`ostree admin switch`, `rpm-ostree rebase`).

use std::sync::Arc;

use arbor_repo::config::KeyFile;
use arbor_repo::Progress;
use arbor_sysroot::compose::{CommitLayering, EtcComposer};
use arbor_sysroot::deploy::{carried_origin, DeployOptions, DeployReport};
use arbor_sysroot::Sysroot;

use crate::error::Result;
use crate::upgrader::fetch;

/// Inputs of [`switch()`].
#[derive(Debug, Clone, Default)]
pub struct SwitchOptions {
    /// The stateroot (default: the booted one, or the only one).
    pub stateroot: Option<String>,
    /// The new origin: `REMOTE:REF` (pulled first), a local ref, or a
    /// commit.
    pub refspec: String,
    /// Composes the new deployment's `/etc` (default: ostree's three-way
    /// merge).
    pub composer: Option<Arc<dyn EtcComposer>>,
    /// Replaces the commit the refspec names with the commit to deploy:
    /// arbor-config's extension layering composes the extensions of what
    /// boots next in the stateroot (its staged deployment, else its
    /// default) on it. None: that commit itself.
    pub layering: Option<Arc<dyn CommitLayering>>,
}

/// Pulls `opts.refspec` (when it names a remote ref) and deploys it as the
/// new default; the new deployment's origin is that of what boots next
/// ([`Sysroot::next_deployment`]) with
/// the refspec replaced (and `unconfigured-state` dropped, as ostree's
/// switch starts from a fresh origin), or a fresh origin when the
/// stateroot has no deployment yet.
pub fn switch(
    s: &mut Sysroot,
    opts: &SwitchOptions,
    progress: &dyn Progress,
) -> Result<DeployReport> {
    let stateroot = s.default_stateroot(opts.stateroot.as_deref())?;
    arbor_sysroot::layered::refuse_internal_ref(&opts.refspec)?;
    let target = fetch(s, &opts.refspec, false, progress)?;
    // The origin of what boots next, as its extension list; /etc merges
    // from the merge deployment.
    let origin = match s.next_deployment(&stateroot) {
        Some(next) => carried_origin(next, Some(&opts.refspec)),
        None => {
            let mut k = KeyFile::default();
            k.set("origin", "refspec", &opts.refspec)?;
            k
        }
    };
    let deploy = DeployOptions {
        stateroot: Some(stateroot),
        revision: target.to_hex(),
        origin: Some(origin),
        composer: opts.composer.clone(),
        layering: opts.layering.clone(),
        ..Default::default()
    };
    Ok(arbor_sysroot::deploy::deploy(&mut s.lock()?, &deploy)?)
}
