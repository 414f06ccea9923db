//! libFuzzer entry point of the `wire_header` target (the target itself is kv_fuzz's, shared
//! with the stable driver).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| (kv_fuzz::targets::by_name("wire_header")
    .expect("a target")
    .run)(data));
