//! The refusals of an upgrade, typed so that a caller (the update agent)
//! can branch on them; anything else is [`UpgradeError::Other`], an
//! error chain with context.

use arbor_format::Checksum;

/// Why an upgrade did not go ahead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpgradeError {
    /// The stateroot has no deployment to upgrade from.
    #[error("No deployment of {stateroot} to upgrade")]
    NoDeployment {
        /// The stateroot.
        stateroot: String,
    },
    /// The merge deployment has no origin refspec to follow.
    #[error("Deployment {deployment} has no origin refspec")]
    NoOrigin {
        /// The deployment (`CSUM.SERIAL`).
        deployment: String,
    },
    /// The origin says the system must be configured (e.g. registered)
    /// before it can be upgraded: `origin.unconfigured-state`.
    #[error("origin unconfigured-state: {message}")]
    Unconfigured {
        /// The origin's message, for the admin.
        message: String,
    },
    /// The origin follows a commit, not a ref: there is nothing to
    /// upgrade to (a switch to a ref is needed).
    #[error("The origin is a commit ({commit}), not a ref: use 'switch' to follow a ref")]
    OriginIsCommit {
        /// The commit the origin names.
        commit: String,
    },
    /// The remote's summary does not list the ref the origin follows.
    #[error("The remote {remote} has no ref {name}")]
    NoRemoteRef {
        /// The remote.
        remote: String,
        /// The ref.
        name: String,
    },
    /// The update is older than the deployed commit, and downgrades are
    /// not allowed. For a remote ref the pull refuses first, comparing
    /// with what the system repository's ref named before (normally the
    /// deployed commit): `deployed` is then that commit.
    #[error(
        "Refusing to upgrade to {target} (timestamp {target_timestamp}): older than the \
         deployed {deployed} (timestamp {deployed_timestamp}); use --allow-downgrade"
    )]
    DowngradeRefused {
        /// The commit the ref names.
        target: Checksum,
        /// Its timestamp.
        target_timestamp: u64,
        /// The deployed (merge) commit, or for a remote ref the commit
        /// its local copy named before the pull.
        deployed: Checksum,
        /// Its timestamp.
        deployed_timestamp: u64,
    },
    /// The merge deployment changed (another process switched, upgraded
    /// or undeployed) between [`Upgrader::new`](crate::Upgrader::new) and
    /// the deploy: deploying would undo that change. Nothing was changed;
    /// start again from a new upgrader.
    #[error(
        "The deployments changed since the upgrade started (merge deployment {expected}, now \
         {}): not deploying; retry the upgrade",
        found.as_deref().unwrap_or("none")
    )]
    MergeChanged {
        /// The merge deployment the upgrade started from (`CSUM.SERIAL`).
        expected: String,
        /// The merge deployment now, if any.
        found: Option<String>,
    },
    /// Another process deployed (or staged) the update since the upgrade
    /// started: nothing to do, and nothing was changed.
    #[error("{commit} is already deployed or pending")]
    AlreadyDeployed {
        /// The update's commit.
        commit: Checksum,
    },
    /// Any other error (I/O, network, a failed deploy), with its context.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// The result type of this crate.
pub type Result<T, E = UpgradeError> = std::result::Result<T, E>;
