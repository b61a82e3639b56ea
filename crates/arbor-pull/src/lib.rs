//! Pulling OSTree repositories over HTTP(S) (and `file://`), verifying
//! every object before it is stored.
#![warn(missing_docs)]

pub mod fetcher;
pub mod pull;

pub use fetcher::{FetchOptions, Fetcher};
pub use pull::{pull, pull_local, PullLocalOptions, PullOptions, PullStats};
