//! Locking the mutexes that parallel (rayon, worker-thread) tasks share.
//!
//! A poisoned mutex means another task panicked while holding it. The
//! operation is then failed with an error, not a second panic: the caller
//! (an update agent, say) gets an error it can report, and the panic
//! itself is reported by the thread that had it.

use std::sync::{Mutex, MutexGuard};

use anyhow::{anyhow, Result};

/// Locks `m`; an error naming `what` if a task panicked while holding it.
pub fn lock<'a, T>(m: &'a Mutex<T>, what: &str) -> Result<MutexGuard<'a, T>> {
    m.lock()
        .map_err(|_| anyhow!("A parallel task panicked while updating {what}"))
}

/// Locks `m` even if poisoned, where the caller is already returning an
/// error (a cleanup path) or only collects into it (fsck's error list):
/// the data guarded is a plain set, map or list that a panic cannot leave
/// half-updated, and the panic itself is reported by the thread that had
/// it (rayon re-raises it in the caller).
pub fn lock_recovering<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_mutex_is_an_error() {
        let m = Mutex::new(1);
        drop(lock(&m, "the counter").unwrap());
        let _ = std::thread::scope(|s| {
            s.spawn(|| {
                let _g = m.lock().unwrap();
                panic!("worker fails");
            })
            .join()
        });
        let e = lock(&m, "the counter").unwrap_err();
        assert!(format!("{e}").contains("the counter"), "{e}");
        assert_eq!(*lock_recovering(&m), 1);
    }
}
