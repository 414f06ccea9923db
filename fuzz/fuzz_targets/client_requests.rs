//! libFuzzer entry point of the `client_requests` target (the target itself is kv_fuzz's, shared
//! with the stable driver).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| (kv_fuzz::targets::by_name("client_requests")
    .expect("a target")
    .run)(data));
