//! Unit tests of the extension engine (H1).
