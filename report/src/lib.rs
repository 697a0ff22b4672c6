//! `rankline report`: why is this step slow, and on which rank. Reads a
//! capture as `rankline merge` does (same inputs, rank discovery, time bases
//! and clock alignment, [`rankline_merge::prepare`]), one rank at a time on a
//! bounded pool, and sums it up per rank (device busy and idle, steps,
//! compute/communication overlap), per stage (step-time percentiles), per op
//! (device time and its spread over ranks) and per collective instance
//! (arrival skew, the straggler, the wait charged to the early ranks).
//!
//! [`Report`] serializes as the `--json` output; [`html::render`] draws it as
//! one self-contained page; [`diff`] compares two.
//!
//! ```no_run
//! use rankline_merge::MergeOptions;
//! let report = rankline_report::build(&MergeOptions::new(vec!["captures/cap1".into()], ""))?;
//! std::fs::write("report.html", rankline_report::html::render(&report))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod category;
mod collectives;
pub mod diff;
pub mod html;
mod intervals;
mod rank;
mod text;

use std::collections::BTreeMap;

use rankline_merge::{prepare, MergeError, MergeOptions};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tracing::debug;

pub use category::of as op_category;
pub use intervals::percentile;

/// The version of the JSON layout.
pub const REPORT_VERSION: u32 = 1;

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Merge(#[from] MergeError),
    #[error("{0}")]
    Input(#[from] rankline_merge::InputError),
    #[error("cannot start {jobs} worker threads: {source}")]
    Pool {
        jobs: usize,
        source: rayon::ThreadPoolBuildError,
    },
}

/// A whole capture in figures (the `--json` output).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub version: u32,
    pub inputs: Vec<String>,
    /// The capture's start on the merged clock: step and window instants
    /// are epoch ns on that clock too.
    pub origin_unix_ns: i64,
    pub ranks: Vec<RankReport>,
    /// Step-time percentiles per stage, over every rank.
    pub stages: Vec<StageStats>,
    /// Every op by total device time (host-only ranks: their busiest
    /// thread's slices), largest first.
    pub top_ops: Vec<OpReport>,
    pub categories: Vec<CategoryReport>,
    pub collectives: CollectivesReport,
    /// Prefill workers, decode workers (and unified servers) side by side.
    pub roles: Vec<RoleReport>,
    pub warnings: Vec<String>,
}

/// One rank's figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RankReport {
    pub rank: String,
    pub name: String,
    pub role: String,
    pub worker: u32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub host: Option<String>,
    /// `xplane` or `json`: the file read.
    pub source: String,
    pub file: String,
    /// `device`, or `host thread <name>` for a rank without device slices.
    pub busy_basis: String,
    /// First slice start and last slice end of the rank (epoch ns).
    pub window_start_ns: i64,
    pub window_end_ns: i64,
    /// The union of the busy track(s)' slices inside the window.
    pub busy_ns: i64,
    pub busy_fraction: f64,
    pub idle_fraction: f64,
    /// Idle while a step runs: the device waits for the host.
    pub idle_in_steps_ns: i64,
    /// Idle outside every step: nothing to do.
    pub idle_between_steps_ns: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub compute_ns: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub comm_ns: Option<i64>,
    /// Compute and collectives at the same time.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub overlap_ns: Option<i64>,
    /// `overlap_ns / comm_ns`: how much communication is hidden.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub overlap_fraction: Option<f64>,
    /// Which events the steps are.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub step_source: Option<String>,
    pub steps: Vec<Step>,
}

/// One step of one rank.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Step {
    /// Its `step_num`, else its position.
    pub index: u64,
    pub name: String,
    /// `prefill`, `decode`, `mixed`, `idle`, or `step` when nothing says.
    pub stage: String,
    pub start_ns: i64,
    pub end_ns: i64,
}

impl Step {
    pub fn dur_ns(&self) -> i64 {
        self.end_ns - self.start_ns
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageStats {
    pub stage: String,
    pub count: u64,
    pub p50_ns: i64,
    pub p90_ns: i64,
    pub p99_ns: i64,
    pub mean_ns: i64,
    pub max_ns: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OpReport {
    pub name: String,
    pub category: String,
    pub total_ns: i64,
    pub count: u64,
    /// Total per rank label (ranks without it are absent).
    pub per_rank: BTreeMap<String, i64>,
    /// The largest and smallest per-rank total (0 when a rank lacks it).
    pub max_ns: i64,
    pub min_ns: i64,
    /// The largest per-rank total over the mean over all ranks: 1 when
    /// balanced, the rank count when one rank does it all.
    pub imbalance: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CategoryReport {
    pub category: String,
    pub total_ns: i64,
    pub count: u64,
    /// Of the total op time.
    pub fraction: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CollectivesReport {
    /// Collective instances matched on two or more ranks of a server.
    pub matched: u64,
    /// Per rank: instances it arrived at last.
    pub straggler_counts: BTreeMap<String, u64>,
    /// Per rank: the sum of (last arrival - its arrival) over instances.
    pub wait_charged_ns: BTreeMap<String, i64>,
    /// Per rank: the sum of (its arrival - first arrival) over instances:
    /// how much it held the others up. Being last by a hair counts as a
    /// straggler instance but adds little here.
    pub lateness_ns: BTreeMap<String, i64>,
    pub skew_p50_ns: i64,
    pub skew_p90_ns: i64,
    pub skew_p99_ns: i64,
    pub skew_max_ns: i64,
    /// Per server: how late each rank arrived, step by step.
    pub heatmaps: Vec<Heatmap>,
}

/// Columns are the steps of the server's first rank with steps; an instance
/// belongs to the step its first arrival falls in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Heatmap {
    pub server: String,
    pub ranks: Vec<String>,
    pub steps: Vec<u64>,
    /// `[rank][step]`: the sum of (arrival - first arrival), ns.
    pub lateness_ns: Vec<Vec<i64>>,
    /// `[rank][step]`: instances it arrived at last.
    pub stragglers: Vec<Vec<u32>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RoleReport {
    pub role: String,
    pub ranks: u64,
    pub busy_fraction_mean: f64,
    pub steps: u64,
    pub step_p50_ns: i64,
    pub step_p90_ns: i64,
    pub step_p99_ns: i64,
    /// Its five largest ops, total ns.
    pub top_ops: Vec<(String, i64)>,
}

/// Reads the ranks of `options` (as `rankline merge` would; the output path
/// is not used) and sums them up.
pub fn build(options: &MergeOptions) -> Result<Report, ReportError> {
    let prepared = prepare(options)?;
    let jobs = options
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .thread_name(|i| format!("report-{i}"))
        .build()
        .map_err(|source| ReportError::Pool { jobs, source })?;
    let results: Vec<_> = pool.install(|| prepared.ranks.par_iter().map(rank::read).collect());
    let mut warnings = prepared.warnings.clone();
    warnings.extend(prepared.skipped.iter().map(|s| {
        format!(
            "skipped {}: {}",
            s.rank.as_deref().unwrap_or("an input"),
            s.error
        )
    }));
    warnings.extend(
        prepared
            .missing
            .iter()
            .map(|m| format!("{}: missing from the inputs ({})", m.rank, m.reason)),
    );
    let mut facts = Vec::with_capacity(results.len());
    for (rank, result) in prepared.ranks.iter().zip(results) {
        match result {
            Ok(f) => facts.push(f),
            Err(error) if options.keep_going => {
                warnings.push(format!("skipped {}: {error}", rank.label()))
            }
            Err(error) => return Err(error.into()),
        }
    }
    debug!(ranks = facts.len(), "ranks read");
    Ok(summarize(
        options.inputs.clone(),
        prepared.origin_unix_ns,
        facts,
        warnings,
    ))
}

fn summarize(
    inputs: Vec<String>,
    origin_unix_ns: i64,
    facts: Vec<rank::RankFacts>,
    mut warnings: Vec<String>,
) -> Report {
    for f in &facts {
        if let Some(thread) = &f.host_thread {
            warnings.push(format!(
                "{}: no device slices in its trace: busy/idle and ops are of its busiest host \
                 thread ({thread})",
                f.label
            ));
        }
        if f.steps.is_empty() {
            warnings.push(format!(
                "{}: no steps found (no step[...] events, step_num annotations or device Steps \
                 line)",
                f.label
            ));
        }
    }
    let collectives = collectives::matched(&facts);
    let ranks: Vec<RankReport> = facts.iter().map(rank_report).collect();
    let all_steps: Vec<&Step> = ranks.iter().flat_map(|r| &r.steps).collect();
    let stages = stage_stats(&all_steps);
    let top_ops = op_reports(&facts);
    let categories = category_reports(&top_ops);
    let roles = role_reports(&ranks, &facts);
    Report {
        version: REPORT_VERSION,
        inputs,
        origin_unix_ns,
        ranks,
        stages,
        top_ops,
        categories,
        collectives,
        roles,
        warnings,
    }
}

fn rank_report(f: &rank::RankFacts) -> RankReport {
    let (start, end) = f.window.unwrap_or((0, 0));
    let window = (end - start).max(0);
    let fraction = |ns: i64| {
        if window > 0 {
            ns as f64 / window as f64
        } else {
            0.0
        }
    };
    let idle = window - f.busy_ns;
    RankReport {
        rank: f.label.clone(),
        name: f.display_name.clone(),
        role: f.role_word().to_string(),
        worker: f.worker,
        host: f.host.clone(),
        source: f.source.to_string(),
        file: f.file.clone(),
        busy_basis: match &f.host_thread {
            None => "device".into(),
            Some(thread) => format!("host thread {thread}"),
        },
        window_start_ns: start,
        window_end_ns: end,
        busy_ns: f.busy_ns,
        busy_fraction: fraction(f.busy_ns),
        idle_fraction: fraction(idle),
        idle_in_steps_ns: f.idle_in_steps_ns,
        idle_between_steps_ns: idle - f.idle_in_steps_ns,
        compute_ns: f.compute_ns,
        comm_ns: f.comm_ns,
        overlap_ns: f.overlap_ns,
        overlap_fraction: f.overlap_ns.zip(f.comm_ns).map(|(o, c)| {
            if c > 0 {
                o as f64 / c as f64
            } else {
                0.0
            }
        }),
        step_source: f.step_source.clone(),
        steps: f.steps.clone(),
    }
}

/// Percentiles of step durations per stage, stages in first-seen order.
pub fn stage_stats(steps: &[&Step]) -> Vec<StageStats> {
    let mut by_stage: Vec<(String, Vec<i64>)> = Vec::new();
    for step in steps {
        match by_stage.iter_mut().find(|(s, _)| *s == step.stage) {
            Some((_, durations)) => durations.push(step.dur_ns()),
            None => by_stage.push((step.stage.clone(), vec![step.dur_ns()])),
        }
    }
    by_stage
        .into_iter()
        .map(|(stage, mut durations)| {
            durations.sort_unstable();
            let total: i64 = durations.iter().sum();
            StageStats {
                stage,
                count: durations.len() as u64,
                p50_ns: percentile(&durations, 50),
                p90_ns: percentile(&durations, 90),
                p99_ns: percentile(&durations, 99),
                mean_ns: total / durations.len() as i64,
                max_ns: *durations.last().unwrap_or(&0),
            }
        })
        .collect()
}

fn op_reports(facts: &[rank::RankFacts]) -> Vec<OpReport> {
    let mut ops: BTreeMap<&str, OpReport> = BTreeMap::new();
    for f in facts {
        for (name, total) in &f.ops {
            let op = ops.entry(name).or_insert_with(|| OpReport {
                name: name.to_string(),
                category: total.category.to_string(),
                total_ns: 0,
                count: 0,
                per_rank: BTreeMap::new(),
                max_ns: 0,
                min_ns: 0,
                imbalance: 0.0,
            });
            op.total_ns += total.total_ns;
            op.count += total.count;
            *op.per_rank.entry(f.label.clone()).or_default() += total.total_ns;
        }
    }
    let mut ops: Vec<OpReport> = ops.into_values().collect();
    for op in &mut ops {
        op.max_ns = op.per_rank.values().copied().max().unwrap_or(0);
        op.min_ns = if op.per_rank.len() < facts.len() {
            0
        } else {
            op.per_rank.values().copied().min().unwrap_or(0)
        };
        let mean = op.total_ns as f64 / facts.len().max(1) as f64;
        op.imbalance = if mean > 0.0 {
            op.max_ns as f64 / mean
        } else {
            0.0
        };
    }
    ops.sort_by(|a, b| {
        b.total_ns
            .cmp(&a.total_ns)
            .then_with(|| a.name.cmp(&b.name))
    });
    ops
}

fn category_reports(ops: &[OpReport]) -> Vec<CategoryReport> {
    let mut by: BTreeMap<&str, (i64, u64)> = BTreeMap::new();
    for op in ops {
        let entry = by.entry(&op.category).or_default();
        entry.0 += op.total_ns;
        entry.1 += op.count;
    }
    let all: i64 = by.values().map(|v| v.0).sum();
    let mut out: Vec<CategoryReport> = by
        .into_iter()
        .map(|(category, (total_ns, count))| CategoryReport {
            category: category.to_string(),
            total_ns,
            count,
            fraction: if all > 0 {
                total_ns as f64 / all as f64
            } else {
                0.0
            },
        })
        .collect();
    out.sort_by_key(|c| std::cmp::Reverse(c.total_ns));
    out
}

fn role_reports(ranks: &[RankReport], facts: &[rank::RankFacts]) -> Vec<RoleReport> {
    let mut roles: Vec<&str> = ranks.iter().map(|r| r.role.as_str()).collect();
    roles.dedup();
    roles.sort();
    roles.dedup();
    roles
        .into_iter()
        .map(|role| {
            let members: Vec<usize> = (0..ranks.len())
                .filter(|&i| ranks[i].role == role)
                .collect();
            let mut durations: Vec<i64> = members
                .iter()
                .flat_map(|&i| ranks[i].steps.iter().map(Step::dur_ns))
                .collect();
            durations.sort_unstable();
            let mut ops: BTreeMap<&str, i64> = BTreeMap::new();
            for &i in &members {
                for (name, total) in &facts[i].ops {
                    *ops.entry(name).or_default() += total.total_ns;
                }
            }
            let mut ops: Vec<(String, i64)> =
                ops.into_iter().map(|(n, t)| (n.to_string(), t)).collect();
            ops.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            ops.truncate(5);
            RoleReport {
                role: role.to_string(),
                ranks: members.len() as u64,
                busy_fraction_mean: members.iter().map(|&i| ranks[i].busy_fraction).sum::<f64>()
                    / members.len() as f64,
                steps: durations.len() as u64,
                step_p50_ns: percentile(&durations, 50),
                step_p90_ns: percentile(&durations, 90),
                step_p99_ns: percentile(&durations, 99),
                top_ops: ops,
            }
        })
        .collect()
}
