//! Any bytes as an `.xplane.pb`: the streaming reader, one rank's `.pftrace`
//! conversion, and the Chrome-element view.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rankline_merge::fuzzing::xplane_to_pftrace(data);
    rankline_merge::fuzzing::xplane_elements(data);
});
