//! Nothing here: this package holds the `vm` test target
//! (`cargo test -p arbor-vmtest --test vm`), which builds a Debian OS tree
//! with `dist/os/mkdebian.sh`, makes disk images with `arbor image build`
//! and boots them in QEMU. See `tests/vm/main.rs`.
