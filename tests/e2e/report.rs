//! `rankline report` and `rankline diff` on a real PD capture: `rankline
//! demo --pd` runs simulated prefill and decode servers, agents and a
//! coordinator as real processes and ends by writing the report. The
//! report's per-rank figures are checked against the same capture merged to
//! Chrome JSON and recomputed here; the page is opened in headless Chromium.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use rankline_e2e::run_rankline;
use serde_json::Value;

/// Runs `rankline ARGS`, asserting success; its stdout.
fn rankline(args: &[&str]) -> String {
    let output = run_rankline(args).unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "rankline {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The demo's capture folder and the report it printed.
fn demo(out: &Path) -> (PathBuf, PathBuf) {
    let stdout = rankline(&[
        "demo",
        "--pd",
        "--ranks",
        "2",
        "--duration",
        "300ms",
        "--out",
        out.to_str().unwrap(),
    ]);
    let review = stdout
        .lines()
        .find_map(|l| l.strip_prefix("review: "))
        .unwrap_or_else(|| panic!("no review line in:\n{stdout}"));
    let capture = std::fs::read_dir(out.join("captures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("manifest.json").is_file())
        .unwrap();
    (capture, PathBuf::from(review))
}

fn micros_to_ns(v: &Value) -> i64 {
    (v.as_f64().unwrap() * 1000.0).round() as i64
}

/// Per merged rank (pid / 1000): the union length of its device op slices
/// and its step annotations.
fn recompute(merged: &Path) -> BTreeMap<i64, (i64, usize)> {
    let trace: Value = serde_json::from_slice(&std::fs::read(merged).unwrap()).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    let mut processes: HashMap<i64, String> = HashMap::new();
    let mut threads: HashMap<(i64, i64), String> = HashMap::new();
    for e in events.iter().filter(|e| e["ph"] == "M") {
        let (pid, tid) = (e["pid"].as_i64().unwrap(), e["tid"].as_i64().unwrap_or(0));
        let name = e["args"]["name"].as_str().unwrap_or("").to_string();
        match e["name"].as_str() {
            Some("process_name") => drop(processes.insert(pid, name)),
            Some("thread_name") => drop(threads.insert((pid, tid), name)),
            _ => {}
        }
    }
    let mut spans: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
    let mut steps: BTreeMap<i64, usize> = BTreeMap::new();
    for e in events.iter().filter(|e| e["ph"] == "X") {
        let (pid, tid) = (e["pid"].as_i64().unwrap(), e["tid"].as_i64().unwrap());
        let rank = pid / 1000;
        let process = &processes[&pid];
        // merge spills overlapping slices to "XLA Ops (overlap N)" tracks.
        if process.ends_with("/device:TPU:0") && threads[&(pid, tid)].starts_with("XLA Ops") {
            let start = micros_to_ns(&e["ts"]);
            spans
                .entry(rank)
                .or_default()
                .push((start, start + micros_to_ns(&e["dur"])));
        }
        if process.ends_with("/host:CPU") && e["args"].get("step_num").is_some() {
            *steps.entry(rank).or_default() += 1;
        }
    }
    spans
        .into_iter()
        .map(|(rank, mut s)| {
            s.sort();
            let (mut total, mut end) = (0, i64::MIN);
            for (a, b) in s {
                let a = a.max(end);
                if b > a {
                    total += b - a;
                    end = b;
                }
            }
            (rank, (total, steps.get(&rank).copied().unwrap_or(0)))
        })
        .collect()
}

#[test]
fn a_pd_capture_is_reported_and_its_figures_match_the_merged_trace() {
    let out = tempfile::tempdir().unwrap();
    let (capture, review) = demo(out.path());
    assert!(review.is_file(), "{}", review.display());
    let capture = capture.to_str().unwrap();

    let json: Value = serde_json::from_str(&rankline(&[
        "report",
        capture,
        "-o",
        out.path().join("r.json").to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    let saved: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("r.json")).unwrap()).unwrap();
    assert_eq!(json, saved);

    let merged = out.path().join("merged.json");
    rankline(&["merge", capture, "-o", merged.to_str().unwrap()]);
    let expected = recompute(&merged);
    let ranks = json["ranks"].as_array().unwrap();
    assert_eq!(ranks.len(), 4);
    for (i, rank) in ranks.iter().enumerate() {
        let (busy, steps) = expected[&(i as i64 + 1)];
        let label = rank["rank"].as_str().unwrap();
        assert_eq!(rank["busy_basis"], "device", "{label}");
        assert_eq!(rank["busy_ns"].as_i64().unwrap(), busy, "{label}");
        assert_eq!(rank["steps"].as_array().unwrap().len(), steps, "{label}");
        let role = rank["role"].as_str().unwrap();
        assert!(
            rank["steps"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["stage"] == role),
            "{label}: a {role} worker's steps are {role} steps"
        );
    }
    let roles: Vec<&str> = json["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["decode", "prefill"]);
    let stages: Vec<&str> = json["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert!(stages.contains(&"prefill") && stages.contains(&"decode"));
    // Two servers of two ranks: every matched instance has one straggler.
    let stragglers: u64 = json["collectives"]["straggler_counts"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(stragglers, json["collectives"]["matched"].as_u64().unwrap());
    assert!(stragglers > 0);

    // A report compared with itself: nothing changed.
    let saved_path = out.path().join("r.json");
    let diff: Value = serde_json::from_str(&rankline(&[
        "diff",
        saved_path.to_str().unwrap(),
        saved_path.to_str().unwrap(),
        "-o",
        out.path().join("diff.html").to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    let ops = diff["ops"].as_array().unwrap();
    assert!(!ops.is_empty());
    assert!(ops
        .iter()
        .all(|o| o["change"] == "same" && o["delta_ns"] == 0 && o["a_ns"] == o["b_ns"]));

    assert!(
        opens_in_chromium(&review).contains("<svg"),
        "plots are inline SVG"
    );
    opens_in_chromium(&out.path().join("diff.html"));
}

/// Loads `page` in headless Chromium: its script must run to the end (it
/// marks the body) with no error on the console. The page as Chromium
/// parsed it (empty when Chromium is missing).
fn opens_in_chromium(page: &Path) -> String {
    let Some(chromium) = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok())
    else {
        println!("skipped: no chromium on PATH (apt-get install chromium)");
        return String::new();
    };
    let profile = tempfile::tempdir().unwrap();
    let output = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.canonicalize().unwrap().display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&output.stdout);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    assert!(
        dom.contains("data-report=\"ready\""),
        "{}: the page's script did not finish: {}\n{log}",
        page.display(),
        dom.chars().take(400).collect::<String>()
    );
    for line in log.lines() {
        assert!(
            !(line.contains("CONSOLE") || line.contains("Uncaught")),
            "{}: console error: {line}",
            page.display()
        );
    }
    assert!(
        !dom.contains("src=\"http") && !dom.contains("href=\"http"),
        "nothing is fetched"
    );
    dom.into_owned()
}
