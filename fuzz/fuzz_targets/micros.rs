//! Any text as microseconds: never a panic, and exact round trips.
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| {
    rankline_merge::fuzzing::micros_round_trip(text);
});
