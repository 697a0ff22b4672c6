//! Merge behaviour on small hand-written traces: exact nanosecond shifts,
//! overlap spilling, phases, every output format, filters, captures, and
//! bad inputs.

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use common::{decode, read_gz, write_gz, TestRank};
use rankline_layout::{ClockFit, RankCoords};
use rankline_merge::{
    merge, BaseSource, ClockStatus, InputProblem, MergeError, MergeOptions, OutputFormat,
};
use serde_json::Value;

const KINETO_BASE: i64 = 1_763_850_000_123_456_789;

fn kineto(events: &str) -> String {
    format!(
        r#"{{"schemaVersion":1,"traceEvents":[
            {{"ph":"M","pid":7,"name":"process_name","args":{{"name":"python3"}}}},
            {{"ph":"M","pid":7,"tid":8,"name":"thread_name","args":{{"name":"main"}}}},
            {events}
        ],"traceName":"x","baseTimeNanoseconds":{KINETO_BASE}}}"#
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    if name.ends_with(".gz") {
        write_gz(&path, text);
    } else {
        fs::write(&path, text).unwrap();
    }
    path.display().to_string()
}

/// `input` merged into Chrome JSON at `out`: its events.
fn json_events(input: String, out: &Path) -> Vec<Value> {
    merge(&MergeOptions::new(vec![input], out)).unwrap();
    let mut trace: Value = serde_json::from_str(&fs::read_to_string(out).unwrap()).unwrap();
    match trace["traceEvents"].take() {
        Value::Array(events) => events,
        other => panic!("traceEvents: {other}"),
    }
}

fn pftrace(inputs: Vec<String>, dir: &Path) -> (rankline_merge::MergeSummary, common::Decoded) {
    let out = dir.join("out.pftrace");
    let summary = merge(&MergeOptions::new(inputs, &out)).unwrap();
    let decoded = decode(&fs::read(&out).unwrap());
    (summary, decoded)
}

#[test]
fn shifts_are_exact_to_the_nanosecond() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "1763850000.5-TP-0.trace.json.gz",
        &kineto(
            r#"{"ph":"X","pid":7,"tid":8,"ts":12.3456789,"dur":0.0005,"name":"rounds"},
               {"ph":"X","pid":7,"tid":8,"ts":1e3,"dur":"2","name":"exponent and quoted dur"}"#,
        ),
    );
    // No time base at all: ts as given, with every digit of an epoch value.
    let b = write(
        dir.path(),
        "plain.json",
        r#"[{"ph":"X","pid":1,"tid":1,"ts":1795384060465391.136,"dur":1,"name":"epoch"}]"#,
    );
    let (summary, decoded) = pftrace(vec![a, b], dir.path());
    let by_name: BTreeMap<&str, &common::Slice> = decoded
        .slices
        .iter()
        .map(|s| (s.name.as_str(), s))
        .collect();
    // 12.3456789 us = 12345.6789 ns -> 12346; 0.0005 us = 0.5 ns -> 1.
    assert_eq!(by_name["rounds"].start, KINETO_BASE + 12_346);
    assert_eq!(by_name["rounds"].end, KINETO_BASE + 12_347);
    assert_eq!(
        by_name["exponent and quoted dur"].start,
        KINETO_BASE + 1_000_000
    );
    assert_eq!(
        by_name["exponent and quoted dur"].end,
        KINETO_BASE + 1_002_000
    );
    assert_eq!(by_name["epoch"].start, 1_795_384_060_465_391_136);
    assert_eq!(by_name["epoch"].end, 1_795_384_060_465_392_136);

    assert_eq!(summary.ranks[0].time_base, BaseSource::Kineto);
    assert_eq!(summary.ranks[0].time_base_unix_ns, KINETO_BASE);
    assert_eq!(summary.ranks[1].time_base, BaseSource::None);
    assert!(
        summary.warnings.iter().any(|w| w.contains("no time base")),
        "{:?}",
        summary.warnings
    );
    // Named by the file name, then by argument order skipping TP-0.
    assert_eq!(summary.ranks[0].rank, "TP-0-EP-0");
    assert_eq!(summary.ranks[1].rank, "TP-1-EP-0");
    // The Kineto source process gets its own track name.
    assert_eq!(by_name["rounds"].track, "main");
}

#[test]
fn overlapping_events_go_to_sibling_tracks_and_none_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let events = [
        ("a", 0, 100),
        ("b-overlaps-a", 50, 100),
        ("c-in-a-and-b", 60, 10),
        ("d-starts-at-a-end", 100, 20),
        ("e-same-as-a", 0, 100),
        ("f-zero-at-end", 100, 0),
        ("g-zero", 30, 0),
        ("h-overlaps-b-and-d", 140, 20),
    ];
    let text: Vec<String> = events
        .iter()
        .map(|(name, ts, dur)| {
            format!(r#"{{"ph":"X","pid":1,"tid":2,"ts":{ts},"dur":{dur},"name":"{name}","args":{{"k":"v","n":3,"f":1.5,"b":true,"o":{{"x":[1]}}}}}}"#)
        })
        .collect();
    let path = write(dir.path(), "t.json", &format!("[{}]", text.join(",")));
    let (summary, decoded) = pftrace(vec![path.clone()], dir.path());
    assert_eq!(decoded.slices.len(), events.len());
    assert_eq!(summary.ranks[0].stats.events_out, events.len() as u64);
    for (name, ts, dur) in events {
        let slice = decoded.slices.iter().find(|s| s.name == name).unwrap();
        assert_eq!(
            (slice.start, slice.end),
            (ts * 1000, (ts + dur) * 1000),
            "{name}"
        );
        assert_eq!(slice.args["k"], "v");
        assert_eq!(slice.args["n"], "3");
        assert_eq!(slice.args["f"], "1.5");
        assert_eq!(slice.args["b"], "true");
        assert_eq!(slice.args["o"], r#"{"x":[1]}"#);
    }
    let track_of = |name: &str| {
        decoded
            .slices
            .iter()
            .find(|s| s.name == name)
            .unwrap()
            .track
            .clone()
    };
    assert_eq!(track_of("a"), "tid 2");
    assert_eq!(track_of("b-overlaps-a"), "tid 2 (overlap 1)");
    assert_eq!(
        track_of("h-overlaps-b-and-d"),
        "tid 2",
        "lane 0 is free again by then"
    );
    assert_eq!(track_of("d-starts-at-a-end"), "tid 2");

    // Chrome JSON output places them the same way, on sibling threads.
    let written = json_events(path, &dir.path().join("out.json"));
    let thread_of = |name: &str| {
        let event = written.iter().find(|e| e["name"] == name).unwrap();
        let tid = event["tid"].as_i64().unwrap();
        let named = written
            .iter()
            .find(|e| e["name"] == "thread_name" && e["pid"] == event["pid"] && e["tid"] == tid);
        (
            tid,
            named.map(|e| e["args"]["name"].as_str().unwrap().to_string()),
        )
    };
    for (name, _, _) in events {
        let (tid, named) = thread_of(name);
        if name == "b-overlaps-a" {
            assert_ne!(tid, 2, "moved off a's thread");
            assert_eq!(named.as_deref(), Some("tid 2 (overlap 1)"));
        } else {
            assert_eq!((tid, named), (2, None), "{name} stays");
        }
    }
}

#[test]
fn json_output_spills_overlapping_begin_end_pairs_and_named_threads() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "be-TP-0.trace.json",
        &kineto(
            r#"{"ph":"B","pid":7,"tid":8,"ts":0,"name":"outer"},
               {"ph":"X","pid":7,"tid":8,"ts":5,"dur":10,"name":"crosses outer's end"},
               {"ph":"E","pid":7,"tid":8,"ts":10},
               {"ph":"B","pid":7,"tid":8,"ts":12,"name":"inside the spilled one"},
               {"ph":"E","pid":7,"tid":8,"ts":13}"#,
        ),
    );
    let written = json_events(path, &dir.path().join("be.json"));
    let tids = |ph: &str| -> Vec<i64> {
        written
            .iter()
            .filter(|e| e["ph"] == ph)
            .map(|e| e["tid"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(tids("X"), [9], "the X is moved next to tid 8");
    assert_eq!(tids("B"), [8, 8], "the pairs nest on their thread");
    assert_eq!(tids("E"), [8, 8]);
    assert!(
        written.iter().any(|e| e["name"] == "thread_name"
            && e["tid"] == 9
            && e["args"]["name"] == "main (overlap 1)"),
        "{written:?}"
    );
}

#[test]
fn phases_are_paired_kept_or_dropped_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "phases.json",
        r#"{"traceEvents":[
            {"ph":"B","pid":1,"tid":1,"ts":10,"name":"outer","args":{"a":1}},
            {"ph":"B","pid":1,"tid":1,"ts":12,"name":"inner"},
            {"ph":"i","pid":1,"tid":1,"ts":13,"name":"mark","s":"t"},
            {"ph":"E","pid":1,"tid":1,"ts":14},
            {"ph":"E","pid":1,"tid":1,"ts":20},
            {"ph":"E","pid":1,"tid":1,"ts":21},
            {"ph":"B","pid":1,"tid":1,"ts":30,"name":"never ends"},
            {"ph":"C","pid":1,"ts":5,"name":"mem","args":{"bytes":3}},
            {"ph":"s","pid":1,"tid":1,"ts":5,"name":"f","id":1},
            {"ph":"b","pid":1,"ts":5,"name":"async","id":2,"cat":"c"},
            {"ph":"X","pid":1,"tid":1,"name":"no ts"},
            {"ph":"X","pid":1,"tid":1,"ts":"soon","dur":1,"name":"bad ts"},
            7,
            {}
        ]}"#,
    );
    let (summary, decoded) = pftrace(vec![path], dir.path());
    let stats = &summary.ranks[0].stats;
    let names: Vec<(&str, usize, bool)> = decoded
        .slices
        .iter()
        .map(|s| (s.name.as_str(), s.depth, s.instant))
        .collect();
    assert!(names.contains(&("outer", 0, false)));
    assert!(names.contains(&("inner", 1, false)));
    assert!(names.contains(&("mark", 2, true)));
    let outer = decoded.slices.iter().find(|s| s.name == "outer").unwrap();
    assert_eq!((outer.start, outer.end), (10_000, 20_000));
    assert_eq!(outer.args["a"], "1");
    let dropped = |reason: &str| stats.dropped.get(reason).copied().unwrap_or(0);
    assert_eq!(dropped("E without a B"), 1);
    assert_eq!(dropped("B without an E"), 1);
    assert_eq!(dropped("counter (kept in .json output only)"), 1);
    assert_eq!(dropped("flow (kept in .json output only)"), 1);
    assert_eq!(dropped("unsupported phase"), 1);
    assert_eq!(dropped("no ts"), 1);
    assert_eq!(dropped("ts or dur out of range"), 1);
    assert_eq!(dropped("not a JSON object"), 1);
    assert_eq!(stats.events_in, 13, "the empty {{}} is not an event");
    assert_eq!(
        stats.events_in,
        stats.events_out + stats.metadata + stats.dropped.values().sum::<u64>()
    );
}

/// A rankline capture: manifest, per-rank sidecars (one with a clock fit),
/// one failed rank.
fn write_capture(root: &Path) -> PathBuf {
    let ranks: Vec<TestRank> = [
        (0, "prefill", None),
        (1, "prefill", Some(37_000_123)),
        (0, "decode", None),
    ]
    .into_iter()
    .map(|(tp, role, clock_offset): (u32, &str, Option<i64>)| {
        let base = 1_795_000_000_000_000_000 + i64::from(tp) * 1_000_000;
        TestRank {
            coords: RankCoords {
                role: role.parse().unwrap(),
                ..RankCoords::unified(tp, 0)
            },
            host: format!("host-{tp}"),
            trigger: tp == 0,
            // The decode rank failed: no files, only its manifest entry.
            trace: (role != "decode").then(|| {
                r#"{"traceEvents":[{"ph":"X","pid":701,"tid":1,"ts":5.5,"dur":1,"name":"step"},{}]}"#
                    .to_string()
            }),
            time_base_ns: base,
            clock: clock_offset.map(|offset| ClockFit {
                offset_ns: offset,
                error_bound_ns: 20_000,
                drift_ppm: 0.0,
                at_unix_ns: base,
                samples: vec![],
            }),
        }
    })
    .collect();
    common::write_capture(root, "cap1", 1_794_999_999_900_000_000, &ranks)
}

#[test]
fn a_capture_folder_merges_with_sidecar_time_bases_and_clock_fits() {
    let dir = tempfile::tempdir().unwrap();
    let capture = write_capture(dir.path());
    let (summary, decoded) = pftrace(vec![capture.display().to_string()], dir.path());

    assert_eq!(
        summary.origin_unix_ns, 1_794_999_999_900_000_000,
        "the manifest's start"
    );
    assert_eq!(summary.missing.len(), 1);
    assert!(summary.missing[0]
        .reason
        .contains("timed out in collecting"));
    assert!(!summary.complete());
    let ranks: Vec<(&str, BaseSource, ClockStatus, i64)> = summary
        .ranks
        .iter()
        .map(|r| (r.rank.as_str(), r.time_base, r.clock, r.clock_shift_ns))
        .collect();
    assert_eq!(
        ranks,
        [
            (
                "prefill-0/TP-0-EP-0",
                BaseSource::SidecarXplane,
                ClockStatus::NotMeasured,
                0
            ),
            (
                "prefill-0/TP-1-EP-0",
                BaseSource::SidecarXplane,
                ClockStatus::Applied,
                -37_000_123
            ),
        ]
    );
    let starts: BTreeMap<&str, i64> = decoded
        .slices
        .iter()
        .map(|s| (s.process.as_str(), s.start))
        .collect();
    assert_eq!(
        starts["prefill-0 TP-0 EP-0 (host-0)"],
        1_795_000_000_000_000_000 + 5_500
    );
    assert_eq!(
        starts["prefill-0 TP-1 EP-0 (host-1)"],
        1_795_000_000_001_000_000 + 5_500 - 37_000_123,
        "host clock mapped onto the coordinator's"
    );

    // --align none keeps host clocks; --roles/--ranks pick ranks.
    let out = dir.path().join("none.pftrace");
    let mut options = MergeOptions::new(vec![capture.display().to_string()], &out);
    options.align = rankline_merge::AlignMode::None;
    options.filters.ranks = vec!["TP-1".parse().unwrap()];
    let summary = merge(&options).unwrap();
    assert_eq!(summary.ranks.len(), 1);
    assert_eq!(summary.filtered_out, ["prefill-0/TP-0-EP-0"]);
    assert_eq!(summary.ranks[0].clock, ClockStatus::Disabled);
    let decoded = decode(&fs::read(&out).unwrap());
    assert_eq!(decoded.slices[0].start, 1_795_000_000_001_000_000 + 5_500);

    options.filters.ranks.clear();
    options.filters.roles = vec!["decode".parse().unwrap()];
    assert!(matches!(
        merge(&options),
        Err(MergeError::NothingToMerge(_))
    ));
}

#[test]
fn a_capture_url_is_fetched_through_object_storage() {
    let dir = tempfile::tempdir().unwrap();
    let capture = write_capture(dir.path());
    let url = format!("file://{}", capture.display());
    let out = dir.path().join("url.pftrace");
    let summary = merge(&MergeOptions::new(vec![url.clone()], &out)).unwrap();
    assert_eq!(summary.ranks.len(), 2);
    assert_eq!(summary.missing.len(), 1);
    assert_eq!(summary.ranks[1].clock, ClockStatus::Applied);
    assert_eq!(
        summary.ranks[0].trace,
        format!("{url}/prefill-0/cap1-TP-0-EP-0.trace.json.gz"),
        "ranks are named by URL, not by their local copies"
    );
    let (_, mut local) = pftrace(vec![capture.display().to_string()], dir.path());
    let mut from_url = decode(&fs::read(&out).unwrap());
    for decoded in [&mut local, &mut from_url] {
        decoded
            .slices
            .sort_by(|a, b| (&a.process, a.start).cmp(&(&b.process, b.start)));
    }
    assert_eq!(from_url.slices, local.slices);

    // Only the selected ranks are fetched: the filter applies before download.
    let mut options = MergeOptions::new(vec![url], &out);
    options.filters.ranks = vec!["TP-1".parse().unwrap()];
    assert_eq!(merge(&options).unwrap().ranks.len(), 1);

    for (bad, expected) in [
        (format!("file://{}/nope", dir.path().display()), "not found"),
        ("memory://".to_string(), "no trace found"),
        ("gs://".to_string(), "no bucket"),
    ] {
        let error = merge(&MergeOptions::new(vec![bad.clone()], &out))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(bad.trim_end_matches('/')) && error.contains(expected),
            "{bad}: {error}"
        );
    }
}

#[test]
fn json_output_has_a_pid_per_rank_and_exact_shifted_ts() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "x-TP-0.trace.json.gz",
        &kineto(
            r#"{"ph":"X","pid":7,"tid":8,"ts":1.5,"dur":2,"name":"k","args":{"Collective name":"allreduce"}},
               {"ph":"X","pid":0,"tid":3,"ts":2.0005,"dur":1,"name":"gpu kernel"},
               {"ph":"s","pid":7,"tid":8,"ts":1.5,"name":"flow","id":5,"bp":"e"},
               {"ph":"C","pid":7,"ts":1.5,"name":"mem","args":{"v":1}}"#,
        ),
    );
    let b = write(
        dir.path(),
        "x-TP-1.trace.json.gz",
        &kineto(r#"{"ph":"X","pid":7,"tid":8,"ts":1.5,"dur":2,"name":"k"}"#),
    );
    for name in ["out.json", "out.json.gz"] {
        let out = dir.path().join(name);
        let summary = merge(&MergeOptions::new(vec![a.clone(), b.clone()], &out)).unwrap();
        assert_eq!(summary.format, OutputFormat::from_path(&out).unwrap());
        assert_eq!(summary.origin_unix_ns, KINETO_BASE);
        let text = if name.ends_with(".gz") {
            read_gz(&out)
        } else {
            fs::read_to_string(&out).unwrap()
        };
        let trace: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(trace["metadata"]["rankline_origin_unix_ns"], KINETO_BASE);
        let events = trace["traceEvents"].as_array().unwrap();
        let mut named_pids: Vec<i64> = events
            .iter()
            .filter(|e| e["name"] == "process_name")
            .map(|e| e["pid"].as_i64().unwrap())
            .collect();
        let named = named_pids.len();
        named_pids.sort_unstable();
        named_pids.dedup();
        assert_eq!(named, named_pids.len(), "one process_name per pid: {text}");
        assert_eq!(named, 3, "two ranks, one with a second source process");
        let process_names: BTreeMap<i64, &str> = events
            .iter()
            .filter(|e| e["name"] == "process_name")
            .map(|e| {
                (
                    e["pid"].as_i64().unwrap(),
                    e["args"]["name"].as_str().unwrap(),
                )
            })
            .collect();
        let mut kernels: Vec<&Value> = events.iter().filter(|e| e["name"] == "k").collect();
        kernels.sort_by_key(|e| e["args"].is_null());
        assert_eq!(kernels.len(), 2);
        assert_ne!(kernels[0]["pid"], kernels[1]["pid"], "a pid per rank");
        assert!(process_names[&kernels[0]["pid"].as_i64().unwrap()].starts_with("unified-0 TP-"));
        // ts is exact text: 1.5 us after the origin, printed with 3 decimals.
        assert!(text.contains(r#""ts":1.500,"dur":2.000"#), "{text}");
        assert!(
            text.contains(r#""ts":2.001"#),
            "2.0005 us rounds to 2001 ns"
        );
        let gpu = events.iter().find(|e| e["name"] == "gpu kernel").unwrap();
        assert_ne!(
            gpu["pid"], kernels[0]["pid"],
            "a second source process gets its own pid"
        );
        let flow = events.iter().find(|e| e["ph"] == "s").unwrap();
        assert_ne!(flow["id"], 5, "flow ids are made unique per rank");
        assert_eq!(flow["bp"], "e", "unknown keys pass through");
        assert!(
            events.iter().any(|e| e["ph"] == "C"),
            "counters stay in JSON output"
        );
        assert_eq!(kernels[0]["args"]["Collective name"], "allreduce");
    }
}

#[test]
fn zip_output_is_a_perfetto_archive_of_machines_on_the_merged_clock() {
    let dir = tempfile::tempdir().unwrap();
    let capture = write_capture(dir.path());
    let out = dir.path().join("cap.zip");
    let summary = merge(&MergeOptions::new(
        vec![capture.display().to_string()],
        &out,
    ))
    .unwrap();
    assert_eq!(summary.format, OutputFormat::Zip);
    let mut archive = zip::ZipArchive::new(fs::File::open(&out).unwrap()).unwrap();
    let mut manifest = String::new();
    archive
        .by_name("perfetto_manifest.json")
        .unwrap()
        .read_to_string(&mut manifest)
        .unwrap();
    let manifest: Value = serde_json::from_str(&manifest).unwrap();
    let files = manifest["perfetto_manifest"]["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    assert!(
        files[0].get("clocks").is_none(),
        "the first is the reference"
    );
    assert_eq!(files[1]["clocks"]["sync_to"]["file"], files[0]["path"]);
    assert_eq!(files[1]["clocks"]["offset_ns"], 0);
    for (file, rank) in files.iter().zip(&summary.ranks) {
        assert!(file["machine"]["name"]
            .as_str()
            .unwrap()
            .starts_with("host-"));
        let mut bytes = Vec::new();
        archive
            .by_name(file["path"].as_str().unwrap())
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        let decoded = decode(&bytes);
        assert_eq!(decoded.slices.len(), 1);
        assert_eq!(
            decoded.slices[0].start,
            rank.time_base_unix_ns + rank.clock_shift_ns + 5_500,
            "on the merged clock, as in the .pftrace"
        );
    }
}

#[test]
fn window_and_min_dur_filters_keep_whole_overlapping_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "w-TP-0.trace.json",
        &kineto(
            r#"{"ph":"X","pid":7,"tid":8,"ts":0,"dur":100,"name":"spans the window"},
               {"ph":"X","pid":7,"tid":8,"ts":10,"dur":5,"name":"before"},
               {"ph":"X","pid":7,"tid":8,"ts":50,"dur":0.5,"name":"short inside"},
               {"ph":"X","pid":7,"tid":8,"ts":60,"dur":5,"name":"inside"},
               {"ph":"X","pid":7,"tid":8,"ts":95,"dur":5,"name":"after"}"#,
        ),
    );
    let out = dir.path().join("w.pftrace");
    let mut options = MergeOptions::new(vec![path], &out);
    options.filters.window = Some("40us..90us".parse().unwrap());
    options.filters.min_dur_ns = Some(1_000);
    let summary = merge(&options).unwrap();
    let names: Vec<String> = decode(&fs::read(&out).unwrap())
        .slices
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"spans the window".to_string()));
    assert!(names.contains(&"inside".to_string()));
    let stats = &summary.ranks[0].stats;
    assert_eq!(stats.dropped["outside --window"], 2);
    assert_eq!(stats.dropped["shorter than --min-dur"], 1);

    // A window that misses every event is an error, and writes nothing.
    let missed = dir.path().join("missed.pftrace");
    let mut options = MergeOptions::new(options.inputs.clone(), &missed);
    options.filters.window = Some("5s..6s".parse().unwrap());
    match merge(&options) {
        Err(MergeError::WindowSelectsNothing(message)) => assert_eq!(
            message,
            "--window 5000.000..6000.000 ms lies outside the capture span 0.000..0.100 ms \
             (after the origin): nothing selected, nothing written"
        ),
        other => panic!("{other:?}"),
    }
    assert!(!missed.exists());
}

fn input_error(result: Result<rankline_merge::MergeSummary, MergeError>) -> (String, InputProblem) {
    match result {
        Err(MergeError::Input(error)) => (error.input.clone(), error.problem),
        other => panic!("expected an input error, got {other:?}"),
    }
}

#[test]
fn bad_inputs_fail_clearly_and_keep_going_merges_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(
        dir.path(),
        "good-TP-0.trace.json",
        r#"[{"ph":"X","pid":1,"tid":1,"ts":1,"dur":1,"name":"ok"}]"#,
    );
    let empty = write(dir.path(), "empty-TP-1.trace.json", "");
    let not_trace = write(
        dir.path(),
        "notrace-TP-2.trace.json",
        r#"{"hello":"world"}"#,
    );
    let truncated = write(
        dir.path(),
        "cut-TP-3.trace.json.gz",
        r#"{"traceEvents":[{"ph":"X","ts":1,"dur":1},{"ph":"X","ts":"#,
    );
    let corrupt_path = dir.path().join("corrupt-TP-4.trace.json.gz");
    let mut bytes = fs::read(&truncated).unwrap();
    for b in bytes.iter_mut().skip(12).take(8) {
        *b ^= 0x5a;
    }
    fs::write(&corrupt_path, &bytes).unwrap();
    let corrupt = corrupt_path.display().to_string();
    let missing = dir.path().join("nope.trace.json").display().to_string();
    let out = dir.path().join("o.pftrace");

    let one = |input: &String| merge(&MergeOptions::new(vec![good.clone(), input.clone()], &out));
    let (named, problem) = input_error(one(&empty));
    assert_eq!(named, empty);
    assert!(matches!(problem, InputProblem::Empty));
    let (named, problem) = input_error(one(&not_trace));
    assert_eq!(named, not_trace);
    assert!(matches!(problem, InputProblem::NotATrace(_)));
    let (_, problem) = input_error(one(&truncated));
    assert!(
        matches!(problem, InputProblem::Truncated { events: 1 }),
        "{problem:?}"
    );
    let (named, problem) = input_error(one(&corrupt));
    assert_eq!(named, corrupt);
    assert!(
        matches!(problem, InputProblem::CorruptGzip(_)),
        "{problem:?}"
    );
    let (named, problem) = input_error(one(&missing));
    assert_eq!(named, missing);
    assert!(matches!(problem, InputProblem::NotFound));
    assert!(!out.exists(), "a failed merge writes nothing");

    let mut options = MergeOptions::new(
        vec![good, empty, not_trace, truncated, corrupt, missing],
        &out,
    );
    options.keep_going = true;
    let summary = merge(&options).unwrap();
    assert_eq!(summary.ranks.len(), 1);
    assert_eq!(summary.skipped.len(), 5);
    assert!(!summary.complete());
    assert_eq!(decode(&fs::read(&out).unwrap()).slices.len(), 1);
    let rendered = summary.render();
    assert!(
        rendered.contains("skipped TP-3-EP-0") && rendered.contains("truncated JSON"),
        "{rendered}"
    );
}

#[test]
fn a_rank_far_from_the_others_is_pointed_out() {
    let dir = tempfile::tempdir().unwrap();
    let near = kineto(r#"{"ph":"X","pid":7,"tid":8,"ts":1,"dur":5,"name":"k"}"#);
    let a = write(dir.path(), "n-TP-0.trace.json", &near);
    let b = write(dir.path(), "n-TP-1.trace.json", &near);
    // Same ts, but a base an hour later: its events overlap nobody's.
    let far = near.replace(
        &KINETO_BASE.to_string(),
        &(KINETO_BASE + 3_600_000_000_000).to_string(),
    );
    let c = write(dir.path(), "n-TP-2.trace.json", &far);
    let (summary, _) = pftrace(vec![a, b, c], dir.path());
    let far_warnings: Vec<&String> = summary
        .warnings
        .iter()
        .filter(|w| w.contains("do not overlap"))
        .collect();
    assert_eq!(far_warnings.len(), 1, "{:?}", summary.warnings);
    assert!(far_warnings[0].starts_with("TP-2-EP-0"));
    assert!(summary.render().contains("warning: TP-2-EP-0"));
}

#[test]
fn duplicate_ranks_and_unknown_outputs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a-TP-0.trace.json", "[]");
    let b = write(dir.path(), "b-TP-0.trace.json", "[]");
    let out = dir.path().join("o.pftrace");
    let (named, problem) = input_error(merge(&MergeOptions::new(vec![a.clone(), b], &out)));
    assert!(named.ends_with("b-TP-0.trace.json"));
    assert!(
        matches!(problem, InputProblem::Layout(ref why) if why.contains("rank TP-0-EP-0 again"))
    );
    let summary = merge(&MergeOptions::new(vec![a.clone(), a.clone()], &out)).unwrap();
    assert_eq!(summary.ranks.len(), 1, "the same file twice is merged once");
    assert!(matches!(
        merge(&MergeOptions::new(vec![a], dir.path().join("o.txt"))),
        Err(MergeError::Options(_))
    ));
}
