//! Helpers shared by arbor's tests. A dev-dependency only: no library or
//! binary of arbor depends on it.

/// Whether this process runs as root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The one gate of every root-only check: false as root; when not root,
/// true (skip, with a note on stderr) only if `ARBOR_SKIP_ROOT_TESTS=1`,
/// otherwise it fails the test, so a non-root run cannot pass silently.
/// CI runs as root. `what` names the check in both messages.
#[track_caller]
pub fn needs_root(what: &str) -> bool {
    if is_root() {
        return false;
    }
    if std::env::var_os("ARBOR_SKIP_ROOT_TESTS").is_some_and(|v| v == "1") {
        eprintln!("NOTE: skipping {what}: not root (ARBOR_SKIP_ROOT_TESTS=1)");
        return true;
    }
    panic!("{what} needs root (CI runs as root); set ARBOR_SKIP_ROOT_TESTS=1 to skip it");
}
