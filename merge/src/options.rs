//! What a merge is asked to do: inputs, output, alignment and filters, with
//! the parsers for the textual forms the CLI accepts.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use rankline_layout::{RankCoords, Role};
use serde::Serialize;

use crate::MergeError;

/// Everything [`crate::merge`] needs.
#[derive(Debug, Clone)]
pub struct MergeOptions {
    /// Capture folders or URLs, trace files, JAX log dirs.
    pub inputs: Vec<String>,
    pub output: PathBuf,
    pub align: AlignMode,
    pub filters: Filters,
    /// Merge the readable ranks when some are not, recording the skipped ones.
    pub keep_going: bool,
    /// Ranks converted at once (and so held in memory at once); default: the
    /// number of CPUs.
    pub jobs: Option<usize>,
    /// Diagnostics for benchmarks: stop after a stage and write nothing.
    pub stop_after: Option<Stage>,
    /// Which file of a rank is read: its `.xplane.pb` or its Chrome JSON.
    pub source: SourceMode,
    /// Keep the output to at most this many bytes, cutting its window
    /// when it would be bigger (see [`crate::SizeFit`]).
    pub max_size: Option<u64>,
}

impl MergeOptions {
    pub fn new(inputs: Vec<String>, output: impl Into<PathBuf>) -> Self {
        MergeOptions {
            inputs,
            output: output.into(),
            align: AlignMode::default(),
            filters: Filters::default(),
            keep_going: false,
            jobs: None,
            stop_after: None,
            source: SourceMode::default(),
            max_size: None,
        }
    }
}

/// Which of a rank's files is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceMode {
    /// The `.xplane.pb` when the rank has one (complete, with device
    /// planes), else its Chrome JSON trace.
    #[default]
    Auto,
    /// The `.xplane.pb`; a rank without one is an error.
    Xplane,
    /// The Chrome JSON trace (`trace.json.gz`, Kineto); a rank with only
    /// an `.xplane.pb` is an error.
    Json,
}

impl FromStr for SourceMode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(SourceMode::Auto),
            "xplane" => Ok(SourceMode::Xplane),
            "json" => Ok(SourceMode::Json),
            other => Err(format!(
                "unknown source {other:?}: use auto, xplane or json"
            )),
        }
    }
}

/// A point to stop at, to measure where the time goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Only decompress every rank's trace (the decompression floor).
    Gunzip,
    /// Decompress and parse every event, build the per-rank timelines, and
    /// encode nothing. (An `.xplane.pb` rank is converted in full and its
    /// output discarded: its reading and placing are not separate steps.)
    Parse,
}

impl FromStr for Stage {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "gunzip" => Ok(Stage::Gunzip),
            "parse" => Ok(Stage::Parse),
            other => Err(format!("unknown stage {other:?}: use gunzip or parse")),
        }
    }
}

/// How ranks are put on one clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlignMode {
    /// Each rank's time base, then its host's measured clock fit (from the
    /// sidecar) when there is one.
    #[default]
    Clock,
    /// Each rank's time base only; host clocks are trusted as they are.
    None,
    /// `Clock`, then each rank refined by its collectives' ends against a
    /// reference rank of its server, where that stays inside the measured
    /// clock bounds (see docs/ALIGNMENT.md).
    Collectives,
}

impl FromStr for AlignMode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "clock" => Ok(AlignMode::Clock),
            "none" => Ok(AlignMode::None),
            "collectives" => Ok(AlignMode::Collectives),
            other => Err(format!(
                "unknown alignment {other:?}: use clock, none or collectives"
            )),
        }
    }
}

/// The output file kinds, chosen by the extension of `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    /// `.pftrace`: Perfetto's native protobuf.
    Pftrace,
    /// `.json`: Chrome JSON.
    Json,
    /// `.json.gz`: gzipped Chrome JSON.
    JsonGz,
    /// `.zip`: a Perfetto (v58+) multi-trace archive with a manifest.
    Zip,
}

impl OutputFormat {
    /// The format `path`'s extension asks for.
    pub fn from_path(path: &Path) -> Result<Self, MergeError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if name.ends_with(".pftrace") || name.ends_with(".perfetto-trace") {
            Ok(OutputFormat::Pftrace)
        } else if name.ends_with(".json.gz") {
            Ok(OutputFormat::JsonGz)
        } else if name.ends_with(".json") {
            Ok(OutputFormat::Json)
        } else if name.ends_with(".zip") {
            Ok(OutputFormat::Zip)
        } else {
            Err(MergeError::Options(format!(
                "cannot tell the output format from {:?}: name it *.pftrace (Perfetto, \
                 recommended), *.json or *.json.gz (Chrome JSON), or *.zip (Perfetto archive)",
                path.display()
            )))
        }
    }
}

/// Which events and ranks go into the output.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub window: Option<Window>,
    /// Keep only ranks matching one of these (empty: all).
    pub ranks: Vec<RankSelector>,
    /// Keep only ranks of these roles / servers (empty: all).
    pub roles: Vec<RoleSelector>,
    /// Drop Python-tracer events (`$file.py:N func`, Kineto `python_function`).
    pub drop_python: bool,
    /// Drop complete events shorter than this.
    pub min_dur_ns: Option<i64>,
}

impl Filters {
    /// Whether a rank passes `--ranks` and `--roles`.
    pub fn selects(&self, coords: &RankCoords) -> bool {
        (self.ranks.is_empty() || self.ranks.iter().any(|s| s.matches(coords)))
            && (self.roles.is_empty() || self.roles.iter().any(|s| s.matches(coords)))
    }
}

/// One end of a `--window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instant {
    /// Nanoseconds after the capture start.
    Relative(i64),
    /// Epoch nanoseconds on the merged (reference) clock.
    Absolute(i64),
}

impl Instant {
    pub fn resolve(self, capture_start_ns: i64) -> i64 {
        match self {
            Instant::Relative(ns) => capture_start_ns.saturating_add(ns),
            Instant::Absolute(ns) => ns,
        }
    }
}

/// `--window START..END`: events that overlap it are kept, whole.
///
/// Each side is a duration with a unit after the capture start (`250ms`,
/// `1.5s`, `800us`, `120ns`), or absolute epoch nanoseconds (a bare integer);
/// either side may be left out (`..2s`, `1s..`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: Option<Instant>,
    pub end: Option<Instant>,
}

impl FromStr for Window {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let (start, end) = text.split_once("..").ok_or_else(|| {
            format!("--window {text:?}: write START..END, e.g. 100ms..350ms (after the capture start) or 1795384060465391136..1795384060565391136 (epoch ns)")
        })?;
        let side = |s: &str| -> Result<Option<Instant>, String> {
            let s = s.trim();
            if s.is_empty() {
                return Ok(None);
            }
            if s.bytes().all(|b| b.is_ascii_digit()) {
                return s
                    .parse()
                    .map(|ns| Some(Instant::Absolute(ns)))
                    .map_err(|_| format!("--window: {s:?} is too large"));
            }
            parse_duration_ns(s)
                .map(|ns| Some(Instant::Relative(ns)))
                .map_err(|e| format!("--window: {e}"))
        };
        let window = Window {
            start: side(start)?,
            end: side(end)?,
        };
        if let (Some(Instant::Relative(a)), Some(Instant::Relative(b)))
        | (Some(Instant::Absolute(a)), Some(Instant::Absolute(b))) = (window.start, window.end)
        {
            if b < a {
                return Err(format!("--window {text:?} ends before it starts"));
            }
        }
        Ok(window)
    }
}

/// Parses `250ms`, `1.5s`, `800us`, `120ns`, `-2ms` to nanoseconds.
pub fn parse_duration_ns(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic() || c == 'µ')
        .ok_or_else(|| format!("{text:?} needs a unit: ns, us, ms or s"))?;
    let (number, unit) = text.split_at(split);
    let exp10 = match unit {
        "ns" => 0,
        "us" | "µs" => 3,
        "ms" => 6,
        "s" => 9,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use ns, us, ms or s"
            ))
        }
    };
    crate::input::number::decimal_text_scaled(number, exp10)
        .ok_or_else(|| format!("{text:?} is not a duration"))
}

/// `--ranks`: `TP-1`, `TP-1-EP-0`, `EP-2`, `DP-1-TP-0`, optionally behind a
/// server (`prefill-0/TP-1`). Every part given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RankSelector {
    pub server: Option<RoleSelector>,
    pub tp: Option<u32>,
    pub ep: Option<u32>,
    pub dp: Option<u32>,
    pub pp: Option<u32>,
}

impl RankSelector {
    pub fn matches(&self, coords: &RankCoords) -> bool {
        self.server.as_ref().is_none_or(|s| s.matches(coords))
            && self.tp.is_none_or(|v| v == coords.tp_rank)
            && self.ep.is_none_or(|v| v == coords.ep_rank)
            && self.dp.is_none_or(|v| Some(v) == coords.dp_rank)
            && self.pp.is_none_or(|v| Some(v) == coords.pp_rank)
    }
}

impl FromStr for RankSelector {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "--ranks {text:?}: write TP-n, EP-n, DP-n, PP-n joined by '-' (TP-1-EP-0), \
                 optionally after a server (prefill-0/TP-1)"
            )
        };
        let mut selector = RankSelector::default();
        let rank_part = match text.split_once('/') {
            Some((server, rest)) => {
                selector.server = Some(server.parse()?);
                rest
            }
            None => text,
        };
        let parts: Vec<&str> = rank_part.split('-').collect();
        if parts.len() % 2 != 0 || parts.is_empty() {
            return Err(bad());
        }
        for pair in parts.chunks(2) {
            let value: u32 = pair[1].parse().map_err(|_| bad())?;
            let slot = match pair[0].to_ascii_uppercase().as_str() {
                "TP" => &mut selector.tp,
                "EP" => &mut selector.ep,
                "DP" => &mut selector.dp,
                "PP" => &mut selector.pp,
                _ => return Err(bad()),
            };
            *slot = Some(value);
        }
        Ok(selector)
    }
}

/// `--roles`: `prefill`, `decode`, `unified`, or one server (`prefill-1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSelector {
    pub role: Role,
    pub worker: Option<u32>,
}

impl RoleSelector {
    pub fn matches(&self, coords: &RankCoords) -> bool {
        self.role == coords.role && self.worker.is_none_or(|w| w == coords.worker)
    }
}

impl FromStr for RoleSelector {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let (role, worker) = match text.rsplit_once('-') {
            Some((role, worker)) if worker.bytes().all(|b| b.is_ascii_digit()) => (
                role,
                Some(
                    worker
                        .parse()
                        .map_err(|_| format!("bad worker in {text:?}"))?,
                ),
            ),
            _ => (text, None),
        };
        let role = role.parse().map_err(|_| {
            format!(
                "--roles {text:?}: write a role (prefill, decode, unified), optionally with a \
                 worker (prefill-1)"
            )
        })?;
        Ok(RoleSelector { role, worker })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_relative_absolute_and_open_ends() {
        let w: Window = "100ms..1.5s".parse().unwrap();
        assert_eq!(w.start, Some(Instant::Relative(100_000_000)));
        assert_eq!(w.end, Some(Instant::Relative(1_500_000_000)));
        let w: Window = "..250us".parse().unwrap();
        assert_eq!((w.start, w.end), (None, Some(Instant::Relative(250_000))));
        let w: Window = "1795384060465391136..".parse().unwrap();
        assert_eq!(w.start, Some(Instant::Absolute(1_795_384_060_465_391_136)));
        assert!("2s..1s".parse::<Window>().is_err());
        assert!("100..".parse::<Window>().is_ok());
        assert!("100ms".parse::<Window>().is_err());
        assert!("1h..".parse::<Window>().is_err());
        assert_eq!(Instant::Relative(5).resolve(100), 105);
    }

    #[test]
    fn durations_have_units() {
        assert_eq!(parse_duration_ns("10us"), Ok(10_000));
        assert_eq!(parse_duration_ns("0.5ms"), Ok(500_000));
        assert_eq!(parse_duration_ns("3ns"), Ok(3));
        assert!(parse_duration_ns("10").is_err());
        assert!(parse_duration_ns("xs").is_err());
    }

    #[test]
    fn rank_and_role_selectors() {
        let coords = RankCoords {
            role: Role::Prefill,
            worker: 1,
            dp_rank: Some(2),
            ..RankCoords::unified(3, 0)
        };
        for yes in [
            "TP-3",
            "tp-3-ep-0",
            "DP-2",
            "prefill/TP-3",
            "prefill-1/EP-0",
        ] {
            assert!(
                yes.parse::<RankSelector>().unwrap().matches(&coords),
                "{yes}"
            );
        }
        for no in ["TP-2", "PP-0", "decode/TP-3", "prefill-0/TP-3"] {
            assert!(
                !no.parse::<RankSelector>().unwrap().matches(&coords),
                "{no}"
            );
        }
        for bad in ["TP", "TP-x", "XX-1", "TP-1-EP"] {
            assert!(bad.parse::<RankSelector>().is_err(), "{bad}");
        }
        assert!("prefill".parse::<RoleSelector>().unwrap().matches(&coords));
        assert!("prefill-1"
            .parse::<RoleSelector>()
            .unwrap()
            .matches(&coords));
        assert!(!"prefill-0"
            .parse::<RoleSelector>()
            .unwrap()
            .matches(&coords));
        assert!(!"decode".parse::<RoleSelector>().unwrap().matches(&coords));
    }

    #[test]
    fn output_format_comes_from_the_extension() {
        assert_eq!(
            OutputFormat::from_path(Path::new("a/b.pftrace")).unwrap(),
            OutputFormat::Pftrace
        );
        assert_eq!(
            OutputFormat::from_path(Path::new("b.JSON.GZ")).unwrap(),
            OutputFormat::JsonGz
        );
        assert_eq!(
            OutputFormat::from_path(Path::new("b.json")).unwrap(),
            OutputFormat::Json
        );
        assert_eq!(
            OutputFormat::from_path(Path::new("b.zip")).unwrap(),
            OutputFormat::Zip
        );
        assert!(OutputFormat::from_path(Path::new("b.txt")).is_err());
    }
}
