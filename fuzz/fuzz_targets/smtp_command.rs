#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mxguard::fuzzing::smtp_command(data));
