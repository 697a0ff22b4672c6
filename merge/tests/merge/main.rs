//! One test binary for the crate (one link, not one per file): each module is one area's tests.

mod common;

mod align;
mod fuzz_smoke;
mod real_fixtures;
mod scale;
mod synthetic;
mod trace_processor;
mod xplane;
mod xplane_big;
