//! `--align collectives` on small crafted captures (the edge cases of issue
//! 4: skew larger than the capture, negative offsets, a rank without
//! collectives, a sidecar without clock data, a rank whose collectives
//! disagree with its clock bound) and on the real `jax_multi4` fixture.

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use common::{fixtures, TestRank};
use rankline_layout::{ClockFit, RankCoords};
use rankline_merge::{merge, AlignMode, ClockStatus, MergeOptions, MergeSummary, RefineOutcome};
use serde_json::Value;

/// True (coordinator-clock) epoch ns of the first collective's end.
const FIRST_END: i64 = 1_795_000_000_000_000_000;
const COLLECTIVES: i64 = 21;
const PERIOD_NS: i64 = 1_000_000;

/// One crafted host: how wrong its clock is and what its sidecar says.
struct Host {
    /// Host clock minus true time.
    skew_ns: i64,
    /// (error of the measured offset, its claimed bound); `None`: no clock data.
    clock: Option<(i64, u64)>,
    collectives: bool,
}

/// A few microseconds of per-instance disagreement, different on each rank.
fn jitter(tp: u32, k: i64) -> i64 {
    ((k * 7 + i64::from(tp) * 13) % 11 - 5) * 1_000
}

/// Writes a capture of `hosts` (TP-0, TP-1, ...) under `root`; returns its folder.
fn write_capture(root: &Path, hosts: &[Host]) -> PathBuf {
    let ranks: Vec<TestRank> = (0u32..)
        .zip(hosts)
        .map(|(tp, host)| {
            // Profiles start a little apart, 0.5 ms or more before the first collective.
            let base = FIRST_END - 500_000 - i64::from(tp) * 123_457 + host.skew_ns;
            let mut events = Vec::new();
            for k in 0..COLLECTIVES {
                let end = FIRST_END + k * PERIOD_NS + host.skew_ns + jitter(tp, k);
                let dur = 50_000;
                let ts = |at: i64| format!("{}.{:03}", (at - base) / 1000, (at - base) % 1000);
                let (name, run_id) = if host.collectives {
                    ("all-reduce.1", k)
                } else {
                    ("fusion.1", k)
                };
                events.push(format!(
                    r#"{{"ph":"X","pid":1,"tid":3,"ts":{},"dur":50,"name":"{name}","args":{{"hlo_op":"{name}","run_id":"{run_id}"}}}}"#,
                    ts(end - dur)
                ));
                events.push(format!(
                    r#"{{"ph":"X","pid":1,"tid":3,"ts":{},"dur":100,"name":"fusion.2","args":{{"hlo_op":"fusion.2","run_id":"{run_id}"}}}}"#,
                    ts(end + 10_000)
                ));
            }
            TestRank {
                coords: RankCoords::unified(tp, 0),
                host: format!("host-{tp}"),
                trigger: true,
                trace: Some(format!(r#"{{"traceEvents":[{},{{}}]}}"#, events.join(","))),
                time_base_ns: base,
                clock: host.clock.map(|(error, bound)| ClockFit {
                    offset_ns: host.skew_ns + error,
                    error_bound_ns: bound,
                    drift_ppm: 0.0,
                    at_unix_ns: base,
                    samples: vec![],
                }),
            }
        })
        .collect();
    common::write_capture(root, "clk", FIRST_END - 1_000_000, &ranks)
}

/// Merges to Chrome JSON; returns the summary and, per process name, the
/// merged end (epoch ns) of every `all-reduce.1` by run_id.
fn merge_json(
    inputs: Vec<String>,
    out: &Path,
    align: AlignMode,
) -> (MergeSummary, BTreeMap<String, BTreeMap<String, i64>>) {
    let mut options = MergeOptions::new(inputs, out);
    options.align = align;
    let summary = merge(&options).unwrap();
    let trace: Value = serde_json::from_slice(&fs::read(out).unwrap()).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    let names: BTreeMap<u64, String> = events
        .iter()
        .filter(|e| e["name"] == "process_name")
        .map(|e| {
            (
                e["pid"].as_u64().unwrap(),
                e["args"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut ends: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for e in events {
        let op = e["args"]["hlo_op"].as_str().unwrap_or_default();
        if e["ph"] != "X" || !op.starts_with("all-") {
            continue;
        }
        let micros = e["ts"].as_f64().unwrap() + e["dur"].as_f64().unwrap();
        let end = summary.origin_unix_ns + (micros * 1000.0).round() as i64;
        let pid = e["pid"].as_u64().unwrap();
        let process = names.get(&pid).or_else(|| names.get(&(pid / 1000 * 1000)));
        let run = format!("{}/{op}", e["args"]["run_id"].as_str().unwrap());
        ends.entry(process.unwrap().clone())
            .or_default()
            .insert(run, end);
    }
    (summary, ends)
}

/// Median of `rank`'s ends minus `reference`'s over the run ids both have.
fn median_difference(
    ends: &BTreeMap<String, BTreeMap<String, i64>>,
    rank: &str,
    reference: &str,
) -> i64 {
    let mut differences: Vec<i64> = ends[rank]
        .iter()
        .filter_map(|(run, end)| Some(end - ends[reference].get(run)?))
        .collect();
    differences.sort_unstable();
    differences[differences.len() / 2]
}

fn process(tp: u32) -> String {
    format!("unified-0 TP-{tp} EP-0 (host-{tp})")
}

#[test]
fn collectives_refine_inside_the_bounds_and_every_edge_case_says_what_it_did() {
    let dir = tempfile::tempdir().unwrap();
    let capture = write_capture(
        dir.path(),
        &[
            // The tightest bound: the reference.
            Host {
                skew_ns: 0,
                clock: Some((10_000, 30_000)),
                collectives: true,
            },
            // Skew 5 s, far larger than the 20 ms capture.
            Host {
                skew_ns: 5_000_000_000,
                clock: Some((-40_000, 80_000)),
                collectives: true,
            },
            // A negative offset.
            Host {
                skew_ns: -120_000_000,
                clock: Some((60_000, 100_000)),
                collectives: true,
            },
            // A sidecar without clock data.
            Host {
                skew_ns: 2_000_000,
                clock: None,
                collectives: true,
            },
            // Measured 400 us off while claiming a 50 us bound.
            Host {
                skew_ns: 0,
                clock: Some((400_000, 50_000)),
                collectives: true,
            },
            // No collectives at all.
            Host {
                skew_ns: 1_000_000,
                clock: Some((0, 50_000)),
                collectives: false,
            },
        ],
    );
    let input = vec![capture.display().to_string()];
    let (summary, ends) = merge_json(
        input.clone(),
        &dir.path().join("c.json"),
        AlignMode::Collectives,
    );
    let outcomes: Vec<RefineOutcome> = summary
        .ranks
        .iter()
        .map(|r| r.collectives.as_ref().unwrap().outcome)
        .collect();
    assert_eq!(
        outcomes,
        [
            RefineOutcome::Reference,
            RefineOutcome::Applied,
            RefineOutcome::Applied,
            RefineOutcome::Unmeasured,
            RefineOutcome::OutsideBound,
            RefineOutcome::NoCollectives,
        ]
    );
    let refinement = |tp: usize| summary.ranks[tp].collectives.clone().unwrap();
    assert!(summary
        .ranks
        .iter()
        .all(|r| { r.collectives.as_ref().unwrap().reference.as_deref() == Some("TP-0-EP-0") }));

    // Refined ranks end their collectives with the reference's (to the
    // median), whatever their skew and sign.
    for tp in [1u32, 2] {
        let r = refinement(tp as usize);
        assert_eq!(r.matched, COLLECTIVES as u64);
        assert_eq!(r.residual_after_ns, Some(0));
        assert_eq!(
            median_difference(&ends, &process(tp), &process(0)).abs(),
            0,
            "TP-{tp}"
        );
    }
    // Before: what the two clock fits' errors leave (plus the jitter's median).
    let before = refinement(1).residual_before_ns.unwrap();
    assert!((before - 50_000).abs() <= 5_000, "{before}");
    assert_eq!(refinement(1).allowance_ns, Some(110_000));
    let before = refinement(2).residual_before_ns.unwrap();
    assert!((before + 50_000).abs() <= 5_000, "{before}");

    // No clock data: the host clock is used as it is, and the rank says so.
    assert_eq!(summary.ranks[3].clock, ClockStatus::NotMeasured);
    assert_eq!(refinement(3).refinement_ns, 0);
    let off = median_difference(&ends, &process(3), &process(0));
    assert!((off - 2_010_000).abs() <= 5_000, "{off}");
    // A refinement that disagrees with the bound keeps the clock offset.
    assert_eq!(refinement(4).refinement_ns, 0);
    assert_eq!(refinement(4).allowance_ns, Some(80_000));
    let off = median_difference(&ends, &process(4), &process(0));
    assert!((off + 390_000).abs() <= 5_000, "{off}");
    assert_eq!(refinement(5).refinement_ns, 0);
    assert_eq!(summary.ranks[5].clock, ClockStatus::Applied);

    let warnings = summary.warnings.join("\n");
    for expected in [
        "TP-3-EP-0: no clock measurement in its sidecar",
        "TP-3-EP-0: its collectives put it +2.0",
        "off TP-0-EP-0, but its clock was not measured, so this cannot be checked",
        "TP-4-EP-0: its collectives put it -39",
        "more than the clocks' bound ±80.0 µs allows: the clock offset is kept",
        "TP-5-EP-0: no collective in its trace",
    ] {
        assert!(warnings.contains(expected), "{expected:?} in:\n{warnings}");
    }
    let text = summary.render();
    assert!(text.contains("align: collectives"), "{text}");
    assert!(text.contains("kept clock: outside ±80.0 µs"), "{text}");
    let json = serde_json::to_value(&summary).unwrap();
    assert_eq!(json["ranks"][1]["collectives"]["outcome"], "applied");
    assert_eq!(
        json["ranks"][1]["collectives"]["refinement_ns"],
        -before_of(&summary, 1)
    );
    assert_eq!(json["ranks"][4]["collectives"]["outcome"], "outside_bound");

    // --align clock leaves the fits' errors; --align none the whole skew, and
    // the 5 s rank is pointed out as overlapping nobody.
    let (_, clock) = merge_json(input.clone(), &dir.path().join("k.json"), AlignMode::Clock);
    let off = median_difference(&clock, &process(1), &process(0));
    assert!((off - 50_000).abs() <= 5_000, "{off}");
    let (none, raw) = merge_json(input, &dir.path().join("n.json"), AlignMode::None);
    let off = median_difference(&raw, &process(1), &process(0));
    assert!((off - 5_000_000_000).abs() <= 5_000, "{off}");
    let off = median_difference(&raw, &process(2), &process(0));
    assert!((off + 120_000_000).abs() <= 5_000, "{off}");
    assert!(
        none.warnings
            .iter()
            .any(|w| w.starts_with("TP-1-EP-0: its events do not overlap")),
        "{:?}",
        none.warnings
    );
    assert!(none.ranks.iter().all(|r| r.collectives.is_none()));
}

fn before_of(summary: &MergeSummary, tp: usize) -> i64 {
    summary.ranks[tp]
        .collectives
        .as_ref()
        .unwrap()
        .residual_before_ns
        .unwrap()
}

/// `jax_multi4`: four processes on one host, so one clock and true offsets
/// of zero. Their CPU (gloo) collectives end up to milliseconds apart, which
/// is collective timing, not clock error: no rank may move.
#[test]
fn jax_multi4_on_one_host_is_not_moved() {
    let dir = tempfile::tempdir().unwrap();
    let inputs: Vec<String> = (0..4)
        .map(|i| {
            fixtures()
                .join(format!("jax_multi4/proc{i}"))
                .display()
                .to_string()
        })
        .collect();
    let (refined, refined_ends) = merge_json(
        inputs.clone(),
        &dir.path().join("c.json"),
        AlignMode::Collectives,
    );
    let (clocked, clocked_ends) = merge_json(inputs, &dir.path().join("k.json"), AlignMode::Clock);
    assert_eq!(refined_ends, clocked_ends, "no event moved");
    let mut residuals = Vec::new();
    for (rank, plain) in refined.ranks.iter().zip(&clocked.ranks) {
        let r = rank.collectives.as_ref().unwrap();
        assert_eq!(r.refinement_ns, 0, "{}", rank.rank);
        assert_eq!(
            r.matched, 7,
            "4 all-gathers and 3 all-reduces: {}",
            rank.rank
        );
        assert_eq!(rank.stats.first_ns, plain.stats.first_ns);
        residuals.push((rank.rank.clone(), r.outcome, r.residual_before_ns));
    }
    assert_eq!(residuals[0].1, RefineOutcome::Reference);
    for (rank, outcome, residual) in &residuals[1..] {
        assert_eq!(*outcome, RefineOutcome::SameClock, "{rank}");
        // What the collectives alone would say (see docs/ALIGNMENT.md).
        assert!(residual.unwrap().abs() < 1_000_000, "{rank}: {residual:?}");
    }
    eprintln!("jax_multi4 residuals against TP-0: {residuals:?}");
}

/// SGLang (Kineto) ranks written by the simulated server's writer: NCCL
/// kernels are matched by process group and `Seq`. Loose files carry no
/// clock measurement, so the residual is reported and not applied.
#[test]
fn nccl_kernels_are_matched_by_process_group_and_sequence() {
    use rankline_simserver::synthetic::{write_kineto_rank, SyntheticRank};
    use rankline_simserver::trace::KinetoRank;

    let dir = tempfile::tempdir().unwrap();
    let mut inputs = Vec::new();
    for (tp, skew) in [(0u32, 0i64), (1, 3_000_000)] {
        let mut spec = SyntheticRank::new("gpu", FIRST_END - 20_000_000 + skew, 3_000, tp);
        spec.clock_offset_ns = skew;
        spec.first_collective_end_unix_ns = Some(FIRST_END);
        let path = write_kineto_rank(dir.path(), &spec, &KinetoRank::tp(tp, 2), "nccl").unwrap();
        inputs.push(path.display().to_string());
    }
    let mut options = MergeOptions::new(inputs, dir.path().join("out.pftrace"));
    options.align = AlignMode::Collectives;
    let summary = merge(&options).unwrap();
    let r = summary.ranks[1].collectives.clone().unwrap();
    assert_eq!(r.outcome, RefineOutcome::Unmeasured);
    assert!(r.matched >= 10, "{r:?}");
    assert_eq!(r.refinement_ns, 0);
    let residual = r.residual_before_ns.unwrap();
    assert!((residual - 3_000_000).abs() < 50_000, "{residual}");
}
