//! Output at scale: a multi-rank merge past a million events (xplane ranks,
//! their lines converted in parallel as packet sequences of their own, and
//! Chrome JSON ranks) imports in Perfetto's own trace_processor with no
//! error, data-loss or skipped stat and one slice per event merged; and
//! `max_size` cuts the merge to a window that fits and says what it dropped.

use crate::common;

use std::fs;
use std::path::Path;

use rankline_e2e::TraceProcessor;
use rankline_merge::{merge, MergeOptions, MergeSummary, SizeFit};
use rankline_simserver::synthetic::{write_jax_rank, SyntheticRank};
use rankline_xplane::synth::{write_synthetic_space, SynthSpec};

const PROFILE_START_NS: i64 = 1_795_000_000_000_000_000;

/// Four xplane ranks of about 330,000 events (two device planes and the
/// host plane each) and two JAX JSON ranks of about 100,000: the inputs,
/// in rank order.
fn write_ranks(dir: &Path) -> Vec<String> {
    let mut inputs = Vec::new();
    for rank in 0..4u32 {
        let spec = SynthSpec {
            device_planes: 2,
            lines_per_plane: 3,
            events_per_line: 50_000,
            host_events: 30_000,
            profile_start_ns: PROFILE_START_NS + i64::from(rank) * 1_000_000,
            hostname: format!("tpu-{rank}"),
            ..SynthSpec::default()
        };
        let path = dir.join(format!("big-TP-{rank}.xplane.pb"));
        write_synthetic_space(fs::File::create(&path).unwrap(), &spec).unwrap();
        inputs.push(path);
    }
    for rank in 4..6u32 {
        let host = format!("cpu-{rank}");
        let spec = SyntheticRank::new(&host, PROFILE_START_NS, 100_000, rank);
        let logs = dir.join(&host);
        let written = write_jax_rank(&logs, &spec).unwrap();
        // Only the JSON export: this rank is read from it.
        fs::remove_file(&written.xplane_pb).unwrap();
        let trace = dir.join(format!("big-TP-{rank}.trace.json.gz"));
        fs::rename(&written.trace_json_gz, &trace).unwrap();
        inputs.push(trace);
    }
    inputs.iter().map(|p| p.display().to_string()).collect()
}

fn events_out(summary: &MergeSummary) -> u64 {
    summary.ranks.iter().map(|r| r.stats.events_out).sum()
}

fn merge_into(inputs: &[String], out: &Path, max_size: Option<u64>) -> MergeSummary {
    let mut options = MergeOptions::new(inputs.to_vec(), out);
    options.jobs = Some(2);
    options.max_size = max_size;
    merge(&options).unwrap_or_else(|e| panic!("merging into {}: {e}", out.display()))
}

#[test]
fn a_big_multi_rank_merge_imports_in_trace_processor_with_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = write_ranks(dir.path());
    let out = dir.path().join("big.pftrace");
    let summary = merge_into(&inputs, &out, None);
    assert_eq!(summary.ranks.len(), 6);
    let merged = events_out(&summary);
    assert!(merged > 1_400_000, "{merged} events");
    for rank in &summary.ranks {
        // Nothing dropped but what is no span (xplane aggregates).
        let aggregated = rank.stats.xplane.map_or(0, |x| x.aggregated);
        assert_eq!(
            rank.stats.events_in,
            rank.stats.events_out + rank.stats.metadata + aggregated,
            "{}: {:?}",
            rank.rank,
            rank.stats.dropped
        );
    }

    // Our own decoder: every sequence's interning, nesting and balance.
    let lines: u64 = summary
        .ranks
        .iter()
        .map(|r| r.stats.xplane.map_or(0, |x| x.lines))
        .sum();
    let mut slices = 0u64;
    let decoded = common::decode_with(&fs::read(&out).unwrap(), false, |_| slices += 1);
    assert_eq!(slices, merged);
    assert_eq!(
        decoded.sequences as u64,
        6 + lines,
        "a sequence per rank and xplane line"
    );

    let Some(tp) = TraceProcessor::find() else {
        return;
    };
    tp.ensure_clean(&out, merged)
        .unwrap_or_else(|e| panic!("{e:#}"));
}

#[test]
fn max_size_cuts_the_window_until_the_output_fits_and_says_what_it_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = write_ranks(dir.path());
    let full_out = dir.path().join("full.pftrace");
    let full = merge_into(&inputs, &full_out, None);

    // Room to spare: one merge, nothing cut.
    let roomy = merge_into(
        &inputs,
        &dir.path().join("roomy.pftrace"),
        Some(full.bytes_written),
    );
    let fit = roomy.size_fit.clone().unwrap();
    assert_eq!(
        (fit.merges, fit.window_unix_ns, fit.events_dropped),
        (1, None, 0)
    );
    assert_eq!(events_out(&roomy), events_out(&full));

    let max = full.bytes_written / 3;
    let out = dir.path().join("fitted.pftrace");
    let fitted = merge_into(&inputs, &out, Some(max));
    let SizeFit {
        max_bytes,
        full_bytes,
        window_unix_ns,
        events_dropped,
        kept_fraction,
        ..
    } = fitted.size_fit.clone().unwrap();
    assert_eq!((max_bytes, full_bytes), (max, full.bytes_written));
    assert!(
        fitted.bytes_written <= max,
        "{} > {max}",
        fitted.bytes_written
    );
    assert_eq!(fs::metadata(&out).unwrap().len(), fitted.bytes_written);
    assert!(
        kept_fraction < 0.5 && kept_fraction > 0.0,
        "{kept_fraction}"
    );
    let (start, end) = window_unix_ns.expect("a window was cut");
    assert_eq!(fitted.window_unix_ns, Some((start, end)));
    // What was cut is counted, per rank as `outside --window` too.
    assert_eq!(events_dropped, events_out(&full) - events_out(&fitted));
    let outside: u64 = fitted
        .ranks
        .iter()
        .filter_map(|r| r.stats.dropped.get("outside --window"))
        .sum();
    assert_eq!(outside, events_dropped);
    assert!(events_dropped > 0);
    for rank in &fitted.ranks {
        if let Some(last) = rank.stats.last_ns {
            assert!(rank.stats.first_ns.unwrap() <= end && last >= start);
        }
    }
    let rendered = fitted.render();
    assert!(rendered.contains("--max-size"), "{rendered}");
    assert!(
        rendered.contains(&format!("--window {start}..{end}")),
        "{rendered}"
    );
    let json = serde_json::to_value(&fitted).unwrap();
    assert_eq!(json["size_fit"]["events_dropped"], events_dropped);

    // Every kept slice imports.
    if let Some(tp) = TraceProcessor::find() {
        tp.ensure_clean(&out, events_out(&fitted))
            .unwrap_or_else(|e| panic!("{e:#}"));
    }
}
