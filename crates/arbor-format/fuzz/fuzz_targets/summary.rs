//! Fuzz target: Summary::decode, then decode(encode(x)) == x.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = arbor_format::Summary::decode(data) {
        let enc = s.encode();
        assert_eq!(enc, data);
        assert_eq!(arbor_format::Summary::decode(&enc).unwrap(), s);
    }
});
