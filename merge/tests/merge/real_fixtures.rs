//! The real JAX / sglang-jax fixtures merge correctly: every complete event
//! exactly once, at its absolute time, strictly nested per track, and
//! `jax_multi4`'s collectives line up once each rank's profile start is used.

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use common::{decode, fixtures, jax_run_dir, read_gz};
use rankline_merge::{merge, BaseSource, MergeOptions};
use serde_json::Value;

/// (process, name, start, end) of every `X` event of a JAX log dir, placed
/// by the xplane's profile start (computed here independently of merge).
fn expected_events(log_dir: &Path, process: &str) -> Vec<(String, String, i64, i64)> {
    let run = jax_run_dir(log_dir);
    let xplane = fs::File::open(run.join("vm.xplane.pb")).unwrap();
    let start = rankline_xplane::read_profile_times(std::io::BufReader::new(xplane))
        .unwrap()
        .start_unix_ns
        .unwrap();
    let trace: Value = serde_json::from_str(&read_gz(&run.join("vm.trace.json.gz"))).unwrap();
    trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X")
        .map(|e| {
            let ts = (e["ts"].as_f64().unwrap() * 1000.0).round() as i64;
            let dur = (e["dur"].as_f64().unwrap() * 1000.0).round() as i64;
            (
                process.to_string(),
                e["name"].as_str().unwrap().to_string(),
                start + ts,
                start + ts + dur,
            )
        })
        .collect()
}

fn merged_events(decoded: &common::Decoded) -> Vec<(String, String, i64, i64)> {
    decoded
        .slices
        .iter()
        .map(|s| (s.process.clone(), s.name.clone(), s.start, s.end))
        .collect()
}

fn multi4_dirs() -> Vec<PathBuf> {
    (0..4)
        .map(|i| fixtures().join(format!("jax_multi4/proc{i}")))
        .collect()
}

fn strings(paths: &[PathBuf]) -> Vec<String> {
    paths.iter().map(|p| p.display().to_string()).collect()
}

#[test]
fn jax_multi4_merges_every_event_once_at_its_absolute_time() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("multi4.pftrace");
    let summary = merge(&MergeOptions::new(strings(&multi4_dirs()), &out)).unwrap();

    assert_eq!(summary.ranks.len(), 4);
    assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);
    for rank in &summary.ranks {
        assert_eq!(rank.time_base, BaseSource::Xplane);
        let dropped: u64 = rank.stats.dropped.values().sum();
        assert_eq!(
            rank.stats.events_in,
            rank.stats.events_out + rank.stats.metadata + dropped
        );
        assert_eq!(dropped, 0);
    }

    let decoded = decode(&fs::read(&out).unwrap());
    // Each rank's own sequence, and one per line of the xplanes read.
    let lines: u64 = summary
        .ranks
        .iter()
        .map(|r| r.stats.xplane.map_or(0, |x| x.lines))
        .sum();
    assert_eq!(
        decoded.sequences as u64,
        4 + lines,
        "a sequence per rank and line"
    );
    let mut expected: Vec<_> = multi4_dirs()
        .iter()
        .enumerate()
        .flat_map(|(i, dir)| expected_events(dir, &format!("unified-0 TP-{i} EP-0 (vm)")))
        .collect();
    let mut merged = merged_events(&decoded);
    expected.sort();
    merged.sort();
    assert_eq!(merged.len(), expected.len());
    assert_eq!(merged, expected, "every X event exactly once, at base + ts");

    // proc0's trace has events that overlap without nesting: they are on a
    // sibling track, not dropped.
    assert!(decoded
        .tracks
        .values()
        .any(|(name, _)| name.contains("(overlap 1)")));
}

#[test]
fn jax_multi4_collectives_line_up_on_the_merged_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("multi4.pftrace");
    merge(&MergeOptions::new(strings(&multi4_dirs()), &out)).unwrap();
    let decoded = decode(&fs::read(&out).unwrap());

    // all-reduce ends per run_id: on the merged timeline, and by relative ts.
    let mut merged_ends: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for slice in decoded.slices.iter().filter(|s| s.name == "all-reduce") {
        merged_ends
            .entry(slice.args["run_id"].clone())
            .or_default()
            .push(slice.end);
    }
    let mut relative_ends: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for dir in multi4_dirs() {
        let trace: Value =
            serde_json::from_str(&read_gz(&jax_run_dir(&dir).join("vm.trace.json.gz"))).unwrap();
        for e in trace["traceEvents"].as_array().unwrap() {
            if e["name"] == "all-reduce" {
                let end =
                    ((e["ts"].as_f64().unwrap() + e["dur"].as_f64().unwrap()) * 1000.0) as i64;
                relative_ends
                    .entry(e["args"]["run_id"].as_str().unwrap().to_string())
                    .or_default()
                    .push(end);
            }
        }
    }
    let spread = |ends: &Vec<i64>| ends.iter().max().unwrap() - ends.iter().min().unwrap();
    let shared: Vec<&String> = merged_ends
        .keys()
        .filter(|k| merged_ends[*k].len() == 4)
        .collect();
    assert!(
        !shared.is_empty(),
        "all-reduce launches shared by the 4 ranks"
    );
    for run_id in shared {
        let merged = spread(&merged_ends[run_id]);
        let relative = spread(&relative_ends[run_id]);
        assert!(
            merged <= 4_000_000,
            "run_id {run_id}: ends {merged} ns apart when merged"
        );
        assert!(
            relative > 8_000_000,
            "run_id {run_id}: by relative ts {relative} ns apart"
        );
    }
}

/// `(total X events, Python-tracer X events)` of a sglang-jax fixture.
fn counts(run_dir: &Path) -> (usize, usize) {
    let trace: Value = serde_json::from_str(&read_gz(&run_dir.join("vm.trace.json.gz"))).unwrap();
    let complete: Vec<&Value> = trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X")
        .collect();
    let python = complete
        .iter()
        .filter(|e| e["name"].as_str().unwrap().starts_with('$'))
        .count();
    (complete.len(), python)
}

#[test]
fn sglang_jax_traces_merge_with_and_without_python_events() {
    let runs =
        ["run1", "run2_numsteps", "default"].map(|r| fixtures().join("sglang_jax_cpu").join(r));
    let (mut total, mut python) = (0, 0);
    for run in &runs {
        let (t, p) = counts(&jax_run_dir(run));
        total += t;
        python += p;
    }
    assert!(
        python * 10 > total * 9,
        "the fixtures are mostly Python-tracer events"
    );
    let dir = tempfile::tempdir().unwrap();

    let all = dir.path().join("all.pftrace");
    let summary = merge(&MergeOptions::new(strings(&runs), &all)).unwrap();
    assert_eq!(summary.ranks.len(), 3);
    let decoded = decode(&fs::read(&all).unwrap());
    assert_eq!(decoded.slices.len(), total);

    let lean = dir.path().join("lean.pftrace");
    let mut options = MergeOptions::new(strings(&runs), &lean);
    options.filters.drop_python = true;
    let summary = merge(&options).unwrap();
    let dropped: u64 = summary
        .ranks
        .iter()
        .map(|r| {
            r.stats
                .dropped
                .get("python tracer (--drop-python)")
                .copied()
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(dropped as usize, python);
    let decoded = decode(&fs::read(&lean).unwrap());
    assert_eq!(decoded.slices.len(), total - python);
    assert!(decoded.slices.iter().all(|s| !s.name.starts_with('$')));
    assert!(
        fs::metadata(&lean).unwrap().len() * 5 < fs::metadata(&all).unwrap().len(),
        "dropping Python events shrinks the output"
    );
}

#[test]
fn every_fixture_merges_into_a_valid_trace() {
    let inputs = [
        "jax_single",
        "jax012_single",
        "jax_multi2/proc0",
        "jax_multi2/proc1",
        "jax_samedir_collision",
    ]
    .map(|d| fixtures().join(d));
    let dir = tempfile::tempdir().unwrap();
    for (format, name) in [
        ("pftrace", "all.pftrace"),
        ("json", "all.json.gz"),
        ("zip", "all.zip"),
    ] {
        let out = dir.path().join(name);
        let summary = merge(&MergeOptions::new(strings(&inputs), &out)).unwrap();
        assert_eq!(summary.ranks.len(), 5, "{format}");
        let complete: u64 = summary.ranks.iter().map(|r| r.stats.complete_events).sum();
        let out_events: u64 = summary.ranks.iter().map(|r| r.stats.events_out).sum();
        assert_eq!(complete, out_events, "{format}: every X event written");
        if format == "pftrace" {
            assert_eq!(
                decode(&fs::read(&out).unwrap()).slices.len() as u64,
                complete
            );
        }
    }
}
