//! One test binary for the crate (one link, not one per file): each module is one area's tests.

mod known;
mod real;
