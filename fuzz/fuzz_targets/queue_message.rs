#![no_main]
//! See `fwdwatch_fuzz::queue_message`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fwdwatch_fuzz::queue_message(data));
