//! Demo captures (unified and prefill/decode), merged by the `rankline`
//! binary into every output format from both of each rank's files, open in
//! Perfetto's own importer (`trace_processor_shell`) as a user would open
//! them: exit status 0, no error, data-loss or silently-skipped stat, one
//! slice per event the merge summary says it wrote, and in the `.zip` a
//! machine per host. Skips, saying why, only without the binary.

use std::path::{Path, PathBuf};

use rankline_e2e::{run_rankline, TraceProcessor};
use rankline_layout::Manifest;
use serde_json::Value;

const FORMATS: [&str; 4] = ["pftrace", "json", "json.gz", "zip"];

/// Runs `rankline demo` with `extra` flags; its folder and capture folder.
fn demo_capture(extra: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let out = tempfile::tempdir().unwrap();
    let mut args = vec!["demo", "--out", out.path().to_str().unwrap()];
    args.extend_from_slice(extra);
    let run = run_rankline(&args).unwrap();
    assert!(
        run.status.success(),
        "demo failed ({}):\n{}{}",
        run.status,
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let capture = std::fs::read_dir(out.path().join("captures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("manifest.json").is_file())
        .expect("the demo's capture");
    (out, capture)
}

/// `rankline merge CAPTURE -o OUT --source SOURCE --json`: its summary.
fn merge(capture: &Path, source: &str, out: &Path) -> Value {
    let run = run_rankline(&[
        "merge",
        capture.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--source",
        source,
        "--json",
    ])
    .unwrap();
    assert!(
        run.status.success(),
        "merge into {} failed:\n{}",
        out.display(),
        String::from_utf8_lossy(&run.stderr)
    );
    serde_json::from_slice(&run.stdout).unwrap()
}

/// Merges `capture` into every format from both sources and has
/// trace_processor import each; says what failed.
fn check_every_output(tp: &TraceProcessor, capture: &Path, dir: &Path) -> Vec<String> {
    let mut failures = Vec::new();
    for source in ["json", "xplane"] {
        for format in FORMATS {
            let out = dir.join(format!("merged-{source}.{format}"));
            let summary = merge(capture, source, &out);
            let events_out: u64 = summary["ranks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["events_out"].as_u64().unwrap())
                .sum();
            assert!(events_out > 0, "{summary}");
            if let Err(error) = tp.ensure_clean(&out, events_out) {
                failures.push(format!("--source {source} as .{format}: {error:#}"));
            }
        }
    }
    failures
}

/// The hosts of a capture's ranks, sorted, once each.
fn hosts(capture: &Path) -> Vec<String> {
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(capture.join("manifest.json")).unwrap()).unwrap();
    let mut hosts: Vec<String> = manifest
        .ranks
        .iter()
        .map(|r| r.identity.host.clone())
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

#[test]
fn every_output_of_a_demo_capture_imports_cleanly_with_a_machine_per_host() {
    let Some(tp) = TraceProcessor::find() else {
        return;
    };
    let (dir, capture) = demo_capture(&["--duration", "500ms"]);
    let failures = check_every_output(&tp, &capture, dir.path());
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let machines = tp
        .query(
            &dir.path().join("merged-xplane.zip"),
            "select name from machine order by name;",
        )
        .unwrap();
    let names: Vec<String> = machines[0].rows.iter().map(|r| r[0].clone()).collect();
    assert_eq!(names, hosts(&capture));
}

#[test]
fn every_output_of_a_prefill_decode_demo_capture_imports_cleanly() {
    let Some(tp) = TraceProcessor::find() else {
        return;
    };
    // Its decode steps overlap without nesting: Chrome JSON output must
    // spill them to sibling threads, as the .pftrace does to sibling tracks.
    let (dir, capture) = demo_capture(&["--pd"]);
    let failures = check_every_output(&tp, &capture, dir.path());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
