//! XSpace / XPlane, the JAX profiler's complete record (`*.xplane.pb`).
//!
//! [`messages`] holds prost definitions written from the field numbers in
//! `shared/docs/FORMATS.md`. [`wire`] is a small streaming protobuf field
//! reader, so callers can walk a 500 MB file plane by plane and skip what
//! they do not need; [`read_profile_times`] uses it to find the session's
//! absolute time base without decoding the big planes. [`stream`] reads a
//! file's events plane by plane and line by line ([`XSpaceFile`]);
//! [`encode`] writes XSpaces the same way, and [`synth`] generates
//! realistic ones of any size.

pub mod encode;
pub mod messages;
pub mod stream;
pub mod synth;
pub mod wire;

mod time_base;

pub use messages::{XEvent, XEventMetadata, XLine, XPlane, XSpace, XStat, XStatMetadata};
pub use stream::{
    ByteRange, EventKind, EventMetadata, EventView, LineView, PlaneIndex, PlaneMetadata,
    SpaceIndex, StatValue, StatView, XSpaceFile,
};
pub use time_base::{
    line_start_unix_ns, read_profile_times, ProfileTimes, RELATIVE_LINE_TIMESTAMP_BELOW_NS,
    TASK_ENVIRONMENT_PLANE,
};

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
