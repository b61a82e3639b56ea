//! Fuzz target: Commit::decode, then decode(encode(x)) == x.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = arbor_format::Commit::decode(data) {
        let enc = c.encode();
        assert_eq!(enc, data);
        assert_eq!(arbor_format::Commit::decode(&enc).unwrap(), c);
    }
});
