#![no_main]
//! See `fwdwatch_fuzz::resolve_targets`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fwdwatch_fuzz::resolve_targets(data));
