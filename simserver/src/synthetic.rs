//! Big, realistic ranks written without a live server, for benchmarks: the
//! same layout and writers as the live server, fed with a synthetic step
//! schedule instead of recorded steps.
//!
//! Ranks of one synthetic capture share the true instant of their first
//! collective end (`first_collective_end_unix_ns`) and the step period, so
//! their collectives end together in true time; `clock_offset_ns` then shifts
//! everything a rank writes, as a skewed host clock (or `faketime`) would.

use std::path::{Path, PathBuf};

use crate::trace::plan::{Jitter, SOLO_COLLECTIVE_NS};
use crate::trace::{
    create_dir, jax_run_dir, write_jax_session, write_kineto_session, JaxFiles, KinetoRank,
    Session, StepRecord, TraceShape, WriteOptions,
};
use crate::SimError;

/// One synthetic rank.
#[derive(Debug, Clone)]
pub struct SyntheticRank {
    /// Names the JAX files.
    pub hostname: String,
    /// `profile_start_time` on this rank's clock (epoch ns).
    pub profile_start_unix_ns: i64,
    /// About how many events to write (the step count follows from it).
    pub events: usize,
    /// Varies durations and collective waits between ranks.
    pub rank: u32,
    /// This rank's clock minus true time.
    pub clock_offset_ns: i64,
    /// True time of the first step's first collective end, shared by all
    /// ranks of a capture; `None` puts it one step after this rank's start.
    pub first_collective_end_unix_ns: Option<i64>,
    pub shape: TraceShape,
    /// Injected straggler: this rank reaches every step's first collective
    /// last (it waits less than any rank without the flag can).
    pub straggler: bool,
    /// Injected idle time: after step `k` (1-based), `n` step periods pass
    /// with no step. Give every rank of a capture the same gaps.
    pub idle_gaps: Vec<(u64, u32)>,
}

impl SyntheticRank {
    /// A rank with the default shape (gzip level 1, for speed).
    pub fn new(
        hostname: &str,
        profile_start_unix_ns: i64,
        events: usize,
        rank: u32,
    ) -> SyntheticRank {
        SyntheticRank {
            hostname: hostname.to_string(),
            profile_start_unix_ns,
            events,
            rank,
            clock_offset_ns: 0,
            first_collective_end_unix_ns: None,
            straggler: false,
            idle_gaps: Vec::new(),
            shape: TraceShape {
                jitter_seed: u64::from(rank).wrapping_mul(0x2545_f491_4f6c_dd1d),
                gzip_level: 1,
                ..TraceShape::default()
            },
        }
    }

    /// The session this rank would have recorded.
    pub fn session(&self) -> Session {
        let step_ns = self.shape.step_ns.max(100_000);
        let steps = self
            .events
            .div_ceil(self.shape.events_per_step.max(1))
            .max(1);
        let true_start = self.profile_start_unix_ns - self.clock_offset_ns;
        let first_end = self
            .first_collective_end_unix_ns
            .unwrap_or(true_start + step_ns);
        let mut jitter = Jitter::new(self.shape.jitter_seed, 0, u64::from(self.rank));
        let steps: Vec<StepRecord> = (0..steps as u64)
            .map(|k| {
                let skipped: i64 = self
                    .idle_gaps
                    .iter()
                    .filter(|(after, _)| *after <= k)
                    .map(|(_, n)| i64::from(*n))
                    .sum();
                let release = first_end + (k as i64 + skipped) * step_ns;
                let wait = if self.straggler {
                    SOLO_COLLECTIVE_NS / 2
                } else {
                    SOLO_COLLECTIVE_NS + jitter.below(step_ns / 30)
                };
                StepRecord {
                    step_num: k + 1,
                    round: k + 1,
                    arrive_unix_ns: release - wait + self.clock_offset_ns,
                    release_unix_ns: release + self.clock_offset_ns,
                    batch_size: 0,
                }
            })
            .collect();
        let last_release = steps
            .last()
            .map_or(self.profile_start_unix_ns, |s| s.release_unix_ns);
        Session {
            profile_start_unix_ns: self.profile_start_unix_ns,
            profile_stop_unix_ns: last_release + step_ns / 2,
            steps,
            shape: self.shape.clone(),
        }
    }
}

/// Writes the rank as JAX does: `<output_dir>/plugins/profile/<ts>/<hostname>.trace.json.gz`
/// and `<hostname>.xplane.pb`.
pub fn write_jax_rank(output_dir: &Path, spec: &SyntheticRank) -> Result<JaxFiles, SimError> {
    let session = spec.session();
    let run_dir = jax_run_dir(output_dir, session.profile_stop_unix_ns);
    write_jax_session(&run_dir, &spec.hostname, &session, &WriteOptions::default())
}

/// Writes the rank as SGLang does: `<output_dir>/<profile_id>-TP-<t>....trace.json.gz`.
pub fn write_kineto_rank(
    output_dir: &Path,
    spec: &SyntheticRank,
    rank: &KinetoRank,
    profile_id: &str,
) -> Result<PathBuf, SimError> {
    create_dir(output_dir)?;
    let session = spec.session();
    let file_name = rank.file_name(profile_id, None);
    write_kineto_session(
        output_dir,
        &file_name,
        rank,
        &session,
        &WriteOptions::default(),
    )
}
