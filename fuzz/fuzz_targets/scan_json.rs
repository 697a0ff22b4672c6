//! Any text through the validating JSON scanner and the object walker.
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| {
    rankline_merge::fuzzing::scan_json(text);
});
