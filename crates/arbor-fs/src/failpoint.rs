//! Named crash points for the fault-injection tests, for the repository
//! and the sysroot alike: every point's name is declared here.
//!
//! Built with the `fault-injection` cargo feature (the tests enable it),
//! setting `ARBOR_FAILPOINT=NAME` makes the process kill itself with
//! `SIGKILL` when it reaches the point `NAME`: no destructors, no buffered
//! writes flushed, exactly like a crash. The variable is read once.
//!
//! Without the feature (any release build) [`hit`] is an empty inline
//! function and the environment is never read: a variable cannot make a
//! production binary kill itself.

/// Environment variable naming the point to die at.
pub const ENV: &str = "ARBOR_FAILPOINT";

/// Whether this build honours [`ENV`] (the `fault-injection` feature).
pub const ENABLED: bool = cfg!(feature = "fault-injection");

// --- Repository: a commit transaction, in the order it reaches them. ---

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

/// Every point of a commit transaction, in order.
pub const TXN_ALL: &[&str] = &[
    TXN_OBJECTS_STAGED,
    TXN_AFTER_SYNC,
    TXN_MID_PUBLISH,
    TXN_AFTER_PUBLISH,
    TXN_AFTER_OBJECTS_SYNCED,
    TXN_AFTER_REFS,
];

// --- Repository: a summary update (`summary -u`). ---

/// The new `summary` (and `summary.sig`) are written and synced in a
/// temporary directory; nothing is published.
pub const SUMMARY_WRITTEN: &str = "summary::written";
/// A signed update has published `summary`, not yet `summary.sig`.
pub const SUMMARY_BETWEEN_RENAMES: &str = "summary::between-renames";

/// Every point of a summary update, in order.
pub const SUMMARY_ALL: &[&str] = &[SUMMARY_WRITTEN, SUMMARY_BETWEEN_RENAMES];

// --- Sysroot: deploy, finalize, boot switch, cleanup. ---

/// A new deployment's tree is checked out; its /etc is not prepared.
pub const DEPLOY_CHECKED_OUT: &str = "deploy::checked-out";
/// The new deployment's /etc is merged, its origin not yet written.
pub const DEPLOY_ETC_MERGED: &str = "deploy::etc-merged";
/// A staged deployment's record is written; the previous staged one (if
/// any) not yet removed.
pub const DEPLOY_STAGED: &str = "deploy::staged";
/// Finalization removed the staged record; /etc not yet merged.
pub const FINALIZE_STATE_REMOVED: &str = "finalize::state-removed";
/// Finalization merged /etc; the boot list not yet written.
pub const FINALIZE_ETC_MERGED: &str = "finalize::etc-merged";
/// The new deployment is complete on disk; the boot list not yet written.
pub const DEPLOY_PREPARED: &str = "deploy::prepared";
/// Boot entries of the new boot version are written (bootswap only).
pub const ENTRIES_WRITTEN: &str = "write::entries-written";
/// The new bootlinks (and `boot/loader.tmp`) exist, nothing synced.
pub const BOOTLINKS_WRITTEN: &str = "write::bootlinks-written";
/// Everything is synced; the atomic rename has not happened.
pub const SYNCED_BEFORE_SWAP: &str = "write::synced-before-swap";
/// The atomic rename happened; not yet synced.
pub const SWAPPED: &str = "write::swapped";
/// Cleanup removed the inactive boot versions.
pub const CLEANUP_BOOTVERSIONS: &str = "cleanup::bootversions";
/// Cleanup removed one unused deployment directory.
pub const CLEANUP_DEPLOYMENT: &str = "cleanup::deployment";
/// Cleanup removed unused files; refs not yet reset.
pub const CLEANUP_FILES: &str = "cleanup::files";
/// Deployment refs are reset; the repository not yet pruned.
pub const CLEANUP_REFS: &str = "cleanup::refs";
/// A separate `/boot` is frozen (during the sync before a switch); the
/// watchdog must thaw it. Reached only when `/boot` is its own filesystem,
/// so not in [`SYSROOT_ALL`]: its own test mounts one.
pub const BOOT_FROZEN: &str = "write::boot-frozen";

/// Every sysroot crash point, in the order a deploy reaches them.
pub const SYSROOT_ALL: &[&str] = &[
    DEPLOY_CHECKED_OUT,
    DEPLOY_ETC_MERGED,
    DEPLOY_PREPARED,
    DEPLOY_STAGED,
    FINALIZE_STATE_REMOVED,
    FINALIZE_ETC_MERGED,
    ENTRIES_WRITTEN,
    BOOTLINKS_WRITTEN,
    SYNCED_BEFORE_SWAP,
    SWAPPED,
    CLEANUP_BOOTVERSIONS,
    CLEANUP_DEPLOYMENT,
    CLEANUP_FILES,
    CLEANUP_REFS,
];

// --- Declared configuration: `config apply` (arbor-config). ---

/// The rendered document is stored; no deployment names it yet.
pub const CONFIG_STORED: &str = "config::stored";
/// The new deployment's /etc is composed from the configuration; its
/// origin not yet written.
pub const CONFIG_COMPOSED: &str = "config::composed";
/// The new deployment is the default (or staged); unused documents not
/// yet collected.
pub const CONFIG_SWITCHED: &str = "config::switched";
/// One unused rendered document was removed by the collection.
pub const CONFIG_GC: &str = "config::gc";

/// Every `config apply` crash point, in the order it reaches them (the
/// deploy's [`SYSROOT_ALL`] points come between the second and third).
pub const CONFIG_ALL: &[&str] = &[CONFIG_STORED, CONFIG_COMPOSED, CONFIG_SWITCHED, CONFIG_GC];

// --- Extensions (arbor-config). ---

/// A directory or tar extension is committed under its
/// `arbor/extensions/NAME/COMMIT` ref; nothing composed yet.
pub const EXT_IMPORTED: &str = "ext::imported";
/// The composed commit and its `arbor/composed/` ref are written; not
/// deployed yet.
pub const EXT_COMPOSED: &str = "ext::composed";
/// The composed commit is deployed (default or staged); unused refs not
/// yet collected.
pub const EXT_SWITCHED: &str = "ext::switched";
/// The refs no deployment uses were deleted.
pub const EXT_GC: &str = "ext::gc";

/// Every extension crash point, in the order `extension add` reaches them
/// (the deploy's [`SYSROOT_ALL`] points come between the second and
/// third).
pub const EXT_ALL: &[&str] = &[EXT_IMPORTED, EXT_COMPOSED, EXT_SWITCHED, EXT_GC];

/// Every point there is: [`hit`] accepts no other name.
pub const EVERY: &[&[&str]] = &[
    TXN_ALL,
    SUMMARY_ALL,
    SYSROOT_ALL,
    CONFIG_ALL,
    EXT_ALL,
    &[BOOT_FROZEN],
];

/// Dies with `SIGKILL` if `name` is the armed point.
#[cfg(feature = "fault-injection")]
pub fn hit(name: &str) {
    use std::sync::OnceLock;
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    debug_assert!(
        EVERY.iter().any(|l| l.contains(&name)),
        "unregistered failpoint {name}"
    );
    let armed = ARMED
        .get_or_init(|| std::env::var(ENV).ok().filter(|s| !s.is_empty()))
        .as_deref();
    if armed == Some(name) {
        tracing::debug!("failpoint {name} reached: killing self");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        // SIGKILL cannot be caught; if delivery were delayed, never continue.
        std::process::abort();
    }
}

/// Without the `fault-injection` feature: nothing.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn hit(_name: &str) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut all: Vec<&str> = EVERY.iter().flat_map(|l| l.iter().copied()).collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "a failpoint name is used twice");
    }

    /// A build without the feature ignores the variable: reaching the
    /// armed point must not kill the test process.
    #[cfg(not(feature = "fault-injection"))]
    #[test]
    fn without_the_feature_the_variable_is_ignored() {
        std::env::set_var(ENV, TXN_AFTER_SYNC);
        hit(TXN_AFTER_SYNC);
        const { assert!(!ENABLED) };
    }
}
