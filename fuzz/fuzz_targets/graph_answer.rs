#![no_main]
//! See `fwdwatch_fuzz::graph_answer`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fwdwatch_fuzz::graph_answer(data));
