//! What an export did: the hosts of the run with their ranks, files and
//! clock offsets (also written as the run's index file), and its rendering
//! for people.

use std::fmt::Write as _;
use std::path::PathBuf;

use rankline_layout::{ClockFit, RankCoords, XPLANE_SUFFIX};
use serde::Serialize;

use crate::plan::Plan;
use crate::ExportError;

/// How an xplane got into the run folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// A hard link to the file in the local capture folder.
    Linked,
    /// A copy (the capture folder is on another filesystem).
    Copied,
    /// Streamed down from object storage.
    Downloaded,
    /// Already there with the recorded sha256 (a re-run).
    Kept,
}

impl Placement {
    /// `linked`, `copied`, `downloaded`, `kept`.
    pub fn verb(self) -> &'static str {
        match self {
            Placement::Linked => "linked",
            Placement::Copied => "copied",
            Placement::Downloaded => "downloaded",
            Placement::Kept => "kept",
        }
    }
}

/// One host of the run: a rank's xplane, in place and verified.
#[derive(Debug, Clone, Serialize)]
pub struct ExportedHost {
    /// The host name XProf shows: the file name before `.xplane.pb`.
    pub host: String,
    /// `prefill-0 TP-1-EP-0`.
    pub rank: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coords: Option<RankCoords>,
    /// The machine the rank ran on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The storage key it came from.
    pub key: String,
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
    /// Whether `sha256` was checked against one the agent recorded.
    pub sha256_recorded: bool,
    pub placed: Placement,
    /// The host's clock fit (offset = host − coordinator), without its samples.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock: Option<ClockFit>,
}

/// A rank with nothing for XProf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedRank {
    pub rank: String,
    pub reason: String,
}

/// A rank whose xplane should have been exported but was not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedHost {
    pub host: String,
    pub rank: String,
    pub key: String,
    pub reason: String,
}

/// How far apart the hosts' clocks were measured: XProf shows every host
/// on its own clock, so this is how far its timelines can disagree.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClockSpread {
    pub hosts_measured: usize,
    pub hosts_unmeasured: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_offset_ns: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_offset_ns: Option<i64>,
    /// `max_offset_ns - min_offset_ns`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spread_ns: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worst_error_bound_ns: Option<u64>,
}

impl ClockSpread {
    pub fn of(hosts: &[ExportedHost]) -> ClockSpread {
        let clocks: Vec<&ClockFit> = hosts.iter().filter_map(|h| h.clock.as_ref()).collect();
        let min = clocks.iter().map(|c| c.offset_ns).min();
        let max = clocks.iter().map(|c| c.offset_ns).max();
        ClockSpread {
            hosts_measured: clocks.len(),
            hosts_unmeasured: hosts.len() - clocks.len(),
            min_offset_ns: min,
            max_offset_ns: max,
            spread_ns: min.zip(max).map(|(min, max)| max - min),
            worst_error_bound_ns: clocks.iter().map(|c| c.error_bound_ns).max(),
        }
    }
}

/// The result of an export; also the run's index file.
#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    pub capture_id: String,
    /// Where the capture was read from.
    pub source: String,
    /// The XProf log dir.
    pub out: PathBuf,
    pub run: String,
    pub run_dir: PathBuf,
    /// This summary as a file: `<out>/rankline-xprof-<run>.json`.
    pub index: PathBuf,
    pub hosts: Vec<ExportedHost>,
    pub skipped: Vec<SkippedRank>,
    pub failed: Vec<FailedHost>,
    pub warnings: Vec<String>,
    pub clocks: ClockSpread,
    /// Commands that open the log dir.
    pub open_with: Vec<String>,
}

impl ExportSummary {
    pub(crate) fn new(
        source: String,
        plan: &Plan,
        out: PathBuf,
        run: String,
        run_dir: PathBuf,
        index: PathBuf,
    ) -> ExportSummary {
        let logdir = out.display();
        ExportSummary {
            capture_id: plan.capture_id.clone(),
            source,
            open_with: vec![
                format!("xprof --logdir {logdir}"),
                format!("tensorboard --logdir {logdir}"),
            ],
            out,
            run,
            run_dir,
            index,
            hosts: Vec::new(),
            skipped: plan.skipped.clone(),
            failed: plan.failed.clone(),
            warnings: plan.warnings.clone(),
            clocks: ClockSpread::default(),
        }
    }

    /// True when every xplane the capture has was exported.
    pub fn complete(&self) -> bool {
        self.failed.is_empty()
    }

    /// Warns about xplanes in the run folder that are not this export's
    /// (left by an earlier export of other ranks): XProf shows them too.
    pub(crate) fn note_other_xplanes(&mut self) -> Result<(), ExportError> {
        let entries =
            std::fs::read_dir(&self.run_dir).map_err(ExportError::io("list", &self.run_dir))?;
        let mut others: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(XPLANE_SUFFIX))
            .filter(|name| !self.hosts.iter().any(|h| h.path.ends_with(name)))
            .collect();
        if !others.is_empty() {
            others.sort();
            self.warnings.push(format!(
                "{} also holds {} not from this export (XProf shows them as hosts too): {}",
                self.run_dir.display(),
                others.len(),
                others.join(", ")
            ));
        }
        Ok(())
    }

    pub(crate) fn write_index(&self) -> Result<(), ExportError> {
        let text = serde_json::to_vec_pretty(self).expect("the summary serializes");
        std::fs::write(&self.index, text).map_err(ExportError::io("write", &self.index))
    }

    /// The summary for people, ending with how to open the run.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let bytes: u64 = self.hosts.iter().map(|h| h.size).sum();
        let _ = writeln!(
            text,
            "capture {} -> XProf run {} ({} host(s), {})",
            self.capture_id,
            self.run,
            self.hosts.len(),
            rankline_units::bytes(bytes)
        );
        let width = self.hosts.iter().map(|h| h.host.len()).max().unwrap_or(0);
        for host in &self.hosts {
            let clock = host
                .clock
                .as_ref()
                .map(|c| {
                    format!(
                        "clock offset {} ±{} (host − coordinator)",
                        rankline_units::offset(c.offset_ns),
                        rankline_units::duration(c.error_bound_ns as i64)
                    )
                })
                .unwrap_or_else(|| "clock not measured".into());
            let _ = writeln!(
                text,
                "  {:width$}  {:>10}  {:10}  {}",
                host.host,
                rankline_units::bytes(host.size),
                host.placed.verb(),
                clock
            );
        }
        for skipped in &self.skipped {
            let _ = writeln!(text, "  skipped {}: {}", skipped.rank, skipped.reason);
        }
        for failed in &self.failed {
            let _ = writeln!(
                text,
                "  FAILED {} ({}): {}",
                failed.host, failed.rank, failed.reason
            );
        }
        for warning in &self.warnings {
            let _ = writeln!(text, "warning: {warning}");
        }
        let _ = writeln!(text, "{}", self.clock_note());
        let _ = writeln!(text, "index: {}", self.index.display());
        let _ = writeln!(
            text,
            "open it: {}   (or: {})",
            self.open_with[0], self.open_with[1]
        );
        text
    }

    /// What XProf's lack of clock correction means for this run.
    pub fn clock_note(&self) -> String {
        let c = &self.clocks;
        let head = "note: XProf shows each host on its own clock (it cannot correct them)";
        let tail = "`rankline merge` puts them on one clock";
        match (c.min_offset_ns, c.max_offset_ns, c.spread_ns) {
            (Some(min), Some(max), Some(spread)) => {
                let unmeasured = match c.hosts_unmeasured {
                    0 => String::new(),
                    n => format!(", {n} host(s) not measured"),
                };
                format!(
                    "{head}; measured offsets (host − coordinator): {} .. {} (spread {}, \
                     worst bound ±{}){unmeasured}; {tail}",
                    rankline_units::offset(min),
                    rankline_units::offset(max),
                    rankline_units::duration(spread),
                    rankline_units::duration(c.worst_error_bound_ns.unwrap_or(0) as i64)
                )
            }
            _ => format!("{head}; no host's offset was measured; {tail}"),
        }
    }
}
