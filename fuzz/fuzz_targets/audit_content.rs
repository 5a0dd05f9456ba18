#![no_main]
//! See `fwdwatch_fuzz::audit_content`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fwdwatch_fuzz::audit_content(data));
