//! Trace generation, shared by the live server and the benchmark writer
//! ([`crate::synthetic`]): a [`Session`] (the recorded steps on the process's
//! wall clock) is laid out once ([`plan`]) and rendered as JAX files
//! (`<host>.trace.json.gz` + `<host>.xplane.pb`) or as a Kineto file.
//!
//! Only the instants a process really lived (profile start/stop, each step's
//! collective arrival and release) are taken from the clock; everything in
//! between is laid out from fixed proportions and a per-rank jitter, so the
//! collectives' ends are the real, shared release instants on every rank.

mod chrome;
mod jax;
mod kineto;
pub(crate) mod plan;
mod xplane_out;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::SimError;

pub use jax::{jax_run_dir, write_jax_session, JaxFiles};
pub use kineto::{python_time_string, write_kineto_files, write_kineto_session, KinetoRank};

/// One forward step as the process lived it, on its own wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepRecord {
    /// The process's forward-step counter (what `step_num` shows).
    pub step_num: u64,
    /// The collective round, the same number on every rank of a group:
    /// JAX `run_id`s and NCCL sequence numbers derive from it.
    pub round: u64,
    /// When this process reached the step's first collective (epoch ns).
    pub arrive_unix_ns: i64,
    /// When the barrier released this process: the end of the step's first
    /// collective (epoch ns), the same real instant on every rank.
    pub release_unix_ns: i64,
    /// Requests in the running batch during this step; 0 is an idle step.
    pub batch_size: u32,
}

/// How big and detailed a rendered session is.
#[derive(Debug, Clone)]
pub struct TraceShape {
    /// About how many events one step produces, over all lines.
    pub events_per_step: usize,
    /// Collectives per step (all-reduce, all-gather, reduce-scatter,
    /// all-to-all, collective-permute, then again).
    pub collectives_per_step: usize,
    /// Accelerators on the host: one `/device:TPU:<n>` plane each (JAX).
    pub local_devices: u32,
    /// JAX host tracer level, 1-3 (1: annotations only, 3: verbose).
    pub host_tracer_level: u32,
    /// Python-tracer events (`$file.py:LINE func`, Kineto `python_function`).
    pub python_tracer: bool,
    /// The nominal step period, which sizes each step's phases.
    pub step_ns: i64,
    /// Varies durations between ranks; never the collectives' ends.
    pub jitter_seed: u64,
    /// gzip level of the `trace.json.gz` (0-9).
    pub gzip_level: u32,
}

impl Default for TraceShape {
    fn default() -> Self {
        TraceShape {
            events_per_step: 1000,
            collectives_per_step: 5,
            local_devices: 1,
            host_tracer_level: 2,
            python_tracer: true,
            step_ns: 10_000_000,
            jitter_seed: 0,
            gzip_level: 6,
        }
    }
}

/// One profiling session of one process.
#[derive(Debug, Clone)]
pub struct Session {
    /// `profile_start_time`: what `ts = 0` means (epoch ns, this host's clock).
    pub profile_start_unix_ns: i64,
    pub profile_stop_unix_ns: i64,
    pub steps: Vec<StepRecord>,
    pub shape: TraceShape,
}

/// The two files of a JAX session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceFileKind {
    /// `<host>.trace.json.gz`
    TraceJson,
    /// `<host>.xplane.pb`
    Xplane,
}

/// How files reach the disk; the defaults write them whole, at once.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Leave this file out (fault injection).
    pub skip: Option<TraceFileKind>,
    /// Spread each file's writing over this long.
    pub pace: Duration,
}

/// The `run_id` of a program launch: a pure function of the collective round
/// and the launch's index in the step, so every rank gives the same launch
/// the same id (as XLA does). A collective instance is `(run_id, hlo_op)`.
pub fn collective_run_id(round: u64, launch: u32) -> i64 {
    let mixed = plan::splitmix64(round.wrapping_mul(8).wrapping_add(u64::from(launch)) ^ 0x5eed);
    i64::from(mixed as u32 as i32)
}

/// A number or an interned string attached to an event.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StatValue<'a> {
    Int(i64),
    /// An XPlane `ref_value`: the name of a stat-metadata entry.
    Ref(&'a str),
}

pub(crate) type Stat<'a> = (&'static str, StatValue<'a>);

/// Receives one line's events in start order, times as epoch ns.
pub(crate) trait EventSink {
    fn event(&mut self, name: &str, start_ns: i64, end_ns: i64, stats: &[Stat<'_>]);
}

/// Writes `bytes` to `path`, in pieces spread over `pace` when asked.
pub(crate) fn write_file(path: &Path, bytes: &[u8], pace: Duration) -> Result<(), SimError> {
    let io_error = |source| SimError::Io {
        context: format!("writing {}", path.display()),
        source,
    };
    let mut file = std::fs::File::create(path).map_err(io_error)?;
    if pace.is_zero() {
        file.write_all(bytes).map_err(io_error)?;
    } else {
        const PIECES: usize = 16;
        let piece = bytes.len().div_ceil(PIECES).max(1);
        for chunk in bytes.chunks(piece) {
            file.write_all(chunk).map_err(io_error)?;
            file.flush().map_err(io_error)?;
            std::thread::sleep(pace / PIECES as u32);
        }
    }
    file.sync_all().map_err(io_error)
}

/// Creates `dir` and its parents.
pub(crate) fn create_dir(dir: &Path) -> Result<PathBuf, SimError> {
    std::fs::create_dir_all(dir).map_err(|source| SimError::Io {
        context: format!("creating {}", dir.display()),
        source,
    })?;
    Ok(dir.to_path_buf())
}
