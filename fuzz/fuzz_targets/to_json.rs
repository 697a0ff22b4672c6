//! Any bytes through the reader and the Chrome JSON writer of one rank.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rankline_merge::fuzzing::to_json(data);
});
