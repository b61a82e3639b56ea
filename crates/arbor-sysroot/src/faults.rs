//! Named crash points of sysroot operations (see
//! [`arbor_repo::failpoint`]: `ARBOR_FAILPOINT=NAME` kills the process
//! with `SIGKILL` there). Fault-injection tests enumerate [`ALL`].

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
/// so not in [`ALL`]: its own test mounts one.
pub const BOOT_FROZEN: &str = "write::boot-frozen";

/// Every sysroot crash point, in the order a deploy reaches them.
pub const ALL: &[&str] = &[
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
