//! Fuzz target: Metadata::decode (a{sv}), then decode(encode(x)) == x.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = arbor_format::Metadata::decode(data) {
        let enc = m.encode();
        assert_eq!(enc, data);
        assert_eq!(arbor_format::Metadata::decode(&enc).unwrap(), m);
    }
});
