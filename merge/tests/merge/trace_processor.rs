//! Perfetto's own importer (`trace_processor_shell`, the engine behind
//! ui.perfetto.dev) opens every output format merged from the real JAX and
//! sglang-jax fixtures, read from their Chrome JSON and from their xplanes:
//! no error, data-loss or silently-skipped stat, and one slice per event
//! merged. The `.zip` holds the same slices as the `.pftrace`, each rank on
//! its host's machine, and the times it reads from a `.pftrace` (written as
//! deltas on a sequence clock) are the ones our own decoder reads. Skips,
//! saying why, only without the binary.

use std::path::{Path, PathBuf};

use rankline_e2e::{fixture, TraceProcessor};

use crate::common;
use rankline_merge::{merge, MergeOptions, MergeSummary, SourceMode};

const FORMATS: [&str; 4] = ["pftrace", "json", "json.gz", "zip"];

/// The four processes of `jax_multi4`, one host's ranks.
fn jax_multi4() -> Vec<PathBuf> {
    (0..4)
        .map(|i| fixture(&format!("jax_multi4/proc{i}")))
        .collect()
}

/// Each fixture merge: a name and its inputs.
fn fixture_merges() -> Vec<(&'static str, Vec<PathBuf>)> {
    let procs = |dir: &str, n: usize| -> Vec<PathBuf> {
        (0..n).map(|i| fixture(&format!("{dir}/proc{i}"))).collect()
    };
    vec![
        ("jax_multi4", jax_multi4()),
        ("jax_multi2", procs("jax_multi2", 2)),
        ("jax_single", vec![fixture("jax_single")]),
        ("jax012_single", vec![fixture("jax012_single")]),
        ("sglang_default", vec![fixture("sglang_jax_cpu/default")]),
        ("sglang_run1", vec![fixture("sglang_jax_cpu/run1")]),
        (
            "sglang_numsteps",
            vec![fixture("sglang_jax_cpu/run2_numsteps")],
        ),
        (
            "xprof_converted",
            vec![fixture("xprof_converted/trace_viewer.json.gz")],
        ),
    ]
}

fn merge_to(inputs: &[PathBuf], source: SourceMode, out: &Path) -> MergeSummary {
    let mut options = MergeOptions::new(
        inputs.iter().map(|p| p.display().to_string()).collect(),
        out,
    );
    options.source = source;
    merge(&options).unwrap_or_else(|e| panic!("merging into {}: {e}", out.display()))
}

/// Slices the import must hold: every event merged (the fixtures have
/// complete events and metadata only, so one slice each).
fn events_out(summary: &MergeSummary) -> u64 {
    summary.ranks.iter().map(|r| r.stats.events_out).sum()
}

#[test]
fn every_output_format_of_every_real_fixture_imports_cleanly() {
    let Some(tp) = TraceProcessor::find() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (name, inputs) in fixture_merges() {
        let has_xplane = name != "xprof_converted";
        for source in [SourceMode::Json, SourceMode::Xplane] {
            if source == SourceMode::Xplane && !has_xplane {
                continue;
            }
            for format in FORMATS {
                let out = dir.path().join(format!("{name}-{source:?}.{format}"));
                let summary = merge_to(&inputs, source, &out);
                let expected = events_out(&summary);
                assert!(expected > 0, "{name}: nothing merged");
                if let Err(error) = tp.ensure_clean(&out, expected) {
                    failures.push(format!("{name} from {source:?} as .{format}: {error:#}"));
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 4 * 15);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_zip_holds_the_pftrace_slices_on_their_hosts_machine() {
    let Some(tp) = TraceProcessor::find() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let inputs = jax_multi4();
    let slices = "select s.ts, s.dur, s.name, s.depth, p.name as process from slice s \
                  left join thread_track tt on s.track_id = tt.id left join thread using (utid) \
                  left join process p using (upid) order by 1, 2, 3, 4, 5;";
    let pftrace = dir.path().join("multi4.pftrace");
    let zip = dir.path().join("multi4.zip");
    merge_to(&inputs, SourceMode::Auto, &pftrace);
    let summary = merge_to(&inputs, SourceMode::Auto, &zip);
    let from_pftrace = tp.query(&pftrace, slices).unwrap();
    let from_zip = tp.query(&zip, slices).unwrap();
    assert_eq!(from_pftrace[0].rows.len() as u64, events_out(&summary));
    assert!(
        from_pftrace == from_zip,
        "the archive's slices differ from the .pftrace's"
    );

    let machines = tp
        .query(&zip, "select name from machine order by name;")
        .unwrap();
    let names: Vec<&str> = machines[0].rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        names,
        ["vm"],
        "the four JAX processes ran on one host, so they share its machine"
    );
}

#[test]
fn trace_processor_reads_the_pftrace_times_our_decoder_reads() {
    let Some(tp) = TraceProcessor::find() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let inputs = jax_multi4();
    let query = "select s.ts, s.dur, s.name from slice s order by 1, 2, 3;";
    for source in [SourceMode::Json, SourceMode::Xplane] {
        let out = dir.path().join(format!("multi4-{source:?}.pftrace"));
        let summary = merge_to(&inputs, source, &out);
        let decoded = common::decode(&std::fs::read(&out).unwrap());
        let mut ours: Vec<(i64, i64, String)> = decoded
            .slices
            .iter()
            .map(|s| (s.start, s.end - s.start, s.name.clone()))
            .collect();
        ours.sort();
        let theirs: Vec<(i64, i64, String)> = tp.query(&out, query).unwrap()[0]
            .rows
            .iter()
            .map(|row| {
                (
                    row[0].parse().unwrap(),
                    row[1].parse().unwrap(),
                    row[2].clone(),
                )
            })
            .collect();
        assert_eq!(ours.len() as u64, events_out(&summary), "{source:?}");
        assert!(
            ours[0].0 > 1_000_000_000_000_000_000,
            "{source:?}: epoch times, not deltas: {:?}",
            ours[0]
        );
        assert!(
            ours == theirs,
            "{source:?}: trace_processor reads other times"
        );
    }
}
