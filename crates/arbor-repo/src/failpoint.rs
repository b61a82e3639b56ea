//! Named crash points for fault-injection tests.
//!
//! Setting `ARBOR_FAILPOINT=NAME` in the environment makes the process kill
//! itself with `SIGKILL` when it reaches the point `NAME`: no destructors, no
//! buffered writes flushed, exactly like a crash. Tests enumerate [`ALL`] and
//! check that the repository is consistent afterwards. The variable is read
//! once; without it each point costs one comparison against `None`.

use std::sync::OnceLock;

/// Environment variable naming the point to die at.
pub const ENV: &str = "ARBOR_FAILPOINT";

/// Every failpoint, in the order a commit transaction reaches them.
pub const ALL: &[&str] = &[
    TXN_OBJECTS_STAGED,
    TXN_AFTER_SYNC,
    TXN_MID_PUBLISH,
    TXN_AFTER_PUBLISH,
    TXN_AFTER_OBJECTS_SYNCED,
    TXN_AFTER_REFS,
];

/// Every failpoint of a summary update (`summary -u`), in order.
pub const SUMMARY_ALL: &[&str] = &[SUMMARY_WRITTEN, SUMMARY_BETWEEN_RENAMES];

/// The new `summary` (and `summary.sig`) are written and synced in a
/// temporary directory; nothing is published.
pub const SUMMARY_WRITTEN: &str = "summary::written";
/// A signed update has published `summary`, not yet `summary.sig`.
pub const SUMMARY_BETWEEN_RENAMES: &str = "summary::between-renames";

/// All objects are written in the staging directory, nothing synced yet.
pub const TXN_OBJECTS_STAGED: &str = "txn::objects-staged";
/// Staged data is durable (`syncfs`), nothing published.
pub const TXN_AFTER_SYNC: &str = "txn::after-sync";
/// About half of the staged objects have been renamed into `objects/`.
pub const TXN_MID_PUBLISH: &str = "txn::mid-publish";
/// Every object is in `objects/`, directory entries not yet synced.
pub const TXN_AFTER_PUBLISH: &str = "txn::after-publish";
/// Published objects are durable, refs not yet updated.
pub const TXN_AFTER_OBJECTS_SYNCED: &str = "txn::after-objects-synced";
/// Refs are updated, the staging directory not yet removed.
pub const TXN_AFTER_REFS: &str = "txn::after-refs";

fn armed() -> Option<&'static str> {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    ARMED
        .get_or_init(|| std::env::var(ENV).ok().filter(|s| !s.is_empty()))
        .as_deref()
}

/// Dies with `SIGKILL` if `name` is the armed failpoint.
pub fn hit(name: &str) {
    if armed() == Some(name) {
        tracing::debug!("failpoint {name} reached: killing self");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        // SIGKILL cannot be caught; if delivery were delayed, never continue.
        std::process::abort();
    }
}
