#![no_main]
//! See `fwdwatch_fuzz::slack_interaction`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fwdwatch_fuzz::slack_interaction(data));
