//! XSpace / XPlane, the JAX profiler's complete record (`*.xplane.pb`).
//!
//! [`messages`] holds prost definitions written from the field numbers in
//! `shared/docs/FORMATS.md`. [`wire`] is a small streaming protobuf field
//! reader, so callers can walk a 500 MB file plane by plane and skip what
//! they do not need; [`read_profile_times`] uses it to find the session's
//! absolute time base without decoding the big planes.

pub mod messages;
pub mod wire;

mod time_base;

pub use messages::{XEvent, XEventMetadata, XLine, XPlane, XSpace, XStat, XStatMetadata};
pub use time_base::{read_profile_times, ProfileTimes, TASK_ENVIRONMENT_PLANE};

/// Why an xplane could not be read.
#[derive(Debug, thiserror::Error)]
pub enum XplaneError {
    #[error("i/o error reading xplane: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed xplane protobuf: {0}")]
    Malformed(String),
    #[error("malformed xplane protobuf: {0}")]
    Decode(#[from] prost::DecodeError),
}
