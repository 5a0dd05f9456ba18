#![no_main]
//! See `fwdwatch_fuzz::exchange_answer`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fwdwatch_fuzz::exchange_answer(data));
