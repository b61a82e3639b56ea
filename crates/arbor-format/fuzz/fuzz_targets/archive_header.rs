//! Fuzz target: ArchiveHeader::decode_prefixed, then decode(encode(x)) == x.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((h, end)) = arbor_format::ArchiveHeader::decode_prefixed(data) {
        let enc = h.encode_prefixed();
        assert_eq!(Some(enc.as_slice()), data.get(..end));
        assert_eq!(
            arbor_format::ArchiveHeader::decode_prefixed(&enc).unwrap(),
            (h, end)
        );
    }
});
