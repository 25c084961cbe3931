#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hivemind_fuzz::run("snapshot_file", data));
