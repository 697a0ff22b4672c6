//! Every figure of a report checked against an independent computation:
//! the simulated server's writer makes four sglang-jax ranks with an
//! injected straggler (TP-2) and an injected idle gap, one of them with its
//! `.xplane.pb` only; the test recomputes busy/idle, steps, stage
//! percentiles, op totals and collective matching from the JSON files
//! directly (serde_json, plain loops) and compares.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use rankline_merge::{MergeOptions, SourceMode};
use rankline_report::{build, percentile, Report};
use rankline_simserver::synthetic::{write_jax_rank, SyntheticRank};
use serde_json::Value;

const STEP_NS: i64 = 2_000_000;
const EVENTS_PER_STEP: usize = 300;
const STEPS: usize = 40;
/// After step 20, this many step periods pass with no step.
const GAP_PERIODS: u32 = 10;
const STRAGGLER: usize = 2;
const START: i64 = 1_700_000_000_000_000_000;

struct Capture {
    _dir: tempfile::TempDir,
    /// One JAX log dir per rank, in rank order.
    inputs: Vec<String>,
    /// Each rank's trace.json.gz (the xplane-only rank's is kept aside).
    json: Vec<PathBuf>,
    /// Where TP-3's trace.json.gz was.
    rank3_json_home: PathBuf,
}

fn capture() -> Capture {
    let dir = tempfile::tempdir().unwrap();
    let mut inputs = Vec::new();
    let mut json = Vec::new();
    let mut rank3_json_home = PathBuf::new();
    for rank in 0..4u32 {
        let mut spec = SyntheticRank::new(
            &format!("host{rank}"),
            START + i64::from(rank) * 1_000,
            EVENTS_PER_STEP * STEPS,
            rank,
        );
        spec.shape.events_per_step = EVENTS_PER_STEP;
        spec.shape.collectives_per_step = 3;
        spec.shape.step_ns = STEP_NS;
        spec.first_collective_end_unix_ns = Some(START + 3 * STEP_NS);
        spec.straggler = rank as usize == STRAGGLER;
        spec.idle_gaps = vec![(20, GAP_PERIODS)];
        let logdir = dir.path().join(format!("rank{rank}"));
        let files = write_jax_rank(&logdir, &spec).unwrap();
        if rank == 3 {
            // The xplane-only rank: its JSON is only the oracle's.
            let aside = dir.path().join("rank3-oracle.trace.json.gz");
            std::fs::rename(&files.trace_json_gz, &aside).unwrap();
            rank3_json_home = files.trace_json_gz;
            json.push(aside);
        } else {
            json.push(files.trace_json_gz);
        }
        inputs.push(logdir.display().to_string());
    }
    Capture {
        _dir: dir,
        inputs,
        json,
        rank3_json_home,
    }
}

/// One complete event of a JAX JSON trace, on epoch ns.
struct Event {
    pid: i64,
    tid: i64,
    name: String,
    start: i64,
    end: i64,
    args: Value,
}

/// A rank's trace as the oracle reads it: events and track names.
struct Trace {
    events: Vec<Event>,
    processes: HashMap<i64, String>,
    threads: HashMap<(i64, i64), String>,
}

fn micros_to_ns(v: &Value) -> i64 {
    (v.as_f64().unwrap() * 1000.0).round() as i64
}

fn load(path: &Path, base: i64) -> Trace {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    let mut trace = Trace {
        events: Vec::new(),
        processes: HashMap::new(),
        threads: HashMap::new(),
    };
    for e in json["traceEvents"].as_array().unwrap() {
        let pid = e["pid"].as_i64().unwrap_or(0);
        let tid = e["tid"].as_i64().unwrap_or(0);
        match e["ph"].as_str() {
            Some("M") if e["name"] == "process_name" => {
                trace
                    .processes
                    .insert(pid, e["args"]["name"].as_str().unwrap().into());
            }
            Some("M") if e["name"] == "thread_name" => {
                trace
                    .threads
                    .insert((pid, tid), e["args"]["name"].as_str().unwrap().into());
            }
            Some("X") => {
                let start = base + micros_to_ns(&e["ts"]);
                trace.events.push(Event {
                    pid,
                    tid,
                    name: e["name"].as_str().unwrap().into(),
                    start,
                    end: start + micros_to_ns(&e["dur"]),
                    args: e["args"].clone(),
                });
            }
            _ => {}
        }
    }
    trace
}

fn union_length(mut spans: Vec<(i64, i64)>) -> (i64, Vec<(i64, i64)>) {
    spans.sort();
    let mut merged: Vec<(i64, i64)> = Vec::new();
    for (s, e) in spans {
        if let Some(last) = merged.last_mut() {
            if s <= last.1 {
                last.1 = last.1.max(e);
                continue;
            }
        }
        merged.push((s, e));
    }
    (merged.iter().map(|(s, e)| e - s).sum(), merged)
}

fn overlap(a: &[(i64, i64)], b: &[(i64, i64)]) -> i64 {
    let mut total = 0;
    for x in a {
        for y in b {
            total += (x.1.min(y.1) - x.0.max(y.0)).max(0);
        }
    }
    total
}

const FAMILIES: [&str; 5] = [
    "all-reduce",
    "all-gather",
    "reduce-scatter",
    "all-to-all",
    "collective-permute",
];

fn is_collective(name: &str) -> bool {
    let base = name.split('.').next().unwrap();
    FAMILIES.contains(&base.strip_suffix("-done").unwrap_or(base))
}

/// What the oracle expects of one rank.
struct Expected {
    window: (i64, i64),
    busy: i64,
    idle_in_steps: i64,
    compute: i64,
    comm: i64,
    overlap: i64,
    steps: Vec<(i64, i64)>,
    ops: BTreeMap<String, (i64, u64)>,
    /// (run_id, hlo_op) -> starts in time order.
    collectives: BTreeMap<(String, String), Vec<i64>>,
}

fn expect(trace: &Trace) -> Expected {
    let device_ops: Vec<&Event> = trace
        .events
        .iter()
        .filter(|e| {
            trace.processes[&e.pid].starts_with("/device:")
                && trace.threads[&(e.pid, e.tid)] == "XLA Ops"
        })
        .collect();
    let window = (
        trace.events.iter().map(|e| e.start).min().unwrap(),
        trace.events.iter().map(|e| e.end).max().unwrap(),
    );
    let (busy, busy_spans) = union_length(device_ops.iter().map(|e| (e.start, e.end)).collect());
    let (compute, compute_spans) = union_length(
        device_ops
            .iter()
            .filter(|e| !is_collective(&e.name))
            .map(|e| (e.start, e.end))
            .collect(),
    );
    let (comm, comm_spans) = union_length(
        device_ops
            .iter()
            .filter(|e| is_collective(&e.name))
            .map(|e| (e.start, e.end))
            .collect(),
    );
    let mut steps: Vec<(i64, i64)> = trace
        .events
        .iter()
        .filter(|e| e.pid == 701 && e.args.get("step_num").is_some())
        .map(|e| (e.start, e.end))
        .collect();
    steps.sort();
    let step_busy = overlap(&steps, &busy_spans);
    let mut ops: BTreeMap<String, (i64, u64)> = BTreeMap::new();
    let mut collectives: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
    for e in &device_ops {
        let op = ops.entry(e.name.clone()).or_default();
        op.0 += e.end - e.start;
        op.1 += 1;
        if is_collective(&e.name) {
            let key = (
                e.args["run_id"].as_str().unwrap().to_string(),
                e.args["hlo_op"].as_str().unwrap().to_string(),
            );
            collectives.entry(key).or_default().push(e.start);
        }
    }
    for starts in collectives.values_mut() {
        starts.sort();
    }
    Expected {
        window,
        busy,
        idle_in_steps: steps.iter().map(|(s, e)| e - s).sum::<i64>() - step_busy,
        compute,
        comm,
        overlap: overlap(&compute_spans, &comm_spans),
        steps,
        ops,
        collectives,
    }
}

fn check(report: &Report, expected: &[Expected]) {
    assert_eq!(report.ranks.len(), 4);
    let labels: Vec<String> = report.ranks.iter().map(|r| r.rank.clone()).collect();
    assert_eq!(labels, ["TP-0-EP-0", "TP-1-EP-0", "TP-2-EP-0", "TP-3-EP-0"]);
    for (rank, want) in report.ranks.iter().zip(expected) {
        let label = &rank.rank;
        assert_eq!(rank.busy_basis, "device", "{label}");
        assert_eq!(
            (rank.window_start_ns, rank.window_end_ns),
            want.window,
            "{label}"
        );
        assert_eq!(rank.busy_ns, want.busy, "{label}");
        let window = (want.window.1 - want.window.0) as f64;
        assert!((rank.busy_fraction - want.busy as f64 / window).abs() < 1e-12);
        assert!((rank.busy_fraction + rank.idle_fraction - 1.0).abs() < 1e-12);
        assert_eq!(rank.idle_in_steps_ns, want.idle_in_steps, "{label}");
        assert_eq!(
            rank.idle_between_steps_ns,
            (want.window.1 - want.window.0) - want.busy - want.idle_in_steps,
            "{label}"
        );
        assert_eq!(rank.compute_ns, Some(want.compute), "{label}");
        assert_eq!(rank.comm_ns, Some(want.comm), "{label}");
        assert_eq!(rank.overlap_ns, Some(want.overlap), "{label}");
        let steps: Vec<(i64, i64)> = rank.steps.iter().map(|s| (s.start_ns, s.end_ns)).collect();
        assert_eq!(steps, want.steps, "{label}");
        // By construction: the injected gap is idle between steps.
        assert!(
            rank.idle_between_steps_ns >= i64::from(GAP_PERIODS - 1) * STEP_NS,
            "{label}: {}",
            rank.idle_between_steps_ns
        );
    }

    let mut durations: Vec<i64> = expected
        .iter()
        .flat_map(|e| e.steps.iter().map(|(s, e)| e - s))
        .collect();
    durations.sort();
    assert_eq!(report.stages.len(), 1);
    let stage = &report.stages[0];
    assert_eq!(stage.stage, "step");
    assert_eq!(stage.count as usize, durations.len());
    assert_eq!(stage.p50_ns, percentile(&durations, 50));
    assert_eq!(stage.p90_ns, percentile(&durations, 90));
    assert_eq!(stage.p99_ns, percentile(&durations, 99));
    assert_eq!(stage.max_ns, *durations.last().unwrap());

    let mut ops: BTreeMap<&str, (i64, u64, BTreeMap<&str, i64>)> = BTreeMap::new();
    for (want, label) in expected.iter().zip(&report.ranks) {
        for (name, (total, count)) in &want.ops {
            let op = ops.entry(name).or_default();
            op.0 += total;
            op.1 += count;
            op.2.insert(&label.rank, *total);
        }
    }
    assert_eq!(report.top_ops.len(), ops.len());
    for op in &report.top_ops {
        let (total, count, per_rank) = &ops[op.name.as_str()];
        assert_eq!(op.total_ns, *total, "{}", op.name);
        assert_eq!(op.count, *count, "{}", op.name);
        let got: BTreeMap<&str, i64> = op.per_rank.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(&got, per_rank, "{}", op.name);
        assert_eq!(op.max_ns, *per_rank.values().max().unwrap());
    }
    assert!(report
        .top_ops
        .windows(2)
        .all(|w| w[0].total_ns >= w[1].total_ns));
    let collective_total: i64 = report
        .top_ops
        .iter()
        .filter(|o| is_collective(&o.name))
        .map(|o| o.total_ns)
        .sum();
    let category = report
        .categories
        .iter()
        .find(|c| c.category == "collective")
        .unwrap();
    assert_eq!(category.total_ns, collective_total);

    // Collectives: every (run_id, hlo_op) occurrence matched over 4 ranks.
    let mut matched = 0;
    let mut stragglers: BTreeMap<String, u64> = BTreeMap::new();
    let mut waits: BTreeMap<String, i64> = BTreeMap::new();
    let mut lateness: BTreeMap<String, i64> = BTreeMap::new();
    let mut skews = Vec::new();
    for (key, starts) in &expected[0].collectives {
        let all: Vec<&Vec<i64>> = expected.iter().map(|e| &e.collectives[key]).collect();
        for i in 0..starts.len() {
            let arrivals: Vec<i64> = all.iter().map(|s| s[i]).collect();
            let last = *arrivals.iter().max().unwrap();
            let first = *arrivals.iter().min().unwrap();
            let who = arrivals.iter().position(|a| *a == last).unwrap();
            matched += 1;
            skews.push(last - first);
            *stragglers.entry(labels[who].clone()).or_default() += 1;
            for (r, a) in arrivals.iter().enumerate() {
                *waits.entry(labels[r].clone()).or_default() += last - a;
                *lateness.entry(labels[r].clone()).or_default() += a - first;
            }
        }
    }
    skews.sort();
    let c = &report.collectives;
    assert_eq!(c.matched, matched);
    for label in &labels {
        assert_eq!(
            c.straggler_counts[label],
            stragglers.get(label).copied().unwrap_or(0),
            "{label}"
        );
        assert_eq!(c.wait_charged_ns[label], waits[label], "{label}");
        assert_eq!(c.lateness_ns[label], lateness[label], "{label}");
    }
    assert_eq!(c.skew_p50_ns, percentile(&skews, 50));
    assert_eq!(c.skew_p99_ns, percentile(&skews, 99));
    assert_eq!(c.skew_max_ns, *skews.last().unwrap());
    // By construction: the injected straggler is last at every step's first
    // collective, so at least once per step, and more often than anyone.
    let steps = expected[STRAGGLER].steps.len() as u64;
    let straggler = &labels[STRAGGLER];
    assert!(c.straggler_counts[straggler] >= steps, "{c:?}");
    assert!(labels
        .iter()
        .filter(|l| *l != straggler)
        .all(|l| c.straggler_counts[l] < c.straggler_counts[straggler]
            && c.lateness_ns[l] < c.lateness_ns[straggler]));
    // The heat map: one row per rank, one column per step of TP-0.
    let map = &c.heatmaps[0];
    assert_eq!(map.ranks, labels);
    assert_eq!(map.steps.len(), expected[0].steps.len());
    let row_sum = |r: usize| map.stragglers[r].iter().map(|&n| u64::from(n)).sum::<u64>();
    assert!(row_sum(STRAGGLER) >= steps);
}

/// The oracle's figures for every rank, from the JSON files.
fn expected(capture: &Capture) -> Vec<Expected> {
    capture
        .json
        .iter()
        .enumerate()
        .map(|(rank, path)| expect(&load(path, START + rank as i64 * 1_000)))
        .collect()
}

#[test]
fn every_figure_matches_an_independent_computation() {
    let capture = capture();
    let expected = expected(&capture);
    assert!(expected.iter().all(|e| e.steps.len() == STEPS));

    // Every rank from its .xplane.pb (TP-3 has nothing else).
    let report = build(&MergeOptions::new(capture.inputs.clone(), "")).unwrap();
    assert!(report.ranks.iter().all(|r| r.source == "xplane"));
    check(&report, &expected);
    let json = serde_json::to_value(&report).unwrap();
    for field in ["rank", "busy_fraction", "idle_fraction", "steps"] {
        assert!(json["ranks"][0].get(field).is_some(), "{field}");
    }
    for field in ["name", "category", "total_ns", "count", "per_rank"] {
        assert!(json["top_ops"][0].get(field).is_some(), "{field}");
    }
    assert!(json["collectives"]["matched"].is_u64());
    assert!(json["collectives"]["straggler_counts"]["TP-2-EP-0"].is_u64());
    let back: Report = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);
}

#[test]
fn json_sources_give_the_same_figures() {
    let capture = capture();
    let expected = expected(&capture);
    // TP-0..2 from their trace.json.gz; TP-3 has no JSON, so its JSON copy
    // is put back for this run.
    std::fs::copy(&capture.json[3], &capture.rank3_json_home).unwrap();
    let options = MergeOptions {
        source: SourceMode::Json,
        ..MergeOptions::new(capture.inputs.clone(), "")
    };
    let report = build(&options).unwrap();
    assert!(report.ranks.iter().all(|r| r.source == "json"));
    check(&report, &expected);
}
