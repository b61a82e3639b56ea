//! Pulling OSTree repositories over HTTP(S).
#![warn(missing_docs)]
