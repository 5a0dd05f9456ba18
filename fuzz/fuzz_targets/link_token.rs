#![no_main]
//! See `fwdwatch_fuzz::link_token`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fwdwatch_fuzz::link_token(data));
