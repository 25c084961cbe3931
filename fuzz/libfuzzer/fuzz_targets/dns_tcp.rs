#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hivemind_fuzz::run("dns_tcp", data));
