//! Any bytes (plain or gzipped) through the streaming Chrome trace reader.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rankline_merge::fuzzing::read_elements(data);
});
