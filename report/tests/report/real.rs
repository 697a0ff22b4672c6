//! The real JAX fixtures (CPU runs: host-only ranks) and `diff`: figures
//! recomputed from the trace.json.gz files with serde_json and plain loops.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use rankline_merge::{MergeOptions, SourceMode};
use rankline_report::{build, diff, Report};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/real-jax")
}

/// The one trace.json.gz under `dir`.
fn trace_in(dir: &Path) -> PathBuf {
    let profile = dir.join("plugins/profile");
    let run = std::fs::read_dir(profile)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::read_dir(run)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".trace.json.gz"))
        .unwrap()
}

/// One slice: start and end (ns relative to ts 0), name, args.
type Slice = (i64, i64, String, Value);

/// Per thread of a host-only trace: its slices, its name.
struct Threads {
    slices: BTreeMap<(i64, i64), Vec<Slice>>,
    names: HashMap<(i64, i64), String>,
}

impl Threads {
    /// The thread whose slices cover the most time, and that time.
    fn busiest(&self) -> (&(i64, i64), i64) {
        self.slices
            .iter()
            .map(|(key, s)| {
                let spans: Vec<(i64, i64)> = s.iter().map(|e| (e.0, e.1)).collect();
                (key, union_length(&spans))
            })
            .max_by_key(|(_, busy)| *busy)
            .unwrap()
    }
}

fn threads(path: &Path) -> Threads {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    let mut out = Threads {
        slices: BTreeMap::new(),
        names: HashMap::new(),
    };
    for e in json["traceEvents"].as_array().unwrap() {
        let key = (
            e["pid"].as_i64().unwrap_or(0),
            e["tid"].as_i64().unwrap_or(0),
        );
        match e["ph"].as_str() {
            Some("M") if e["name"] == "thread_name" => {
                out.names
                    .insert(key, e["args"]["name"].as_str().unwrap().to_string());
            }
            Some("X") => {
                let ns = |v: &Value| (v.as_f64().unwrap() * 1000.0).round() as i64;
                let start = ns(&e["ts"]);
                out.slices.entry(key).or_default().push((
                    start,
                    start + ns(&e["dur"]),
                    e["name"].as_str().unwrap().to_string(),
                    e["args"].clone(),
                ));
            }
            _ => {}
        }
    }
    out
}

fn union_length(spans: &[(i64, i64)]) -> i64 {
    let mut spans = spans.to_vec();
    spans.sort();
    let (mut total, mut end) = (0, i64::MIN);
    for (a, b) in spans {
        let a = a.max(end);
        if b > a {
            total += b - a;
            end = b;
        }
    }
    total
}

fn report_of(inputs: Vec<PathBuf>) -> Report {
    let options = MergeOptions {
        source: SourceMode::Json,
        ..MergeOptions::new(inputs.iter().map(|p| p.display().to_string()).collect(), "")
    };
    build(&options).unwrap()
}

#[test]
fn host_only_ranks_use_their_busiest_thread_and_say_so() {
    let dirs: Vec<PathBuf> = (0..4)
        .map(|i| fixtures().join(format!("jax_multi4/proc{i}")))
        .collect();
    let report = report_of(dirs.clone());
    assert_eq!(report.ranks.len(), 4);
    for (rank, dir) in report.ranks.iter().zip(&dirs) {
        let trace = threads(&trace_in(dir));
        let (busiest, busy) = trace.busiest();
        let label = &rank.rank;
        assert_eq!(
            rank.busy_basis,
            format!("host thread {}", trace.names[busiest]),
            "{label}"
        );
        assert_eq!(rank.busy_ns, busy, "{label}");
        let all = trace.slices.values().flatten();
        let lo = all.clone().map(|e| e.0).min().unwrap();
        let hi = all.map(|e| e.1).max().unwrap();
        assert_eq!(
            rank.window_end_ns - rank.window_start_ns,
            hi - lo,
            "{label}"
        );
        assert!(rank.compute_ns.is_none() && rank.overlap_fraction.is_none());
        // JAX StepTraceAnnotation("train", step_num=...): the steps.
        let mut steps: Vec<i64> = trace
            .slices
            .values()
            .flatten()
            .filter(|e| e.3.get("step_num").is_some())
            .map(|e| e.1 - e.0)
            .collect();
        steps.sort();
        let mut got: Vec<i64> = rank.steps.iter().map(|s| s.dur_ns()).collect();
        got.sort();
        assert_eq!(got, steps, "{label}");
        assert!(rank.steps.iter().all(|s| s.name == "train"));
        assert!(report
            .warnings
            .iter()
            .any(|w| w.starts_with(&format!("{label}: no device slices"))));
        // Its ops are the busiest thread's slices.
        let mut ops: BTreeMap<&str, i64> = BTreeMap::new();
        for e in &trace.slices[busiest] {
            *ops.entry(&e.2).or_default() += e.1 - e.0;
        }
        for (name, total) in ops {
            let op = report.top_ops.iter().find(|o| o.name == name).unwrap();
            assert_eq!(op.per_rank[label], total, "{label} {name}");
        }
    }
}

#[test]
fn a_sglang_jax_server_trace_is_reported() {
    let dir = fixtures().join("sglang_jax_cpu/run2_numsteps");
    let report = report_of(vec![dir.clone()]);
    let trace = threads(&trace_in(&dir));
    let rank = &report.ranks[0];
    let busiest = trace.busiest();
    assert_eq!(rank.busy_ns, busiest.1);
    assert!(rank.busy_basis.starts_with("host thread sglang::schedul"));
    let total: u64 = report.top_ops.iter().map(|o| o.count).sum();
    assert_eq!(total as usize, trace.slices[busiest.0].len());
    let html = rankline_report::html::render(&report);
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains("<svg"));
}

#[test]
fn diff_normalizes_per_step_and_names_each_change() {
    let dirs: Vec<PathBuf> = (0..2)
        .map(|i| fixtures().join(format!("jax_multi2/proc{i}")))
        .collect();
    let a = report_of(dirs);
    let mut b = a.clone();
    // B: twice the steps, one op twice as long per step, one gone, one new.
    for rank in &mut b.ranks {
        let more = rank.steps.clone();
        rank.steps.extend(more);
    }
    for op in &mut b.top_ops {
        op.total_ns *= 2;
        op.count *= 2;
    }
    let slower = b.top_ops[0].name.clone();
    b.top_ops[0].total_ns *= 2;
    let removed = b.top_ops.remove(1).name;
    let mut added = b.top_ops[0].clone();
    added.name = "fusion.new".into();
    added.total_ns = 1_000_000;
    b.top_ops.push(added);

    let d = diff::compare(&a, &b, diff::DEFAULT_THRESHOLD);
    assert_eq!(d.normalized_by, "step");
    let steps_a: usize = a.ranks.iter().map(|r| r.steps.len()).sum();
    let steps_b: usize = b.ranks.iter().map(|r| r.steps.len()).sum();
    assert_eq!(steps_b, 2 * steps_a);
    let find = |name: &str| d.ops.iter().find(|o| o.name == name).unwrap();
    let op_a = a.top_ops.iter().find(|o| o.name == slower).unwrap();
    // Per step of one rank: the total over every rank's steps.
    let per_step = |total: i64, steps: usize| (total as f64 / steps as f64).round() as i64;
    assert_eq!(find(&slower).a_ns, per_step(op_a.total_ns, steps_a));
    assert_eq!(find(&slower).b_ns, per_step(4 * op_a.total_ns, steps_b));
    assert_eq!(find(&slower).change, "slower");
    assert_eq!(
        find(&slower).delta_ns,
        find(&slower).b_ns - find(&slower).a_ns
    );
    assert_eq!(find(&removed).change, "removed");
    assert_eq!(find(&removed).b_ns, 0);
    assert_eq!(find("fusion.new").change, "added");
    assert_eq!(find("fusion.new").a_ns, 0);
    let same = d.ops.iter().filter(|o| o.change == "same").count() as u64;
    assert_eq!(d.counts["same"], same);
    assert_eq!(same as usize, a.top_ops.len() - 2);
    assert_eq!(
        d.counts["added"] + d.counts["removed"] + d.counts["slower"],
        3
    );
    let html = diff::render(&d, "a", "b");
    assert!(html.contains("fusion.new") && html.contains("<svg"));
}
