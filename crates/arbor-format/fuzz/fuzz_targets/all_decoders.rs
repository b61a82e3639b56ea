//! Fuzz target: every decoder and normal_form::check via fuzzing::run_all_decoders.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    arbor_format::fuzzing::run_all_decoders(data);
});
