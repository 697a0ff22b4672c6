//! What a merge did, for people (`render`) and for programs (serde, `--json`).

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use crate::events::RankStats;
use crate::input::discover::MissingRank;
use crate::input::source::SourceKind;
use crate::options::{AlignMode, OutputFormat, Stage};
use rankline_units::{duration, offset, OFFSET_HEADING};

use crate::time::align::{RankRefinement, RefineOutcome};
use crate::time::timebase::{BaseSource, ClockStatus};

/// The result of [`crate::merge`].
#[derive(Debug, Clone, Serialize)]
pub struct MergeSummary {
    /// `None` when a diagnostic `stop_after` stage wrote nothing.
    pub output: Option<PathBuf>,
    pub format: OutputFormat,
    pub bytes_written: u64,
    pub elapsed_ms: u64,
    pub align: AlignMode,
    /// Merged-clock epoch ns the summary's relative times (and the JSON
    /// output's `ts`) count from: the capture start, else the earliest rank
    /// time base.
    pub origin_unix_ns: i64,
    /// The kept window on the merged clock, when `--window` was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_unix_ns: Option<(i64, i64)>,
    pub ranks: Vec<RankSummary>,
    /// Inputs or ranks that could not be read (with `--keep-going`).
    pub skipped: Vec<SkippedRank>,
    /// Ranks the manifest lists with nothing to merge.
    pub missing: Vec<MissingRank>,
    /// Ranks left out by `--ranks` / `--roles`.
    pub filtered_out: Vec<String>,
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_after: Option<Stage>,
    /// What `--max-size` cut to make the output fit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_fit: Option<crate::SizeFit>,
}

/// One merged rank.
#[derive(Debug, Clone, Serialize)]
pub struct RankSummary {
    /// Short label (`prefill-0/TP-1-EP-0`).
    pub rank: String,
    /// Its process name in the output.
    pub name: String,
    /// The file it was read from.
    pub trace: String,
    /// Whether that is its `.xplane.pb` or its Chrome JSON trace.
    pub source: SourceKind,
    pub time_base: BaseSource,
    /// Host-clock epoch ns of the trace's `ts = 0`.
    pub time_base_unix_ns: i64,
    pub clock: ClockStatus,
    /// What the clock fit moved the rank by (merged minus host), ns.
    pub clock_shift_ns: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_error_bound_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_drift_ppm: Option<f64>,
    /// What `--align collectives` did with the rank.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collectives: Option<crate::RankRefinement>,
    #[serde(flatten)]
    pub stats: RankStats,
}

/// A rank or input left out because it could not be read.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedRank {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rank: Option<String>,
    pub error: String,
}

impl MergeSummary {
    /// Whether everything asked for was merged (no skipped or missing rank).
    pub fn complete(&self) -> bool {
        self.skipped.is_empty() && self.missing.is_empty()
    }

    /// A few lines for a terminal.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let seconds = self.elapsed_ms as f64 / 1000.0;
        match (&self.output, self.stopped_after) {
            (_, Some(stage)) => {
                let bytes: u64 = self.ranks.iter().map(|r| r.stats.bytes_read).sum();
                let _ = writeln!(
                    out,
                    "stopped after {stage:?} (diagnostic): {} ranks, {} decompressed, {seconds:.2} s",
                    self.ranks.len(),
                    rankline_units::bytes(bytes),
                );
            }
            (Some(path), None) => {
                let _ = writeln!(
                    out,
                    "merged {} rank{} into {} ({}) in {seconds:.2} s, align: {}",
                    self.ranks.len(),
                    if self.ranks.len() == 1 { "" } else { "s" },
                    path.display(),
                    rankline_units::bytes(self.bytes_written),
                    match self.align {
                        AlignMode::Clock => "clock",
                        AlignMode::None => "none",
                        AlignMode::Collectives => "collectives",
                    }
                );
            }
            (None, None) => {}
        }
        if !self.ranks.is_empty() {
            let width = rank_column_width(self.ranks.iter().map(|r| r.rank.as_str()));
            let _ = writeln!(
                out,
                "  {:width$}  {:<6}  {:>9}  {:>9}  {:>8}  {:<37} {:<27} span after origin",
                "rank", "source", "events in", "out", "dropped", "time base", OFFSET_HEADING
            );
            for rank in &self.ranks {
                let clock = match rank.clock {
                    ClockStatus::Applied => rankline_units::offset(-rank.clock_shift_ns),
                    ClockStatus::Disabled => "off (--align none)".into(),
                    ClockStatus::NotMeasured => "not measured".into(),
                    ClockStatus::Implausible => "ignored (implausible)".into(),
                };
                let span = match (rank.stats.first_ns, rank.stats.last_ns) {
                    (Some(first), Some(last)) => format!(
                        "{:.3} .. {:.3} ms",
                        (first - self.origin_unix_ns) as f64 / 1e6,
                        (last - self.origin_unix_ns) as f64 / 1e6
                    ),
                    _ => "no events".into(),
                };
                let source = match rank.source {
                    SourceKind::Json => "json",
                    SourceKind::Xplane => "xplane",
                };
                let _ = writeln!(
                    out,
                    "  {:width$}  {source:<6}  {:>9}  {:>9}  {:>8}  {:<37} {:<27} {span}",
                    rank.rank,
                    rank.stats.events_in,
                    rank.stats.events_out,
                    rank.stats.dropped_total(),
                    rank.time_base.describe(),
                    clock,
                );
            }
            for rank in &self.ranks {
                if let Some(x) = &rank.stats.xplane {
                    let _ = writeln!(
                        out,
                        "  {} xplane: {}, {}, {} ({} skipped)",
                        rank.rank,
                        counted(x.planes, "plane"),
                        counted(x.lines, "line"),
                        counted(x.events, "event"),
                        counted(x.aggregated, "aggregated event"),
                    );
                }
            }
            for rank in &self.ranks {
                if rank.stats.dropped.is_empty() {
                    continue;
                }
                let reasons: Vec<String> = rank
                    .stats
                    .dropped
                    .iter()
                    .map(|(why, n)| format!("{n} {why}"))
                    .collect();
                let _ = writeln!(out, "  {} dropped: {}", rank.rank, reasons.join(", "));
            }
        }
        if let Some(fit) = &self.size_fit {
            fit.render(self.origin_unix_ns, &mut out);
        }
        render_refinement(self, &mut out);
        for skipped in &self.skipped {
            let _ = writeln!(
                out,
                "skipped{}: {}",
                skipped
                    .rank
                    .as_deref()
                    .map(|r| format!(" {r}"))
                    .unwrap_or_default(),
                skipped.error
            );
        }
        for missing in &self.missing {
            let _ = writeln!(out, "missing {}: {}", missing.rank, missing.reason);
        }
        if !self.filtered_out.is_empty() {
            let _ = writeln!(
                out,
                "left out by --ranks/--roles: {}",
                self.filtered_out.join(", ")
            );
        }
        for warning in &self.warnings {
            let _ = writeln!(out, "warning: {warning}");
        }
        if let (Some(path), None) = (&self.output, self.stopped_after) {
            let how = match self.format {
                OutputFormat::Pftrace | OutputFormat::Zip => format!(
                    "open it at https://ui.perfetto.dev (Open trace file), or query it with `trace_processor {}`",
                    path.display()
                ),
                OutputFormat::Json | OutputFormat::JsonGz => format!(
                    "open it at https://ui.perfetto.dev or chrome://tracing ({} is Chrome JSON: .pftrace loads faster)",
                    path.display()
                ),
            };
            let _ = writeln!(out, "{how}");
        }
        out
    }
}

/// `1 plane`, `3 planes`.
fn counted(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// The refinement table of the people's summary.
fn render_refinement(summary: &MergeSummary, out: &mut String) {
    let rows: Vec<(&RankSummary, &RankRefinement)> = summary
        .ranks
        .iter()
        .filter_map(|rank| Some((rank, rank.collectives.as_ref()?)))
        .collect();
    if rows.is_empty() {
        return;
    }
    let width = rank_column_width(rows.iter().map(|(r, _)| r.rank.as_str()));
    let _ = writeln!(
        out,
        "collective refinement (per server, against the rank with the tightest clock bound; \
         spread: median deviation of single collectives from the residual):"
    );
    let _ = writeln!(
        out,
        "  {:width$}  {:>7}  {:>27}  {:>11}  {:>9}  {:>11}  {:>10}  {:>11}  {:>11}  outcome",
        "rank",
        "matched",
        OFFSET_HEADING,
        "bound",
        "drift",
        "residual",
        "spread",
        "applied",
        "after"
    );
    for (rank, r) in rows {
        let clock_offset = match rank.clock {
            ClockStatus::Applied => offset(-rank.clock_shift_ns),
            _ => "-".into(),
        };
        let optional = |v: Option<i64>| v.map(offset).unwrap_or_else(|| "-".into());
        let outcome = match r.outcome {
            RefineOutcome::Reference => "reference".to_string(),
            RefineOutcome::Applied => "applied".into(),
            RefineOutcome::OutsideBound => format!(
                "kept clock: outside ±{}",
                duration(r.allowance_ns.unwrap_or(0) as i64)
            ),
            RefineOutcome::Unmeasured => "kept clock: no clock bound to check".into(),
            RefineOutcome::SameClock => "kept: same host clock as the reference".into(),
            RefineOutcome::NoCollectives => "no collectives".into(),
            RefineOutcome::NothingInCommon => "none in common with the reference".into(),
        };
        let _ = writeln!(
            out,
            "  {:width$}  {:>7}  {:>27}  {:>11}  {:>9}  {:>11}  {:>10}  {:>11}  {:>11}  {outcome}",
            rank.rank,
            r.matched,
            clock_offset,
            r.clock_bound_ns
                .map(|b| format!("±{}", duration(b as i64)))
                .unwrap_or_else(|| "-".into()),
            rank.clock_drift_ppm
                .map(|d| format!("{d:+.1}ppm"))
                .unwrap_or_else(|| "-".into()),
            optional(r.residual_before_ns),
            r.spread_ns
                .map(|v| format!("±{}", duration(v as i64)))
                .unwrap_or_else(|| "-".into()),
            offset(r.refinement_ns),
            optional(r.residual_after_ns),
        );
    }
}

/// The width of a text table's rank column: the longest rank name, and at
/// least the heading `rank`.
pub fn rank_column_width<'a>(names: impl IntoIterator<Item = &'a str>) -> usize {
    names.into_iter().map(str::len).max().unwrap_or(0).max(4)
}
