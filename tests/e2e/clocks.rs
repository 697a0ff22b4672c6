//! Clocks end to end (issue 4): four "hosts" on loopback, each an agent and
//! a simulated server under one `faketime` spec, the servers' collectives
//! rendezvousing for real. One capture, merged with `--align none`, `clock`
//! and `collectives`; the spread of each collective's end across ranks
//! (max - min, median over all matched collectives) is what is measured.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rankline_e2e::{free_port, rankline_bin, run_rankline, wait_until, Cluster, Proc, Spawn};
use serde_json::Value;

/// (libfaketime spec, the offset it injects at its start, ns). One host
/// also runs 100 ppm fast.
const HOSTS: [(&str, i64); 4] = [
    ("+0", 0),
    ("+0.037", 37_000_000),
    ("-0.120", -120_000_000),
    ("+2.5 x1.0001", 2_500_000_000),
];

/// Starts one host: a faketime wrapper running the simulated server and,
/// as its sibling, the agent. Both are children of the one wrapper, so they
/// share its clock (a rate applies from the wrapper's start).
fn start_host(cluster: &Cluster, index: usize, group_addr: &str) -> (Proc, u16) {
    let (spec, _) = HOSTS[index];
    let port = free_port();
    let bin = rankline_bin().display().to_string();
    let spool = cluster.spool().display().to_string();
    let script = format!(
        "'{bin}' sim-server --port {port} --hostname host{index} --group-addr {group_addr} \
         --group-size 4 --group-rank {index} & \
         exec '{bin}' agent --coordinator {coordinator} --server http://127.0.0.1:{port} \
         --host host{index} --tp-rank {index} --mode trigger --kind sglang-jax --role unified \
         --spool '{spool}'",
        coordinator = cluster.coordinator_url(),
    );
    let host = Spawn::program(&format!("host{index}"), "sh", &["-c", &script])
        .faketime(spec)
        .start()
        .unwrap();
    (host, port)
}

/// `rankline merge <capture> -o <out> --align <align> --json`: the summary
/// and the merged Chrome JSON.
fn merge(capture: &Path, out: &Path, align: &str) -> (Value, Value) {
    let output = run_rankline(&[
        "merge",
        &capture.display().to_string(),
        "-o",
        &out.display().to_string(),
        "--align",
        align,
        "--json",
    ])
    .unwrap();
    assert!(
        output.status.success(),
        "merge --align {align}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = serde_json::from_slice(&output.stdout).unwrap();
    let trace = serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap();
    (summary, trace)
}

/// Per collective instance (`run_id`, `hlo_op`), each rank's end in ns after
/// the output's origin; ranks by output pid (1000 per rank).
fn collective_ends(trace: &Value) -> BTreeMap<(String, String), BTreeMap<u64, i64>> {
    let families = [
        "all-reduce",
        "all-gather",
        "reduce-scatter",
        "all-to-all",
        "collective-permute",
    ];
    let mut ends: BTreeMap<(String, String), BTreeMap<u64, i64>> = BTreeMap::new();
    for event in trace["traceEvents"].as_array().unwrap() {
        let op = event["args"]["hlo_op"].as_str().unwrap_or_default();
        let family = op.split('.').next().unwrap_or_default();
        if event["ph"] != "X" || !families.contains(&family) {
            continue;
        }
        let micros = event["ts"].as_f64().unwrap() + event["dur"].as_f64().unwrap();
        let run_id = event["args"]["run_id"].as_str().unwrap().to_string();
        ends.entry((run_id, op.to_string())).or_default().insert(
            event["pid"].as_u64().unwrap() / 1000,
            (micros * 1e3).round() as i64,
        );
    }
    ends.retain(|_, by_rank| by_rank.len() == HOSTS.len());
    ends
}

/// What one alignment leaves: the median and worst spread, and each rank's
/// median end minus rank 0's.
struct Spread {
    matched: usize,
    median_ns: i64,
    worst_ns: i64,
    against_first_ns: Vec<i64>,
}

fn median(mut values: Vec<i64>) -> i64 {
    values.sort_unstable();
    values[values.len() / 2]
}

fn spread(trace: &Value) -> Spread {
    let ends = collective_ends(trace);
    assert!(ends.len() >= 50, "only {} collectives matched", ends.len());
    let spreads: Vec<i64> = ends
        .values()
        .map(|by_rank| by_rank.values().max().unwrap() - by_rank.values().min().unwrap())
        .collect();
    let ranks: Vec<u64> = ends.values().next().unwrap().keys().copied().collect();
    Spread {
        matched: ends.len(),
        median_ns: median(spreads.clone()),
        worst_ns: *spreads.iter().max().unwrap(),
        against_first_ns: ranks
            .iter()
            .map(|rank| median(ends.values().map(|e| e[rank] - e[&ranks[0]]).collect()))
            .collect(),
    }
}

#[test]
fn four_skewed_hosts_line_up_by_clock_and_better_by_collectives() {
    let cluster = Cluster::start(&[]).unwrap();
    let group_addr = format!("127.0.0.1:{}", free_port());
    let hosts: Vec<(Proc, u16)> = (0..HOSTS.len())
        .map(|i| start_host(&cluster, i, &group_addr))
        .collect();
    cluster.wait_for_agents(HOSTS.len()).unwrap();
    for (_, port) in &hosts {
        wait_until("the simulated server", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", *port)).ok()
        })
        .unwrap();
    }

    // `rankline agents` knows each host's offset, within its bound.
    let agents = wait_until(
        "a clock estimate from every agent",
        Duration::from_secs(30),
        || {
            let agents = cluster.agents_json().ok()?;
            agents
                .iter()
                .all(|a| a["clock"].is_object())
                .then_some(agents)
        },
    )
    .unwrap();
    for (index, (spec, injected)) in HOSTS.iter().enumerate() {
        let agent = agents
            .iter()
            .find(|a| a["identity"]["host"] == format!("host{index}"))
            .unwrap();
        let clock = &agent["clock"];
        let offset = clock["offset_ns"].as_i64().unwrap();
        let bound = clock["error_bound_ns"].as_i64().unwrap();
        eprintln!(
            "host{index} ({spec}): offset {offset} ns ± {bound} ns, round trip {} ns",
            clock["round_trip_ns"]
        );
        if !spec.contains('x') {
            assert!((offset - injected).abs() <= bound, "host{index}: {clock}");
        }
    }

    let run = cluster
        .capture(&["--profile-id", "clk", "--duration", "1s"])
        .unwrap();
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let capture = cluster.storage().join("clk");
    let work = cluster.work.path();

    // --align none: the spread is the injected skew, rank by rank.
    let (none_summary, trace) = merge(&capture, &work.join("none.json"), "none");
    let none = spread(&trace);
    let injected: Vec<i64> = HOSTS.iter().map(|(_, offset)| *offset).collect();
    for (index, (got, want)) in none.against_first_ns.iter().zip(&injected).enumerate() {
        // The 100 ppm host has gained 100 us more per second since it started.
        assert!(
            (got - want).abs() < 5_000_000,
            "host{index}: {got} vs {want}"
        );
    }
    let skew = injected.iter().max().unwrap() - injected.iter().min().unwrap();
    assert!(
        (none.median_ns - skew).abs() < 5_000_000,
        "{}",
        none.median_ns
    );
    // A skew larger than the capture: that rank overlaps nobody.
    let warnings = none_summary["warnings"].to_string();
    assert!(
        warnings.contains("TP-3-EP-0: its events do not overlap"),
        "{warnings}"
    );

    let (_, trace) = merge(&capture, &work.join("clock.json"), "clock");
    let clock = spread(&trace);
    let (summary, trace) = merge(&capture, &work.join("collectives.json"), "collectives");
    let refined = spread(&trace);
    for (name, s) in [
        ("none", &none),
        ("clock", &clock),
        ("collectives", &refined),
    ] {
        eprintln!(
            "--align {name}: {} collectives matched, spread median {} ns, worst {} ns; \
             rank medians against TP-0: {:?} ns",
            s.matched, s.median_ns, s.worst_ns, s.against_first_ns
        );
    }
    let ranks = summary["ranks"].as_array().unwrap();
    for rank in ranks {
        eprintln!(
            "{}: clock shift {} ns, bound {} ns, drift {} ppm, refinement {}",
            rank["rank"],
            rank["clock_shift_ns"],
            rank["clock_error_bound_ns"],
            rank["clock_drift_ppm"],
            rank["collectives"]
        );
        assert_eq!(rank["clock"], "applied", "{rank}");
        let outcome = &rank["collectives"]["outcome"];
        assert!(
            *outcome == "reference" || *outcome == "applied",
            "{}: {}",
            rank["rank"],
            rank["collectives"]
        );
    }

    // What the clock measurement guarantees: each rank sits within its
    // bound plus TP-0's of TP-0 (a few microseconds of rendezvous slack).
    let bound_over_capture = |i: usize| ranks[i]["collectives"]["clock_bound_ns"].as_i64().unwrap();
    for (i, off) in clock.against_first_ns.iter().enumerate() {
        let allowed = bound_over_capture(i) + bound_over_capture(0) + 20_000;
        assert!(
            off.abs() <= allowed,
            "TP-{i}: {off} ns off TP-0, bounds allow {allowed} ns"
        );
    }
    // The 250 us holds when the measurement can promise it: with
    // round trips of milliseconds (a debug build on two busy cores) the
    // bounds themselves are wider, and only the line above is asserted.
    let fit_bounds: Vec<i64> = ranks
        .iter()
        .map(|r| r["clock_error_bound_ns"].as_i64().unwrap())
        .collect();
    let mut widest = fit_bounds.clone();
    widest.sort_unstable();
    let widest_pair = widest[widest.len() - 1] + widest[widest.len() - 2];
    if widest_pair <= 250_000 {
        assert!(
            clock.median_ns <= 250_000,
            "--align clock: {} ns",
            clock.median_ns
        );
    } else {
        eprintln!(
            "clock bounds {fit_bounds:?} ns allow {widest_pair} ns between two ranks: \
             the 250 us spread is not asserted (see docs/ALIGNMENT.md)"
        );
    }
    assert!(
        refined.median_ns <= 100_000,
        "--align collectives: {} ns",
        refined.median_ns
    );
    drop(hosts);
}
