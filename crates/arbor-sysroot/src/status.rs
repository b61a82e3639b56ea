//! The deployments as `status` reports them (`ostree admin status`): boot
//! order, which one is booted, staged, pending or the rollback, and what
//! each one runs.

use serde::Serialize;

use crate::sysroot::Sysroot;

/// One deployment as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusEntry {
    /// Position in the boot order (0 = default).
    pub index: usize,
    /// Stateroot.
    pub stateroot: String,
    /// Commit.
    pub checksum: String,
    /// Deployment serial.
    pub deployserial: u32,
    /// The running deployment.
    pub booted: bool,
    /// Staged, waiting for finalization at shutdown.
    pub staged: bool,
    /// Will boot next (before the booted one in the list).
    pub pending: bool,
    /// The one after the booted deployment.
    pub rollback: bool,
    /// Pinned: never removed by a deploy.
    pub pinned: bool,
    /// The commit's `version`.
    pub version: Option<String>,
    /// `origin.refspec`.
    pub origin: Option<String>,
    /// Whether the deployment has an origin file at all (one without a
    /// refspec shows as `<unknown origin type>`, as in ostree).
    #[serde(skip)]
    pub has_origin: bool,
    /// The commit's `ostree.source-title` (e.g. what it was built from).
    pub source_title: Option<String>,
    /// Kernel checksum.
    pub bootcsum: String,
    /// Kernel arguments (without `ostree=`).
    pub kargs: String,
}

/// The status entries of a loaded sysroot, in boot order.
pub fn status_entries(s: &Sysroot) -> Vec<StatusEntry> {
    // As ostree (`query_deployments_for(NULL)`): pending and rollback are
    // those of the booted stateroot, relative to the booted deployment; a
    // staged deployment is the pending one. Nothing is booted: neither.
    let (pending, rollback) = match s.booted {
        Some(b) => s.pending_and_rollback(&s.deployments[b].stateroot),
        None => (None, None),
    };
    s.deployments
        .iter()
        .enumerate()
        .map(|(i, d)| StatusEntry {
            index: i,
            stateroot: d.stateroot.clone(),
            checksum: d.csum.to_hex(),
            deployserial: d.deployserial,
            booted: s.booted == Some(i),
            staged: d.staged,
            pending: pending == Some(i),
            rollback: rollback == Some(i),
            pinned: d.pinned(),
            version: d.version.clone(),
            origin: d.refspec().map(str::to_string),
            has_origin: d.origin.is_some(),
            source_title: source_title(s, &d.csum),
            bootcsum: d.bootcsum.clone(),
            kargs: d.kargs_without_ostree().to_string(),
        })
        .collect()
}

/// The commit's `ostree.source-title`; informative, so a commit that
/// cannot be read (pruned, corrupt) shows none rather than failing status.
fn source_title(s: &Sysroot, c: &arbor_format::Checksum) -> Option<String> {
    match arbor_repo::objects::load_commit(&s.repo, c) {
        Ok(commit) => commit
            .metadata
            .get_str("ostree.source-title")
            .map(str::to_string),
        Err(e) => {
            tracing::debug!("Reading commit {c} for its source title: {e:#}");
            None
        }
    }
}
