//! A generated `.xplane.pb` far past the JSON export's 1,000,000-event cap,
//! on several device planes, converts with every event present, its lines
//! on two workers at once, and the converting process's peak memory stays
//! under workers (2) x (2 x the largest line's encoded size + 16 MB) +
//! 16 MB: each worker reads one line at a time, never the file.
//!
//! The conversion runs in a child process (this test binary again, running
//! [`child_merge`]), so its peak RSS is its own.

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use rankline_merge::{merge, MergeOptions};
use rankline_xplane::synth::{write_synthetic_space, SynthSpec};
use serde_json::Value;

/// Lines converted at once (each worker holds one).
const WORKERS: usize = 2;

/// Where the child reads its input and writes its output and summary.
const CHILD_DIR: &str = "RANKLINE_TEST_CHILD_MERGE_DIR";

/// Not a test of its own: the child side of the test below. It does
/// nothing unless that test started it.
#[test]
#[ignore = "run by big_xplane_converts_every_event_in_bounded_memory in a child process"]
fn child_merge() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let dir = Path::new(&dir);
    let mut options = MergeOptions::new(
        vec![dir.join("tpu-host.xplane.pb").display().to_string()],
        dir.join("out.pftrace"),
    );
    options.jobs = Some(WORKERS);
    let summary = merge(&options).unwrap();
    fs::write(
        dir.join("summary.json"),
        serde_json::to_vec(&summary).unwrap(),
    )
    .unwrap();
}

/// Runs [`child_merge`] on `dir`; returns the child's peak RSS in bytes.
fn run_child(dir: &Path) -> u64 {
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "xplane_big::child_merge",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_DIR, dir)
        .status()
        .unwrap();
    assert!(status.success(), "the child merge failed: {status}");
    // The largest peak among this process's waited-for children: the only
    // child this test binary starts is that one.
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: writes into a valid local.
    let done = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    assert_eq!(done, 0, "getrusage failed");
    // Linux reports kilobytes.
    usage.ru_maxrss as u64 * 1024
}

#[test]
fn big_xplane_converts_every_event_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let spec = SynthSpec {
        device_planes: 8,
        lines_per_plane: 3,
        events_per_line: 50_000,
        stats_per_event: 6,
        host_events: 20_000,
        ..SynthSpec::default()
    };
    let file = fs::File::create(dir.path().join("tpu-host.xplane.pb")).unwrap();
    let counts = write_synthetic_space(file, &spec).unwrap();
    assert!(counts.events > 1_000_000, "{counts:?}");
    let bound = WORKERS as u64 * (2 * counts.largest_line_bytes + (16 << 20)) + (16 << 20);
    assert!(
        counts.bytes > bound,
        "the file ({} bytes) is larger than the bound ({bound}), so holding it would fail",
        counts.bytes
    );

    let peak = run_child(dir.path());
    eprintln!(
        "{} events ({} aggregated) in {:.1} MB, largest line {:.1} MB: peak RSS {:.1} MB, bound {:.1} MB",
        counts.events,
        counts.aggregated,
        counts.bytes as f64 / 1e6,
        counts.largest_line_bytes as f64 / 1e6,
        peak as f64 / 1e6,
        bound as f64 / 1e6
    );
    assert!(peak < bound, "peak RSS {peak} bytes >= bound {bound}");

    let summary: Value =
        serde_json::from_slice(&fs::read(dir.path().join("summary.json")).unwrap()).unwrap();
    let rank = &summary["ranks"][0];
    assert_eq!(rank["source"], "xplane");
    assert_eq!(rank["xplane"]["events"], counts.events + counts.aggregated);
    assert_eq!(rank["xplane"]["aggregated"], counts.aggregated);
    assert_eq!(rank["events_out"], counts.events);

    // Every span is in the output, once, on its plane's tracks; no aggregate is.
    let mut per_group: BTreeMap<String, u64> = BTreeMap::new();
    let mut slices = 0u64;
    let output = fs::read(dir.path().join("out.pftrace")).unwrap();
    common::decode_with(&output, false, |slice| {
        slices += 1;
        *per_group
            .entry(slice.group.unwrap_or_else(|| "host".into()))
            .or_default() += 1;
    });
    assert_eq!(slices, counts.events);
    assert_eq!(per_group.len(), 9, "{per_group:?}");
    let device_events = per_group["TPU:0"];
    assert!(device_events > 140_000, "{per_group:?}");
    assert!(
        (1..8).all(|d| per_group[&format!("TPU:{d}")] == device_events),
        "{per_group:?}"
    );
}
