//! Ranks read from their `.xplane.pb`: the host plane gives the same
//! events as the JSON export beside it (every difference explained here),
//! device planes become tracks under their rank, `--source` picks the file,
//! and hand-made xplanes cover what the real ones do not (events out of
//! order, display names, metadata stats, aggregates, epoch timestamps,
//! damage).

use crate::common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use common::{decode, fixtures, Decoded, Slice};
use prost::Message;
use rankline_merge::{
    merge, InputProblem, MergeError, MergeOptions, MergeSummary, SourceKind, SourceMode,
};
use rankline_xplane::messages::{x_event, x_stat};
use rankline_xplane::{XEvent, XEventMetadata, XLine, XPlane, XSpace, XStat, XStatMetadata};

fn merge_with(inputs: &[PathBuf], out: &Path, source: SourceMode) -> (MergeSummary, Decoded) {
    let mut options = MergeOptions::new(
        inputs.iter().map(|p| p.display().to_string()).collect(),
        out,
    );
    options.source = source;
    let summary = merge(&options).unwrap();
    let decoded = decode(&fs::read(out).unwrap());
    (summary, decoded)
}

/// A slice's track without its overlap-lane suffix: which lane an event
/// lands on may differ between the paths when events tie.
fn line_of(slice: &Slice) -> &str {
    slice
        .track
        .split(" (overlap ")
        .next()
        .unwrap_or(&slice.track)
}

/// Stats XProf keeps out of its JSON export (producer/consumer ids for its
/// flow arrows, the root marker, the program id): the xplane has them.
const HIDDEN_BY_THE_JSON_EXPORT: [&str; 6] = ["_r", "_p", "_c", "_pt", "_ct", "program_id"];

/// Every slice of the JSON-sourced output has its twin in the
/// xplane-sourced one: same process, line, name, args the export kept,
/// start and end within the export's rounding (3 decimals of a
/// microsecond: the xplane has picoseconds).
fn assert_same_events(label: &str, from_json: &[Slice], from_xplane: &[Slice]) {
    let key = |s: &Slice| {
        let line = line_of(s).to_string();
        (s.process.clone(), line, s.name.clone(), s.start, s.end)
    };
    let mut json: Vec<&Slice> = from_json.iter().collect();
    let mut xplane: Vec<&Slice> = from_xplane.iter().collect();
    json.sort_by_key(|s| key(s));
    xplane.sort_by_key(|s| key(s));
    assert_eq!(json.len(), xplane.len(), "{label}: as many events");
    for (j, x) in json.iter().zip(&xplane) {
        assert_eq!(
            (&j.process, line_of(j), &j.name),
            (&x.process, line_of(x), &x.name),
            "{label}"
        );
        assert!(
            (j.start - x.start).abs() <= 1 && (j.end - x.end).abs() <= 1,
            "{label}: {} at {}..{} (json) vs {}..{} (xplane)",
            j.name,
            j.start,
            j.end,
            x.start,
            x.end
        );
        for (arg, value) in &j.args {
            assert_eq!(
                x.args.get(arg),
                Some(value),
                "{label}: {} arg {arg}",
                j.name
            );
        }
        for arg in x.args.keys().filter(|a| !j.args.contains_key(*a)) {
            assert!(
                HIDDEN_BY_THE_JSON_EXPORT.contains(&arg.as_str()),
                "{label}: {} has {arg} only in the xplane",
                j.name
            );
        }
    }
}

#[test]
fn host_plane_events_match_the_json_export_on_the_real_fixtures() {
    let dirs = [
        "jax_single",
        "jax012_single",
        "jax_multi2/proc0",
        "jax_multi2/proc1",
        "jax_multi4/proc0",
        "jax_multi4/proc1",
        "jax_multi4/proc2",
        "jax_multi4/proc3",
        "sglang_jax_cpu/run2_numsteps",
    ];
    let out = tempfile::tempdir().unwrap();
    for dir in dirs {
        let input = vec![fixtures().join(dir)];
        let (json_summary, json) =
            merge_with(&input, &out.path().join("json.pftrace"), SourceMode::Json);
        let (summary, xplane) = merge_with(
            &input,
            &out.path().join("xplane.pftrace"),
            SourceMode::Xplane,
        );
        let rank = &summary.ranks[0];
        assert_eq!(rank.source, SourceKind::Xplane, "{dir}");
        assert!(
            rank.trace.ends_with("vm.xplane.pb"),
            "{dir}: {}",
            rank.trace
        );
        assert_eq!(json_summary.ranks[0].source, SourceKind::Json);
        // Differences, all explained: the JSON export shows only the
        // `/host:CPU` plane, and so does the xplane (its other planes,
        // `/host:metadata` and `Task Environment`, have no lines); the
        // JSON's `M` events name tracks (counted as metadata, not events).
        let counts = rank.stats.xplane.unwrap();
        assert_eq!((counts.planes, counts.aggregated), (1, 0), "{dir}");
        assert!(xplane.slices.iter().all(|s| s.group.is_none()), "{dir}");
        assert_eq!(
            rank.stats.events_in,
            json_summary.ranks[0].stats.complete_events
        );
        assert_eq!(
            rank.stats.events_out,
            json_summary.ranks[0].stats.events_out
        );
        assert_same_events(dir, &json.slices, &xplane.slices);
        // The host's lines are threads named as the JSON export names them,
        // in the same order.
        let threads = |d: &Decoded| -> BTreeSet<String> {
            d.tracks
                .values()
                .map(|(name, _)| name.split(" (overlap ").next().unwrap().to_string())
                .collect()
        };
        assert_eq!(threads(&json), threads(&xplane), "{dir}");
    }
}

/// A simulated sglang-jax rank with two TPU chips.
fn simulated_rank(dir: &Path) -> PathBuf {
    let mut spec = rankline_simserver::synthetic::SyntheticRank::new(
        "tpu-vm-0",
        1_795_384_060_465_391_136,
        6_000,
        0,
    );
    spec.shape.local_devices = 2;
    let logs = dir.join("logs");
    rankline_simserver::synthetic::write_jax_rank(&logs, &spec).unwrap();
    logs
}

#[test]
fn device_planes_become_tracks_under_their_rank() {
    let dir = tempfile::tempdir().unwrap();
    let logs = simulated_rank(dir.path());
    let (summary, xplane) = merge_with(
        std::slice::from_ref(&logs),
        &dir.path().join("x.pftrace"),
        SourceMode::Auto,
    );
    assert_eq!(
        summary.ranks[0].source,
        SourceKind::Xplane,
        "auto prefers it"
    );
    let (_, json) = merge_with(&[logs], &dir.path().join("j.pftrace"), SourceMode::Json);

    // Track tree: rank → TPU:n → Steps / XLA Modules / XLA Ops; the host's
    // lines directly under the rank, as threads.
    let mut tree: BTreeMap<Option<String>, BTreeSet<String>> = BTreeMap::new();
    for slice in &xplane.slices {
        tree.entry(slice.group.clone())
            .or_default()
            .insert(line_of(slice).to_string());
    }
    let lines: BTreeSet<String> = ["Steps", "XLA Modules", "XLA Ops"].map(String::from).into();
    assert_eq!(tree[&Some("TPU:0".to_string())], lines);
    assert_eq!(tree[&Some("TPU:1".to_string())], lines);
    assert_eq!(
        tree[&None],
        ["sglang::schedul", "tf_pjrt_tpu_launch/0"]
            .map(String::from)
            .into()
    );
    let process = &xplane.slices[0].process;
    assert!(xplane.slices.iter().all(|s| &s.process == process));

    // The same events as the JSON export, device planes included: there
    // each plane is a source process, so its lines are named
    // `<plane> / <line>`.
    let xplane: Vec<Slice> = xplane
        .slices
        .iter()
        .map(|s| Slice {
            track: match &s.group {
                Some(device) => format!("/device:{device} / {}", s.track),
                None => format!("/host:CPU / {}", s.track),
            },
            ..s.clone()
        })
        .collect();
    assert_same_events("simulated", &json.slices, &xplane);
}

#[test]
fn json_output_and_collective_alignment_read_the_xplane_too() {
    let dir = tempfile::tempdir().unwrap();
    let logs = simulated_rank(dir.path());
    let out = dir.path().join("x.json.gz");
    let mut options = MergeOptions::new(vec![logs.display().to_string()], &out);
    options.align = rankline_merge::AlignMode::Collectives;
    let summary = merge(&options).unwrap();
    let rank = &summary.ranks[0];
    assert_eq!(rank.source, SourceKind::Xplane);
    let collectives = rank.collectives.as_ref().unwrap();
    assert!(
        collectives.collectives > 0,
        "collectives are found in the xplane's device planes"
    );
    let text = common::read_gz(&out);
    let trace: serde_json::Value = serde_json::from_str(&text).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    let spans = events.iter().filter(|e| e["ph"] == "X").count() as u64;
    assert_eq!(spans, rank.stats.events_out);
    assert_eq!(rank.stats.events_out, rank.stats.xplane.unwrap().events);
    let ops = events
        .iter()
        .filter(|e| e["args"]["hlo_op"].is_string() && e["args"]["run_id"].is_string())
        .count();
    assert!(ops > 100, "XLA ops keep their stats, as strings: {ops}");
    let names: BTreeSet<&str> = events
        .iter()
        .filter(|e| e["name"] == "process_name")
        .filter_map(|e| e["args"]["name"].as_str())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with("/device:TPU:1")),
        "{names:?}"
    );
}

fn stat(id: i64, value: x_stat::Value) -> XStat {
    XStat {
        metadata_id: id,
        value: Some(value),
    }
}

fn span(metadata_id: i64, offset_ns: i64, duration_ns: i64, stats: Vec<XStat>) -> XEvent {
    XEvent {
        metadata_id,
        data: Some(x_event::Data::OffsetPs(offset_ns * 1000)),
        duration_ps: duration_ns * 1000,
        stats,
    }
}

const START: i64 = 1_795_384_060_465_391_136;

/// A plane's `stat_metadata`: names by id.
fn stat_names(names: &[(i64, &str)]) -> HashMap<i64, XStatMetadata> {
    names
        .iter()
        .map(|&(id, name)| {
            let meta = XStatMetadata {
                id,
                name: name.into(),
                description: String::new(),
            };
            (id, meta)
        })
        .collect()
}

/// The plane that holds the session's `profile_start_time` (`START`).
fn task_environment() -> XPlane {
    XPlane {
        id: 9,
        name: "Task Environment".into(),
        stat_metadata: stat_names(&[(1, "profile_start_time")]),
        stats: vec![stat(1, x_stat::Value::Uint64Value(START as u64))],
        ..Default::default()
    }
}

/// A `/device:TPU:0` plane with `lines`, whose events are all named `op`
/// (metadata id 1) and whose stat 12 is `flops`.
fn device_plane(lines: Vec<XLine>) -> XPlane {
    let op = XEventMetadata {
        id: 1,
        name: "op".into(),
        ..Default::default()
    };
    XPlane {
        id: 1,
        name: "/device:TPU:0".into(),
        lines,
        event_metadata: [(1, op)].into(),
        stat_metadata: stat_names(&[(12, "flops")]),
        ..Default::default()
    }
}

/// A protobuf length-delimited field.
fn length_delimited(field: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_key(field, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

/// A device plane whose `XLA Ops` line is out of order and overlaps, with
/// display names, metadata stats, an aggregate, a Python-named event, and a
/// second line stamped in epoch ns; then `Task Environment`.
fn hand_made_space() -> XSpace {
    let names = [
        (
            1,
            "fusion.1",
            "",
            vec![stat(12, x_stat::Value::Uint64Value(640))],
        ),
        (2, "%copy.2 = f32[8] copy(%p)", "copy.2", vec![]),
        (3, "$train.py:10 step", "", vec![]),
        (
            4,
            "all-reduce.3",
            "",
            vec![stat(12, x_stat::Value::Uint64Value(9))],
        ),
    ];
    let event_metadata = names
        .into_iter()
        .map(|(id, name, display, stats)| {
            let meta = XEventMetadata {
                id,
                name: name.into(),
                display_name: display.into(),
                stats,
                ..Default::default()
            };
            (id, meta)
        })
        .collect();
    let stat_metadata = stat_names(&[
        (10, "hlo_op"),
        (11, "run_id"),
        (12, "flops"),
        (13, "all-reduce.3"),
        (14, "blob"),
    ]);
    let ops = XLine {
        id: 3,
        name: "XLA Ops".into(),
        timestamp_ns: 1_000,
        events: vec![
            // Out of order: the parent comes after its child.
            span(
                2,
                110,
                10,
                vec![stat(14, x_stat::Value::BytesValue(vec![1, 2]))],
            ),
            span(1, 100, 50, vec![stat(12, x_stat::Value::Uint64Value(7))]),
            // Partly overlaps fusion.1 (100..150): an overlap track.
            span(
                4,
                140,
                30,
                vec![
                    stat(10, x_stat::Value::RefValue(13)),
                    stat(11, x_stat::Value::Int64Value(-5)),
                ],
            ),
            XEvent {
                metadata_id: 4,
                data: Some(x_event::Data::NumOccurrences(12)),
                duration_ps: 5_000,
                stats: vec![],
            },
            span(3, 300, 5, vec![]),
        ],
        ..Default::default()
    };
    let epoch = XLine {
        id: 4,
        name: "Steps".into(),
        timestamp_ns: START + 2_000,
        events: vec![span(1, 0, 10, vec![])],
        ..Default::default()
    };
    XSpace {
        planes: vec![
            XPlane {
                id: 1,
                name: "/device:TPU:0".into(),
                lines: vec![ops, epoch],
                event_metadata,
                stat_metadata,
                ..Default::default()
            },
            task_environment(),
        ],
        hostnames: vec!["tpu-vm".into()],
        ..Default::default()
    }
}

fn write_hand_made(dir: &Path) -> PathBuf {
    let path = dir.join("tpu-vm.xplane.pb");
    fs::write(&path, hand_made_space().encode_to_vec()).unwrap();
    path
}

#[test]
fn hand_made_xplane_edge_cases() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_hand_made(dir.path());
    let (summary, decoded) = merge_with(
        std::slice::from_ref(&input),
        &dir.path().join("o.pftrace"),
        SourceMode::Auto,
    );
    let rank = &summary.ranks[0];
    assert_eq!(rank.rank, "TP-0-EP-0", "an xplane alone is a rank");
    let counts = rank.stats.xplane.unwrap();
    assert_eq!(
        (
            counts.planes,
            counts.lines,
            counts.events,
            counts.aggregated
        ),
        (1, 2, 6, 1)
    );
    assert_eq!(rank.stats.events_out, 5);
    assert_eq!(rank.stats.dropped.values().sum::<u64>(), 1, "the aggregate");

    let by_name: BTreeMap<&str, &Slice> = decoded
        .slices
        .iter()
        .map(|s| (s.name.as_str(), s))
        .collect();
    let at = |ns: i64| START + 1_000 + ns;
    let copy = by_name["copy.2"];
    assert_eq!((copy.start, copy.end), (at(110), at(120)));
    assert_eq!(copy.depth, 1, "nested in fusion.1 although written first");
    assert_eq!(copy.args["long_name"], "%copy.2 = f32[8] copy(%p)");
    assert_eq!(copy.args["blob"], "0x0102");
    let all_reduce = by_name["all-reduce.3"];
    assert_eq!(all_reduce.track, "XLA Ops (overlap 1)");
    assert_eq!(all_reduce.group.as_deref(), Some("TPU:0"));
    assert_eq!(all_reduce.args["hlo_op"], "all-reduce.3", "ref_value");
    assert_eq!(all_reduce.args["run_id"], "-5");
    assert_eq!(all_reduce.args["flops"], "9", "a metadata stat");
    let fusions: Vec<&Slice> = decoded
        .slices
        .iter()
        .filter(|s| s.name == "fusion.1")
        .collect();
    let ops_fusion = fusions.iter().find(|s| s.track == "XLA Ops").unwrap();
    assert_eq!(ops_fusion.args["flops"], "7", "the event's own stat wins");
    assert_eq!(ops_fusion.args.len(), 1);
    let step = fusions.iter().find(|s| s.track == "Steps").unwrap();
    assert_eq!(
        step.start,
        START + 2_000,
        "an epoch line timestamp is taken as it is"
    );

    let mut options = MergeOptions::new(
        vec![input.display().to_string()],
        dir.path().join("p.pftrace"),
    );
    options.filters.drop_python = true;
    let summary = merge(&options).unwrap();
    assert_eq!(
        summary.ranks[0].stats.dropped["python tracer (--drop-python)"],
        1
    );
}

#[test]
fn source_modes_pick_the_file_and_refuse_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let xplane_only = write_hand_made(dir.path());
    let json_only = dir.path().join("other-TP-1.trace.json");
    fs::write(
        &json_only,
        r#"{"traceEvents":[{"ph":"X","pid":1,"tid":1,"ts":1,"dur":2,"name":"a"}]}"#,
    )
    .unwrap();
    let inputs = vec![xplane_only.clone(), json_only.clone()];
    let out = dir.path().join("o.pftrace");

    let (summary, _) = merge_with(&inputs, &out, SourceMode::Auto);
    let sources: Vec<SourceKind> = summary.ranks.iter().map(|r| r.source).collect();
    assert_eq!(sources, [SourceKind::Xplane, SourceKind::Json]);
    let text = summary.render();
    assert!(
        text.contains("xplane: 1 plane, 2 lines, 6 events (1 aggregated event skipped)"),
        "{text}"
    );

    for (mode, refused, why) in [
        (SourceMode::Xplane, &json_only, "--source xplane"),
        (SourceMode::Json, &xplane_only, "--source json"),
    ] {
        let mut options = MergeOptions::new(
            inputs.iter().map(|p| p.display().to_string()).collect(),
            &out,
        );
        options.source = mode;
        let Err(MergeError::Input(error)) = merge(&options) else {
            panic!("{mode:?} must refuse a rank without its file");
        };
        assert!(error
            .input
            .ends_with(&*refused.file_name().unwrap().to_string_lossy()));
        assert!(error.to_string().contains(why), "{error}");
        options.keep_going = true;
        let summary = merge(&options).unwrap();
        assert_eq!(summary.ranks.len(), 1);
        assert_eq!(summary.skipped.len(), 1);
    }
}

#[test]
fn a_damaged_xplane_names_the_file_and_keep_going_merges_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_hand_made(dir.path());
    let bytes = hand_made_space().encode_to_vec();
    let cut = dir.path().join("cut-TP-3.xplane.pb");
    fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let inputs = vec![good.display().to_string(), cut.display().to_string()];
    let out = dir.path().join("o.pftrace");
    let Err(MergeError::Input(error)) = merge(&MergeOptions::new(inputs.clone(), &out)) else {
        panic!("a truncated xplane fails the merge");
    };
    assert!(error.input.ends_with("cut-TP-3.xplane.pb"), "{error}");
    assert!(
        matches!(
            error.problem,
            InputProblem::Xplane(_) | InputProblem::TimeBase { .. }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("truncated"), "{error}");
    let mut options = MergeOptions::new(inputs, &out);
    options.keep_going = true;
    let summary = merge(&options).unwrap();
    assert_eq!(summary.ranks.len(), 1);
    assert!(summary.skipped[0].error.contains("cut-TP-3.xplane.pb"));
}

/// A one-rank capture of `jax_single` with its `.xplane.pb` listed in the
/// manifest, as `rankline capture` writes it.
fn capture_with_xplane(root: &Path) -> PathBuf {
    let run = common::jax_run_dir(&fixtures().join("jax_single"));
    let trace = common::read_gz(&run.join("vm.trace.json.gz"));
    let coords = rankline_layout::RankCoords::unified(0, 0);
    let capture = common::write_capture(
        root,
        "cap1",
        START,
        &[common::TestRank {
            coords: coords.clone(),
            host: "vm".into(),
            trigger: true,
            trace: Some(trace),
            time_base_ns: 1_795_383_974_499_871_950,
            clock: None,
        }],
    );
    let key = rankline_layout::RankKey::new("cap1", &coords);
    fs::copy(run.join("vm.xplane.pb"), root.join(key.xplane())).unwrap();
    let manifest_path = capture.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(&manifest_path).unwrap()).unwrap();
    manifest["ranks"][0]["objects"]["xplane"] = key.xplane().into();
    fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    capture
}

#[test]
fn capture_urls_fetch_the_xplanes_they_read() {
    let dir = tempfile::tempdir().unwrap();
    let capture = capture_with_xplane(dir.path());
    let url = format!("file://{}", capture.display());
    let out = dir.path().join("o.pftrace");
    for (mode, kind, file) in [
        (
            SourceMode::Auto,
            SourceKind::Xplane,
            "cap1-TP-0-EP-0.xplane.pb",
        ),
        (
            SourceMode::Json,
            SourceKind::Json,
            "cap1-TP-0-EP-0.trace.json.gz",
        ),
    ] {
        for input in [url.clone(), capture.display().to_string()] {
            let mut options = MergeOptions::new(vec![input.clone()], &out);
            options.source = mode;
            let summary = merge(&options).unwrap();
            let rank = &summary.ranks[0];
            assert_eq!(rank.source, kind, "{input}");
            assert!(rank.trace.ends_with(file), "{input}: {}", rank.trace);
            assert_eq!(rank.stats.events_out, 201, "{input}");
        }
    }
}

#[test]
fn a_rank_that_breaks_midway_leaves_nothing_behind_with_keep_going() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_hand_made(dir.path());
    // Enough events on the first line that its packets fill several output
    // chunks before the broken second line is reached.
    let events = (0..200_000)
        .map(|i| span(1, i * 20, 10, vec![stat(12, x_stat::Value::Uint64Value(7))]))
        .collect();
    let first = XLine {
        id: 1,
        name: "XLA Ops".into(),
        timestamp_ns: 1_000,
        events,
        ..Default::default()
    };
    let mut plane = device_plane(vec![first]).encode_to_vec();
    // An event with a field of wire type 3 (a group, which no writer uses).
    let broken_event = [0x08, 0x01, 0x10, 0x05, 0x23];
    let mut broken_line = XLine {
        id: 2,
        name: "Steps".into(),
        timestamp_ns: 1_000,
        ..Default::default()
    }
    .encode_to_vec();
    broken_line.extend(length_delimited(4, &broken_event));
    plane.extend(length_delimited(3, &broken_line));
    let mut space = length_delimited(1, &plane);
    space.extend(
        XSpace {
            planes: vec![task_environment()],
            ..Default::default()
        }
        .encode_to_vec(),
    );
    let broken = dir.path().join("broken-TP-3.xplane.pb");
    fs::write(&broken, space).unwrap();
    let inputs = vec![good.display().to_string(), broken.display().to_string()];
    let out = dir.path().join("o.pftrace");

    let error = merge(&MergeOptions::new(inputs.clone(), &out)).unwrap_err();
    assert!(matches!(error, MergeError::Input(_)), "{error}");
    assert!(error.to_string().contains("--keep-going"), "{error}");

    let mut options = MergeOptions::new(inputs, &out);
    options.keep_going = true;
    options.jobs = Some(1);
    let summary = merge(&options).unwrap();
    assert_eq!(summary.ranks.len(), 1);
    assert_eq!(summary.skipped[0].rank.as_deref(), Some("TP-3-EP-0"));
    let why = &summary.skipped[0].error;
    assert!(why.contains("broken-TP-3.xplane.pb"), "{why}");
    assert!(
        !why.contains("--keep-going"),
        "it was passed already: {why}"
    );
    let decoded = decode(&fs::read(&out).unwrap());
    let lines = summary.ranks[0].stats.xplane.map_or(0, |x| x.lines) as usize;
    assert_eq!(decoded.sequences, 1 + lines, "only the good rank's packets");
    assert_eq!(decoded.processes.len(), 1);
    assert_eq!(
        decoded.slices.len() as u64,
        summary.ranks[0].stats.events_out
    );
    let left = fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(left, 3, "the inputs and the output, no staging file");
}

#[test]
fn back_to_back_events_stay_back_to_back_after_rounding() {
    let at_ps = |offset_ps: i64, duration_ps: i64| XEvent {
        metadata_id: 1,
        data: Some(x_event::Data::OffsetPs(offset_ps)),
        duration_ps,
        stats: vec![],
    };
    // 1.5 ns lasting 1.5 ns ends at 3 ns, where the next one starts:
    // rounding the offset and the duration apart would end it at 4.
    let line = XLine {
        id: 1,
        name: "XLA Ops".into(),
        timestamp_ns: 1_000,
        events: vec![at_ps(1_500, 1_500), at_ps(3_000, 1_000)],
        ..Default::default()
    };
    let space = XSpace {
        planes: vec![device_plane(vec![line]), task_environment()],
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("tpu-vm.xplane.pb");
    fs::write(&input, space.encode_to_vec()).unwrap();
    let (_, decoded) = merge_with(&[input], &dir.path().join("o.pftrace"), SourceMode::Auto);
    let mut spans: Vec<(i64, i64, &str)> = decoded
        .slices
        .iter()
        .map(|s| {
            (
                s.start - START - 1_000,
                s.end - START - 1_000,
                s.track.as_str(),
            )
        })
        .collect();
    spans.sort();
    assert_eq!(spans, [(2, 3, "XLA Ops"), (3, 4, "XLA Ops")]);
}

#[test]
fn an_annotation_appears_once_and_the_events_own_stat_wins() {
    let add = XEventMetadata {
        id: 1,
        name: "%add.5 = f32[] add(%a, %b)".into(),
        display_name: "add.5".into(),
        stats: vec![
            stat(12, x_stat::Value::Uint64Value(3)),
            stat(15, x_stat::Value::StrValue("the metadata's".into())),
        ],
        ..Default::default()
    };
    let line = XLine {
        id: 1,
        name: "XLA Ops".into(),
        timestamp_ns: 1_000,
        events: vec![
            span(
                1,
                0,
                10,
                vec![
                    stat(15, x_stat::Value::StrValue("the event's".into())),
                    stat(12, x_stat::Value::Uint64Value(1)),
                    // Twice, as XProf writes `_src`: the later one wins.
                    stat(12, x_stat::Value::Uint64Value(2)),
                ],
            ),
            span(1, 20, 10, vec![]),
        ],
        ..Default::default()
    };
    let mut plane = device_plane(vec![line]);
    plane.event_metadata = [(1, add)].into();
    plane.stat_metadata = stat_names(&[(12, "flops"), (15, "long_name")]);
    let space = XSpace {
        planes: vec![plane, task_environment()],
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("tpu-vm.xplane.pb");
    fs::write(&input, space.encode_to_vec()).unwrap();
    // The decoder refuses a slice with two annotations of one name.
    let (_, decoded) = merge_with(&[input], &dir.path().join("o.pftrace"), SourceMode::Auto);
    let mut slices: Vec<&Slice> = decoded.slices.iter().collect();
    slices.sort_by_key(|s| s.start);
    assert_eq!(slices[0].args["long_name"], "the event's");
    assert_eq!(slices[0].args["flops"], "2");
    assert_eq!(slices[1].args["long_name"], "the metadata's");
    assert_eq!(slices[1].args["flops"], "3");
}

#[test]
fn a_capture_url_whose_xplane_is_gone_reads_that_ranks_json() {
    let dir = tempfile::tempdir().unwrap();
    let capture = capture_with_xplane(dir.path());
    let key = rankline_layout::RankKey::new("cap1", &rankline_layout::RankCoords::unified(0, 0));
    fs::remove_file(dir.path().join(key.xplane())).unwrap();
    let url = format!("file://{}", capture.display());
    let out = dir.path().join("o.pftrace");

    let summary = merge(&MergeOptions::new(vec![url.clone()], &out)).unwrap();
    let rank = &summary.ranks[0];
    assert_eq!(rank.source, SourceKind::Json);
    assert_eq!(rank.stats.events_out, 201);
    assert!(
        summary
            .warnings
            .iter()
            .any(|w| w.contains("cap1-TP-0-EP-0.xplane.pb") && w.contains("not found")),
        "{:?}",
        summary.warnings
    );

    let mut options = MergeOptions::new(vec![url], &out);
    options.source = SourceMode::Xplane;
    let Err(MergeError::Input(error)) = merge(&options) else {
        panic!("--source xplane refuses the rank without its xplane");
    };
    assert!(matches!(error.problem, InputProblem::NoXplane), "{error}");
    options.keep_going = true;
    assert!(matches!(
        merge(&options),
        Err(MergeError::NothingToMerge(_))
    ));
}

/// An object's members in order, duplicates kept (serde_json's `Value`
/// would keep only the last).
struct Members(Vec<String>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Members, A::Error> {
                let mut keys = Vec::new();
                while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                    keys.push(key);
                }
                Ok(Members(keys))
            }
        }
        deserializer.deserialize_map(Keys)
    }
}

#[test]
fn json_output_from_an_xplane_names_each_arg_once() {
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("single.json");
    let options = MergeOptions::new(
        vec![fixtures().join("jax_single").display().to_string()],
        &path,
    );
    let summary = merge(&options).unwrap();
    assert_eq!(summary.ranks[0].source, SourceKind::Xplane);
    #[derive(serde::Deserialize)]
    struct Event {
        args: Option<Members>,
    }
    #[derive(serde::Deserialize)]
    struct Trace {
        #[serde(rename = "traceEvents")]
        trace_events: Vec<Event>,
    }
    let trace: Trace = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let mut with_src = 0;
    for event in &trace.trace_events {
        let Some(Members(keys)) = &event.args else {
            continue;
        };
        let unique: BTreeSet<&String> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len(), "{keys:?}");
        with_src += usize::from(unique.contains(&"_src".to_string()));
    }
    assert!(with_src > 0, "host events keep their (last) `_src`");
}
