//! Synthetic `.xplane.pb` files of any size, for tests and benchmarks.
//!
//! [`write_synthetic_space`] streams an XSpace shaped like a TPU host's:
//! `device_planes` planes `/device:TPU:<n>` with `Steps`, `XLA Modules` and
//! `XLA Ops` lines (XLA ops carry `hlo_op` / `hlo_module` as `ref_value`
//! stats, like the real ones), a `/host:CPU` plane with a Python-tracer
//! line and a launch thread, and a `Task Environment` plane with
//! `profile_start_time` / `profile_stop_time`. Line timestamps are
//! relative to the profile start, as JAX writes them.
//!
//! Each line is made of groups: a parent span with seven children nested
//! in it. One group in [`SynthSpec::overlap_every`] starts inside the
//! previous group's last child, so it (and its first children) partly
//! overlaps spans before it without nesting; one event in
//! [`SynthSpec::aggregate_every`] is an aggregate (`num_occurrences`)
//! instead of a child span. Events are in start order, and the output is
//! a pure function of the spec. Only one line is in memory at a time.

use std::fmt::Write as _;
use std::io::{self, BufWriter, Write};

use crate::encode::{
    put_hostname, write_plane, LineEncoder, MetadataPlacement, PlaneMetadata, Stat, StatValue,
};
use crate::TASK_ENVIRONMENT_PLANE;

/// Nanoseconds between child starts; a group spans eight of them.
const SLOT_NS: i64 = 1000;
/// Events per group: the parent and its children.
const GROUP: u64 = 8;
/// The first events start this long after the profile start.
const LEAD_NS: i64 = 1000;
/// Groups after which event names repeat.
const NAME_CYCLE: u64 = 37;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSpec {
    /// `/device:TPU:<n>` planes.
    pub device_planes: u32,
    /// Lines per device plane: `Steps`, `XLA Modules`, `XLA Ops`, then
    /// again with a number (`XLA Ops #2`).
    pub lines_per_plane: u32,
    /// Events (spans and aggregates) per device line.
    pub events_per_line: u64,
    /// Stats per event: up to 8 of the kind's own (`hlo_op`, `hlo_module`,
    /// `run_id`, ...), then `extra_0` .. `extra_7`.
    pub stats_per_event: u32,
    /// Events on the `/host:CPU` plane (three quarters on the Python line).
    pub host_events: u64,
    /// One event in this many is an aggregate (`num_occurrences`), not a
    /// span; 0: none.
    pub aggregate_every: u64,
    /// One group in this many partly overlaps the one before it; 0: none.
    pub overlap_every: u64,
    /// `profile_start_time`, epoch ns.
    pub profile_start_ns: i64,
    /// `XSpace.hostnames`.
    pub hostname: String,
    /// Where each plane's metadata goes.
    pub metadata: MetadataPlacement,
}

impl Default for SynthSpec {
    fn default() -> Self {
        SynthSpec {
            device_planes: 4,
            lines_per_plane: 3,
            events_per_line: 10_000,
            stats_per_event: 3,
            host_events: 10_000,
            aggregate_every: 997,
            overlap_every: 101,
            profile_start_ns: 1_795_384_060_465_391_136,
            hostname: "synth".into(),
            metadata: MetadataPlacement::AfterLines,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SynthCounts {
    /// Spans: the events a timeline shows.
    pub events: u64,
    /// Aggregates (`num_occurrences`): in the file, not on a timeline.
    pub aggregated: u64,
    /// The largest `XLine` message: what a line-by-line reader holds.
    pub largest_line_bytes: u64,
    /// The file's size.
    pub bytes: u64,
    /// Planes with lines.
    pub planes: u64,
    /// Lines with events.
    pub lines: u64,
}

/// Which events a line shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineKind {
    Steps,
    Modules,
    Ops,
    Python,
    Launch,
}

const DEVICE_LINES: [(LineKind, &str); 3] = [
    (LineKind::Steps, "Steps"),
    (LineKind::Modules, "XLA Modules"),
    (LineKind::Ops, "XLA Ops"),
];

struct LineSpec {
    kind: LineKind,
    name: String,
    events: u64,
    /// Shifts the line's events a little, so lines do not coincide.
    skew_ns: i64,
}

/// Writes a synthetic XSpace to `out`, one line in memory at a time.
pub fn write_synthetic_space(out: impl Write, spec: &SynthSpec) -> io::Result<SynthCounts> {
    let mut out = BufWriter::with_capacity(1 << 16, out);
    let mut counts = SynthCounts::default();
    for device in 0..spec.device_planes {
        let lines: Vec<LineSpec> = (0..spec.lines_per_plane)
            .map(|l| {
                let (kind, name) = DEVICE_LINES[l as usize % DEVICE_LINES.len()];
                let round = l as usize / DEVICE_LINES.len();
                LineSpec {
                    kind,
                    name: match round {
                        0 => name.to_string(),
                        _ => format!("{name} #{}", round + 1),
                    },
                    events: spec.events_per_line,
                    skew_ns: i64::from(device) * 7 + i64::from(l) * 3,
                }
            })
            .collect();
        let name = format!("/device:TPU:{device}");
        write_timeline_plane(
            &mut out,
            spec,
            i64::from(device),
            &name,
            &lines,
            &mut counts,
        )?;
    }
    let host_lines = [
        LineSpec {
            kind: LineKind::Python,
            name: "python".into(),
            events: spec.host_events - spec.host_events / 4,
            skew_ns: 1,
        },
        LineSpec {
            kind: LineKind::Launch,
            name: "tf_pjrt_tpu_launch/0".into(),
            events: spec.host_events / 4,
            skew_ns: 2,
        },
    ];
    let host_id = i64::from(spec.device_planes);
    write_timeline_plane(
        &mut out,
        spec,
        host_id,
        "/host:CPU",
        &host_lines,
        &mut counts,
    )?;
    let skew_bound = 10 * i64::from(spec.device_planes) + 100;
    let last_end = line_end(spec, spec.events_per_line.max(spec.host_events)) + skew_bound;
    let start = spec.profile_start_ns.max(0) as u64;
    let stop = (last_end + SLOT_NS).max(0) as u64;
    let task = write_plane(
        &mut out,
        host_id + 1,
        TASK_ENVIRONMENT_PLANE,
        &[
            ("profile_start_time", StatValue::Uint(start)),
            ("profile_stop_time", StatValue::Uint(stop)),
        ],
        0,
        spec.metadata,
        |_, _| None,
    )?;
    counts.bytes += task.bytes;
    let mut hostname = Vec::new();
    put_hostname(&mut hostname, &spec.hostname);
    out.write_all(&hostname)?;
    counts.bytes += hostname.len() as u64;
    out.flush()?;
    Ok(counts)
}

fn write_timeline_plane(
    out: &mut impl Write,
    spec: &SynthSpec,
    id: i64,
    name: &str,
    lines: &[LineSpec],
    counts: &mut SynthCounts,
) -> io::Result<()> {
    // `write_plane` asks for every line twice; count the second time.
    let mut calls = 0usize;
    let written = write_plane(
        out,
        id,
        name,
        &[],
        lines.len(),
        spec.metadata,
        |i, metadata: &mut PlaneMetadata| {
            calls += 1;
            let line = &lines[i];
            let mut encoder =
                LineEncoder::new(metadata, i as i64 + 1, &line.name, spec.profile_start_ns);
            let (events, aggregated) = emit_line(spec, line, &mut encoder);
            if calls > lines.len() {
                counts.events += events;
                counts.aggregated += aggregated;
            }
            encoder.finish()
        },
    )?;
    counts.bytes += written.bytes;
    counts.lines += written.lines;
    counts.planes += u64::from(written.lines > 0);
    counts.largest_line_bytes = counts.largest_line_bytes.max(written.largest_line_bytes);
    Ok(())
}

/// Where an unskewed line of `events` events ends at the latest.
fn line_end(spec: &SynthSpec, events: u64) -> i64 {
    let groups = events.div_ceil(GROUP) as i64;
    spec.profile_start_ns + LEAD_NS + groups * GROUP as i64 * SLOT_NS
}

/// Emits one line's events; returns (spans, aggregates).
fn emit_line(spec: &SynthSpec, line: &LineSpec, out: &mut LineEncoder<'_>) -> (u64, u64) {
    let (mut spans, mut aggregates) = (0, 0);
    let mut group_start = spec.profile_start_ns + LEAD_NS + line.skew_ns;
    let mut stat_text = StatText::default();
    // Names repeat every NAME_CYCLE groups (but step numbers).
    let names: Vec<String> = (0..NAME_CYCLE * GROUP)
        .map(|i| event_name(line.kind, i / GROUP, (i % GROUP) as i64))
        .collect();
    let mut step_name = String::new();
    for k in 0..line.events {
        let (group, slot) = (k / GROUP, (k % GROUP) as i64);
        if slot == 0 && group > 0 {
            let overlaps = spec.overlap_every > 0 && group % spec.overlap_every == 0;
            // An overlapping group starts inside the previous one's last
            // child: after every earlier start, before their ends.
            group_start += if overlaps {
                (GROUP as i64 - 2) * SLOT_NS + SLOT_NS / 2
            } else {
                GROUP as i64 * SLOT_NS
            };
        }
        let name = if line.kind == LineKind::Steps && slot == 0 {
            step_name.clear();
            let _ = write!(step_name, "{group}");
            &step_name
        } else {
            &names[((group % NAME_CYCLE) * GROUP) as usize + slot as usize]
        };
        stat_text.fill(line.kind, name, k);
        let stats = stats(line.kind, spec.stats_per_event, &stat_text, group, k);
        let aggregate = slot > 0 && spec.aggregate_every > 0 && (k + 1) % spec.aggregate_every == 0;
        if aggregate {
            out.aggregate(name, 1 + (k % 7) as i64, SLOT_NS * 1000, stats);
            aggregates += 1;
            continue;
        }
        let (start, end) = if slot == 0 {
            (group_start, group_start + GROUP as i64 * SLOT_NS - 20)
        } else {
            let at = group_start + (slot - 1) * SLOT_NS;
            (at + 10, at + SLOT_NS - 10)
        };
        out.event(name, start, end, stats);
        spans += 1;
    }
    (spans, aggregates)
}

fn event_name(kind: LineKind, group: u64, slot: i64) -> String {
    const OPS: [&str; 8] = [
        "convolution",
        "all-reduce",
        "copy",
        "fusion",
        "custom-call",
        "dot",
        "all-gather",
        "reduce-scatter",
    ];
    const PYTHON: [&str; 6] = [
        "$builtins len",
        "$tree_util.py:96 tree_flatten",
        "$functools.py:35 update_wrapper",
        "$enum.py:1230 __hash__",
        "$api.py:301 cache_miss",
        "$pjit.py:1652 _pjit_call_impl",
    ];
    let n = (group % NAME_CYCLE) as usize;
    match (kind, slot) {
        (LineKind::Steps, 0) => format!("{group}"),
        (LineKind::Steps, _) => "StepMarker".into(),
        (LineKind::Modules, 0) => "jit_train_step(6)".into(),
        (LineKind::Modules, _) => format!("jit_inner_{}({})", slot, 10 + slot),
        (LineKind::Ops, 0) => format!("while.{n}"),
        (LineKind::Ops, _) => format!("{}.{}", OPS[(slot as usize + n) % OPS.len()], n),
        (LineKind::Python, 0) => format!("$model.py:{} forward", 100 + n),
        (LineKind::Python, _) => PYTHON[(slot as usize + n) % PYTHON.len()].into(),
        (LineKind::Launch, 0) => "PjitFunction(train_step)".into(),
        (LineKind::Launch, _) => "TpuExecutable::LaunchProgram".into(),
    }
}

/// Text stat values of one event, kept so stats can borrow them.
#[derive(Default)]
struct StatText {
    op: String,
    long_name: String,
    source: String,
}

impl StatText {
    fn fill(&mut self, kind: LineKind, name: &str, k: u64) {
        self.op.clear();
        self.op.push_str(name);
        self.long_name.clear();
        let _ = write!(
            self.long_name,
            "%{name} = f32[128,256]{{1,0}} {name}(%p.{k})"
        );
        self.source.clear();
        let file = if kind == LineKind::Python {
            "train.py"
        } else {
            "model.py"
        };
        let _ = write!(self.source, "{file}:{}", 10 + k % 500);
    }
}

/// The first `count` stats of an event, as a real file of that kind has.
fn stats<'t>(
    kind: LineKind,
    count: u32,
    text: &'t StatText,
    group: u64,
    k: u64,
) -> impl Iterator<Item = Stat<'t>> {
    let run_id = -1_889_979_186 + (group % 1000) as i64;
    let base: [Stat<'t>; 8] = match kind {
        LineKind::Ops => [
            ("hlo_op", StatValue::Ref(&text.op)),
            ("hlo_module", StatValue::Ref("jit_train_step")),
            ("run_id", StatValue::Int(run_id)),
            ("flops", StatValue::Uint(1 << (k % 30))),
            ("bytes_accessed", StatValue::Uint(4096 + k % 65_536)),
            ("long_name", StatValue::Str(&text.long_name)),
            ("source", StatValue::Str(&text.source)),
            ("model_flops", StatValue::Double(k as f64 * 0.5)),
        ],
        _ => [
            ("run_id", StatValue::Int(run_id)),
            ("step_num", StatValue::Int(group as i64)),
            ("program_id", StatValue::Int(6)),
            ("device_ordinal", StatValue::Int(0)),
            ("source", StatValue::Str(&text.source)),
            ("hlo_module", StatValue::Ref("jit_train_step")),
            ("correlation_id", StatValue::Uint(k)),
            ("_r", StatValue::Int(1)),
        ],
    };
    let extra = (base.len() as u32..count.max(base.len() as u32)).map(move |i| {
        // Names of the extra stats live as long as the program: few of them.
        let name: &'static str = EXTRA_STAT_NAMES
            .get(i as usize - base.len())
            .copied()
            .unwrap_or("extra");
        (name, StatValue::Int(i64::from(i) + k as i64))
    });
    base.into_iter().take(count as usize).chain(extra)
}

/// Names of stats past the eight each kind has.
const EXTRA_STAT_NAMES: [&str; 8] = [
    "extra_0", "extra_1", "extra_2", "extra_3", "extra_4", "extra_5", "extra_6", "extra_7",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{EventKind, LineView, XSpaceFile};
    use std::io::Cursor;

    fn read_back(bytes: Vec<u8>) -> (u64, u64, Vec<String>, Vec<i64>) {
        let (mut file, index) = XSpaceFile::open(Cursor::new(bytes)).unwrap();
        let (mut spans, mut aggregates) = (0, 0);
        let mut planes = Vec::new();
        let mut first_timestamps = Vec::new();
        let mut buf = Vec::new();
        for plane in &index.planes {
            planes.push(plane.name.clone());
            for &range in &plane.lines {
                file.read_line(range, &mut buf).unwrap();
                let line = LineView::parse(&buf, range.start).unwrap();
                first_timestamps.push(line.timestamp_ns);
                for event in line.events() {
                    match event.unwrap().1.kind {
                        EventKind::Span { .. } => spans += 1,
                        EventKind::Aggregate { .. } => aggregates += 1,
                    }
                }
            }
        }
        (spans, aggregates, planes, first_timestamps)
    }

    #[test]
    fn counts_match_what_a_reader_finds() {
        let spec = SynthSpec {
            device_planes: 2,
            lines_per_plane: 4,
            events_per_line: 500,
            host_events: 100,
            aggregate_every: 50,
            ..SynthSpec::default()
        };
        let mut bytes = Vec::new();
        let counts = write_synthetic_space(&mut bytes, &spec).unwrap();
        assert_eq!(counts.bytes, bytes.len() as u64);
        assert_eq!(counts.planes, 3);
        assert_eq!(counts.lines, 2 * 4 + 2);
        assert_eq!(counts.events + counts.aggregated, 2 * 4 * 500 + 100);
        assert!(counts.aggregated > 0);
        let (spans, aggregates, planes, timestamps) = read_back(bytes);
        assert_eq!((spans, aggregates), (counts.events, counts.aggregated));
        assert_eq!(
            planes,
            [
                "/device:TPU:0",
                "/device:TPU:1",
                "/host:CPU",
                TASK_ENVIRONMENT_PLANE
            ]
        );
        assert!(
            timestamps.iter().all(|&t| (0..1_000_000).contains(&t)),
            "line timestamps are relative: {timestamps:?}"
        );
    }

    #[test]
    fn the_output_is_a_function_of_the_spec() {
        let spec = SynthSpec {
            events_per_line: 100,
            host_events: 40,
            metadata: MetadataPlacement::BeforeLines,
            ..SynthSpec::default()
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let first = write_synthetic_space(&mut a, &spec).unwrap();
        let second = write_synthetic_space(&mut b, &spec).unwrap();
        assert_eq!(first, second);
        assert_eq!(a.len(), b.len());
        assert_eq!(read_back(a), read_back(b));
    }
}
