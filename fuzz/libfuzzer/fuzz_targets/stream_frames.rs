#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hivemind_fuzz::run("stream_frames", data));
