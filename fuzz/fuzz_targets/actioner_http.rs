#![no_main]
//! See `fwdwatch_fuzz::actioner_http`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fwdwatch_fuzz::actioner_http(data));
