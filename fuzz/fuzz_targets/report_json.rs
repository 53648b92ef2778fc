#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mxguard::fuzzing::report_json(data));
