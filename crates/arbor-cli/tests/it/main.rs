//! Integration tests driving the built `arbor` binary, with the real
//! `ostree` as the interoperability peer.

mod util;
