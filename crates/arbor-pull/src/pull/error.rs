//! The refusals of a pull that a caller branches on (the upgrader maps
//! them to its own typed errors). They travel inside the `anyhow::Error`
//! the pull returns: find them with `Error::downcast_ref` or in its
//! `chain()`.

use arbor_format::Checksum;

/// The pull would move a ref to a commit older (by timestamp) than the one
/// it names now, and downgrades are not allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DowngradeRefused {
    /// The ref, as `REMOTE:REF` or `REF`.
    pub spec: String,
    /// The commit the ref names now.
    pub old: Checksum,
    /// Its timestamp.
    pub old_timestamp: u64,
    /// The older commit the remote offers.
    pub new: Checksum,
    /// Its timestamp.
    pub new_timestamp: u64,
}

impl std::fmt::Display for DowngradeRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Refusing to downgrade {} from {} (timestamp {}) to the older {} \
             (timestamp {}); use --allow-downgrade to pull it anyway",
            self.spec, self.old, self.old_timestamp, self.new, self.new_timestamp
        )
    }
}

impl std::error::Error for DowngradeRefused {}

/// The remote does not have a ref the pull asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoSuchRemoteRef {
    /// The ref.
    pub name: String,
    /// Whether the remote's summary was searched (otherwise its
    /// `refs/heads/` file was missing).
    pub in_summary: bool,
}

impl std::fmt::Display for NoSuchRemoteRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.in_summary {
            write!(f, "No such branch '{}' in the remote summary", self.name)
        } else {
            write!(f, "Remote ref '{}' not found", self.name)
        }
    }
}

impl std::error::Error for NoSuchRemoteRef {}
