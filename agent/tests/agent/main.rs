//! One test binary for the crate (one link, not one per file): each module is one area's tests.

mod support;

mod capture;
mod durable;
mod link;
mod simserver;
