//! One test binary for the crate (one link, not one per file): each module is one area's tests.

mod common;

mod azure_server;
mod gcs_server;
mod s3_server;
