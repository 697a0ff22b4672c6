//! Any bytes through the reader and the `.pftrace` converter of one rank.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rankline_merge::fuzzing::to_pftrace(data);
});
