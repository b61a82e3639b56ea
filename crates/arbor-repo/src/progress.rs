//! Progress reporting: the library reports, the CLI draws.

/// Receives progress of a long operation. Implementations must be cheap:
/// `inc` is called once per object from several threads.
pub trait Progress: Sync {
    /// Announces a new phase with the number of items it will process
    /// (0 when unknown).
    fn start(&self, phase: &str, total: u64);
    /// `n` more items done.
    fn inc(&self, n: u64);
    /// The phase is over.
    fn finish(&self);
    /// The total grew or became known (a pull discovers objects as it goes).
    fn set_total(&self, _total: u64) {}
    /// `n` more bytes transferred (shown as a byte count and rate).
    fn inc_bytes(&self, _n: u64) {}
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullProgress;

impl Progress for NullProgress {
    fn start(&self, _phase: &str, _total: u64) {}
    fn inc(&self, _n: u64) {}
    fn finish(&self) {}
}
