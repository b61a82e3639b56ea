//! Fuzz target: DirTree::decode, then decode(encode(x)) == x.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = arbor_format::DirTree::decode(data) {
        let enc = t.encode();
        assert_eq!(enc, data);
        assert_eq!(arbor_format::DirTree::decode(&enc).unwrap(), t);
    }
});
