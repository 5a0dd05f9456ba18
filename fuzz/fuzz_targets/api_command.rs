#![no_main]
//! See `fwdwatch_fuzz::api_command`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fwdwatch_fuzz::api_command(data));
