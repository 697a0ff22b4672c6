//! `--max-size`: a merged trace that fits where it has to be opened (a
//! browser tab holds about 1 GB of trace).
//!
//! The size of a merge's output is known only once it is written (how many
//! events a filter keeps, how well names intern), so the merge runs in
//! full first; only when that output is too big is it merged again with a
//! `--window` from the start of its events, cut to the share of the time
//! span that fits (events are assumed spread evenly over time), and again,
//! smaller, until it fits. Each extra merge costs about what the first
//! did. What was dropped to fit is in the summary ([`SizeFit`]) and in
//! each rank's dropped counts (`outside --window`).

use serde::Serialize;

use crate::options::{Instant, Window};
use crate::output::summary::MergeSummary;
use crate::{merge, MergeError, MergeOptions};

/// Merges after the first one, when the output keeps coming out too big.
const MAX_REFITS: u32 = 6;
/// Aim this far under the limit: output size is not exactly proportional
/// to the span kept.
const HEADROOM: f64 = 0.9;

/// What `--max-size` did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SizeFit {
    pub max_bytes: u64,
    /// The output's size without a cut.
    pub full_bytes: u64,
    /// Merges run (1: the full output fitted).
    pub merges: u32,
    /// The window the output was cut to (merged-clock epoch ns), if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_unix_ns: Option<(i64, i64)>,
    /// The share of the events' time span kept (1 when nothing was cut).
    pub kept_fraction: f64,
    /// Events the cut dropped (beyond what the other filters dropped).
    pub events_dropped: u64,
}

impl SizeFit {
    /// One line for the summary.
    pub(crate) fn render(&self, origin_unix_ns: i64, out: &mut String) {
        use std::fmt::Write as _;
        let limit = format!(
            "{} bytes ({})",
            self.max_bytes,
            rankline_units::bytes(self.max_bytes)
        );
        let _ = match self.window_unix_ns {
            None => writeln!(
                out,
                "--max-size {limit}: the output fits ({}), nothing cut",
                rankline_units::bytes(self.full_bytes)
            ),
            Some((start, end)) => {
                let ms = |ns: i64| (ns - origin_unix_ns) as f64 / 1e6;
                writeln!(
                    out,
                    "--max-size {limit}: the full output would be {}; kept the window {:.3} .. \
                     {:.3} ms after the origin ({:.1}% of the events' time span, {} merges), \
                     dropping {} more events (pass --window {}..{} to get the same again)",
                    rankline_units::bytes(self.full_bytes),
                    ms(start),
                    ms(end),
                    self.kept_fraction * 100.0,
                    self.merges,
                    self.events_dropped,
                    start,
                    end
                )
            }
        };
    }
}

/// [`merge`] with the output kept to at most `max_bytes`.
pub fn merge_within(options: &MergeOptions, max_bytes: u64) -> Result<MergeSummary, MergeError> {
    let mut attempt = MergeOptions {
        max_size: None,
        ..options.clone()
    };
    let mut summary = merge(&attempt)?;
    let full = summary.clone();
    let mut fit = SizeFit {
        max_bytes,
        full_bytes: full.bytes_written,
        merges: 1,
        window_unix_ns: None,
        kept_fraction: 1.0,
        events_dropped: 0,
    };
    let span = events_span(&full);
    let mut fraction = 1.0;
    while summary.bytes_written > max_bytes {
        let Some((first, last)) = span.filter(|(first, last)| last > first) else {
            return Err(cannot_fit(
                max_bytes,
                &summary,
                "its events share one instant",
            ));
        };
        if fit.merges > MAX_REFITS {
            return Err(cannot_fit(
                max_bytes,
                &summary,
                "cutting its window did not shrink it enough",
            ));
        }
        fraction *= HEADROOM * max_bytes as f64 / summary.bytes_written as f64;
        let end = first + ((last - first) as f64 * fraction) as i64;
        if end <= first {
            return Err(cannot_fit(
                max_bytes,
                &summary,
                "less than a nanosecond of it would fit",
            ));
        }
        attempt.filters.window = Some(Window {
            start: Some(Instant::Absolute(first)),
            end: Some(Instant::Absolute(end)),
        });
        summary = merge(&attempt)?;
        fit.merges += 1;
        fit.window_unix_ns = Some((first, end));
        fit.kept_fraction = fraction;
    }
    fit.events_dropped = events_out(&full).saturating_sub(events_out(&summary));
    summary.size_fit = Some(fit);
    Ok(summary)
}

/// The merged-clock span from the first event's start to the last one's
/// end, over every rank.
fn events_span(summary: &MergeSummary) -> Option<(i64, i64)> {
    let first = summary
        .ranks
        .iter()
        .filter_map(|r| r.stats.first_ns)
        .min()?;
    let last = summary.ranks.iter().filter_map(|r| r.stats.last_ns).max()?;
    Some((first, last))
}

fn events_out(summary: &MergeSummary) -> u64 {
    summary.ranks.iter().map(|r| r.stats.events_out).sum()
}

fn cannot_fit(max_bytes: u64, summary: &MergeSummary, why: &str) -> MergeError {
    MergeError::Options(format!(
        "--max-size {max_bytes}: the output is still {} bytes, and {why}; keep fewer ranks \
         (--ranks), pass --drop-python or --min-dur, or raise --max-size",
        summary.bytes_written
    ))
}
