//! Fuzz target: FileHeader::decode_variant, then decode(encode(x)) == x.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = arbor_format::FileHeader::decode_variant(data) {
        let enc = h.encode_variant();
        assert_eq!(enc, data);
        assert_eq!(arbor_format::FileHeader::decode_variant(&enc).unwrap(), h);
    }
});
