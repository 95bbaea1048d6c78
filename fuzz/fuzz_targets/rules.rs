#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    custload::fuzzing::rules(data);
});
