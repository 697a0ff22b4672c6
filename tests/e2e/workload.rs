//! `rankline capture --workload` end to end (issue 13): real requests at
//! simulated servers during the profiling window, their record beside the
//! manifest, and a `requests` track in the merged trace.

use rankline_e2e::{free_port, merge_json, run_rankline, CaptureRun, Cluster, TraceProcessor};
use serde_json::Value;

/// A cluster of `n` simulated sglang-jax servers, each with its agent.
fn cluster_of(n: usize, server_args: &[&str]) -> Cluster {
    let mut cluster = Cluster::start(&[]).unwrap();
    for tp in 0..n {
        let host = format!("host{tp}");
        let mut args = vec!["--hostname", host.as_str()];
        args.extend_from_slice(server_args);
        let url = cluster.add_server(&format!("server{tp}"), &args).unwrap();
        cluster
            .add_agent(
                &format!("agent{tp}"),
                &url,
                &["--host", &host, "--tp-rank", &tp.to_string()],
            )
            .unwrap();
    }
    cluster.wait_for_agents(n).unwrap();
    cluster
}

/// The `{"workload": ...}` line `capture --json` prints after the summary.
fn workload_line(events: &[Value]) -> &Value {
    events
        .iter()
        .rev()
        .find_map(|e| e.get("workload"))
        .expect("a workload line")
}

/// `<id>/manifest.json`.
fn stored_manifest(cluster: &Cluster, profile_id: &str) -> Value {
    let path = cluster.storage().join(profile_id).join("manifest.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// Asserts a capture whose ranks all ended ok is `failed` because of its
/// workload, everywhere it is told: the `capture --json` workload line,
/// manifest.json, and `capture show` (JSON and text); the failure is
/// audited under the identity that started the capture.
fn assert_failed_by_its_workload(cluster: &Cluster, run: &CaptureRun, id: &str, says: &str) {
    let wants = |reason: &str| reason.starts_with("workload failed: ") && reason.contains(says);
    let line = run
        .events
        .iter()
        .rev()
        .find(|e| e.get("workload").is_some());
    let told = &line.expect("a workload line")["capture"];
    assert_eq!(told["status"], "failed", "{told}");
    assert!(wants(told["reason"].as_str().unwrap()), "{told}");

    let manifest = stored_manifest(cluster, id);
    assert_eq!(manifest["status"], "failed", "{manifest}");
    assert!(wants(manifest["reason"].as_str().unwrap()), "{manifest}");
    for rank in manifest["ranks"].as_array().unwrap() {
        assert_eq!(rank["status"], "ok", "the ranks' files are good: {rank}");
    }
    let audit = manifest["audit"].as_array().unwrap();
    let who = |action: &str| {
        let entry = audit.iter().find(|e| e["action"] == action);
        let who = entry.unwrap_or_else(|| panic!("no {action} in {manifest}"))["who"]
            .as_str()
            .unwrap();
        who.split(" from ").next().unwrap().to_string()
    };
    assert_eq!(who("failed"), who("started"), "{manifest}");

    let show = |json: bool| {
        let mut args = vec![
            "capture",
            "show",
            id,
            "--coordinator",
            cluster.coordinator_url(),
        ];
        if json {
            args.push("--json");
        }
        let out = run_rankline(&args).unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let shown: Value = serde_json::from_str(&show(true)).unwrap();
    assert_eq!(shown["status"], "failed", "{shown}");
    assert_eq!(shown["reason"], manifest["reason"], "{shown}");
    assert_eq!(shown["ranks"][0]["state"], "ok", "{shown}");
    assert_eq!(shown["workload"]["status"], "failed", "{shown}");
    let text = show(false);
    assert!(text.contains(&format!("capture {id} failed: ")), "{text}");
    assert!(
        text.contains(&format!(
            "reason:   {}",
            manifest["reason"].as_str().unwrap()
        )),
        "{text}"
    );
}

/// The pid group (pid / 1000) of the process named `name` in merged Chrome JSON.
fn process_group(trace: &Value, name: &str) -> Option<u64> {
    trace["traceEvents"].as_array()?.iter().find_map(|e| {
        (e["ph"] == "M" && e["name"] == "process_name" && e["args"]["name"] == name)
            .then(|| e["pid"].as_u64().unwrap() / 1000)
    })
}

#[test]
fn a_workload_fills_the_window_and_shows_as_a_requests_track() {
    let cluster = cluster_of(2, &[]);
    let run = cluster
        .capture(&[
            "--profile-id",
            "wl-ok",
            "--duration",
            "1500ms",
            "--workload",
            "chat:rate=20,prompt=32,output=3,warmup=2",
        ])
        .unwrap();
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let workload = workload_line(&run.events);
    assert_eq!(workload["status"], "ok", "{workload}");
    assert!(workload["ok"].as_u64().unwrap() > 0, "{workload}");
    assert_eq!(workload["failed"], 0, "{workload}");
    assert_eq!(workload["sent"], workload["ok"]);
    assert_eq!(workload["warmup"], 4, "2 warm-up requests per server");
    assert_eq!(workload["model"], "sim/tiny-model", "read from the server");
    assert_eq!(workload["targets"].as_array().unwrap().len(), 2);
    assert!(workload["p50_ms"].as_f64().unwrap() > 0.0);
    assert!(workload["p99_ms"].as_f64() >= workload["p50_ms"].as_f64());
    assert_eq!(
        workload["output_tokens"].as_u64().unwrap(),
        3 * workload["ok"].as_u64().unwrap()
    );

    // `capture show` reads it back from storage.
    let show = run_rankline(&[
        "capture",
        "show",
        "wl-ok",
        "--json",
        "--coordinator",
        cluster.coordinator_url(),
    ])
    .unwrap();
    let shown: Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(shown["workload"]["ok"], workload["ok"]);

    // The merged trace: one slice per request, inside the profiled window.
    let capture = cluster.storage().join("wl-ok");
    assert!(capture.join("workload.json").is_file());
    let out = cluster.work.path().join("wl.json");
    let summary = merge_json(&capture, &out, &[]).unwrap();
    let requests_rank = summary["ranks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rank"] == "requests")
        .unwrap_or_else(|| panic!("no requests track in {summary}"));
    assert_eq!(requests_rank["name"], "requests", "{requests_rank}");
    let trace: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let requests = process_group(&trace, "requests").expect("a requests process");
    let (mut window_start, mut window_end) = (f64::MAX, f64::MIN);
    let mut slices = Vec::new();
    let mut busy_steps = 0;
    for event in trace["traceEvents"].as_array().unwrap() {
        if event["ph"] != "X" {
            continue;
        }
        let (ts, dur) = (
            event["ts"].as_f64().unwrap(),
            event["dur"].as_f64().unwrap(),
        );
        if event["pid"].as_u64().unwrap() / 1000 == requests {
            assert_eq!(event["name"], "chat");
            assert_eq!(event["args"]["status"], "ok", "{event}");
            slices.push((ts, ts + dur));
        } else {
            window_start = window_start.min(ts);
            window_end = window_end.max(ts + dur);
            let batch = event["args"]["batch_size"]
                .as_str()
                .and_then(|b| b.parse::<u32>().ok());
            if event["name"] == "run_batch" && batch > Some(0) {
                busy_steps += 1;
            }
        }
    }
    assert_eq!(slices.len() as u64, workload["sent"].as_u64().unwrap());
    for (start, end) in &slices {
        assert!(
            *start >= window_start && *end <= window_end,
            "request {start}..{end} µs outside the profiled window {window_start}..{window_end}"
        );
    }
    assert!(
        busy_steps > 0,
        "the profiled steps show the requests' batches"
    );

    // Perfetto's importer takes the .pftrace with the requests in it.
    if let Some(tp) = TraceProcessor::find() {
        let pftrace = cluster.work.path().join("wl.pftrace");
        merge_json(&capture, &pftrace, &[]).unwrap();
        let tables = tp
            .query(
                &pftrace,
                "select count(*) as n from slice where name = 'chat' and cat = 'request';",
            )
            .unwrap();
        let imported = tables[0].get(0, "n").unwrap().parse::<u64>().unwrap();
        let json_count = slices.len() as u64;
        assert_eq!(imported, json_count);
        let import = tp.import(&pftrace).unwrap();
        assert!(import.problems.is_empty(), "{:?}", import.problems);
    }
}

#[test]
fn a_server_that_refuses_the_requests_fails_the_capture_with_its_message() {
    let cluster = cluster_of(1, &["--reject-requests"]);
    // With the default warm-up, the refusal comes before anything is profiled.
    let early = cluster
        .capture(&[
            "--profile-id",
            "wl-early",
            "--duration",
            "1s",
            "--workload",
            "score",
        ])
        .unwrap();
    assert_eq!(early.code, 2, "stderr:\n{}", early.stderr);
    assert!(
        early.stderr.contains("HTTP 400") && early.stderr.contains("'loc': ('body', 'model')"),
        "{}",
        early.stderr
    );
    assert!(
        !cluster.storage().join("wl-early").exists(),
        "nothing was captured"
    );

    // Without warm-up the capture runs, and fails with the server's message.
    let run = cluster
        .capture(&[
            "--profile-id",
            "wl-400",
            "--duration",
            "1s",
            "--workload",
            "score:rate=20,warmup=0",
        ])
        .unwrap();
    assert_eq!(run.code, 1, "stderr:\n{}", run.stderr);
    let workload = workload_line(&run.events);
    assert_eq!(workload["status"], "failed");
    assert_eq!(workload["ok"], 0);
    let reason = workload["reason"].as_str().unwrap();
    assert!(
        reason.contains("refused")
            && reason.contains("HTTP 400")
            && reason.contains("Field required"),
        "{reason}"
    );
    assert!(workload["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("/v1/score answered HTTP 400"));
    assert_failed_by_its_workload(&cluster, &run, "wl-400", "Field required");
}

#[test]
fn a_window_without_a_successful_request_fails_unless_idle_is_allowed() {
    let cluster = cluster_of(1, &[]);
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let spec = "generate:rate=20,warmup=0,model=m,timeout=1s";
    let run = cluster
        .capture(&[
            "--profile-id",
            "wl-idle",
            "--duration",
            "600ms",
            "--workload",
            spec,
            "--workload-url",
            &nobody,
        ])
        .unwrap();
    assert_eq!(run.code, 1, "stderr:\n{}", run.stderr);
    let workload = workload_line(&run.events);
    assert!(workload["failed"].as_u64().unwrap() > 0);
    assert!(
        workload["reason"]
            .as_str()
            .unwrap()
            .contains("no request succeeded"),
        "{workload}"
    );
    assert_failed_by_its_workload(&cluster, &run, "wl-idle", "no request succeeded");

    let allowed = cluster
        .capture(&[
            "--profile-id",
            "wl-idle-allowed",
            "--duration",
            "600ms",
            "--workload",
            spec,
            "--workload-url",
            &nobody,
            "--allow-idle",
        ])
        .unwrap();
    assert_eq!(allowed.code, 0, "stderr:\n{}", allowed.stderr);
    assert_eq!(workload_line(&allowed.events)["status"], "ok");
    assert!(
        allowed.events.iter().all(|e| e.get("capture").is_none()),
        "nothing marked failed"
    );
    let manifest = stored_manifest(&cluster, "wl-idle-allowed");
    assert_eq!(manifest["status"], "complete", "{manifest}");
    assert!(manifest.get("reason").is_none(), "{manifest}");
}

/// Two vLLM workers on two "hosts" (their collectives rendezvous), each
/// writing into its own fixed profiler dir, each with an agent `--kind vllm`.
#[test]
fn a_vllm_capture_is_stored_canonically_and_merges_with_nccl_refinement() {
    let mut cluster = Cluster::start(&[]).unwrap();
    let group = format!("127.0.0.1:{}", free_port());
    for tp in 0..2 {
        let (host, rank) = (format!("host{tp}"), tp.to_string());
        let dir = cluster.work.path().join(format!("vllm-profiles-{tp}"));
        let dir = dir.to_str().unwrap().to_string();
        // An older capture's file in the same dir must not be taken.
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            format!("{dir}/dp0_pp0_tp{tp}_dcp0_ep0_rank{tp}.1000.pt.trace.json.gz"),
            b"stale",
        )
        .unwrap();
        let url = cluster
            .add_server(
                &format!("vllm{tp}"),
                &[
                    "--kind",
                    "vllm",
                    "--hostname",
                    &host,
                    "--tp-size",
                    "2",
                    "--tp-rank",
                    &rank,
                    "--group-addr",
                    &group,
                    "--group-size",
                    "2",
                    "--group-rank",
                    &rank,
                    "--default-output-dir",
                    &dir,
                ],
            )
            .unwrap();
        cluster
            .add_agent(
                &format!("agent{tp}"),
                &url,
                &[
                    "--kind",
                    "vllm",
                    "--profiler-dir",
                    &dir,
                    "--host",
                    &host,
                    "--tp-rank",
                    &rank,
                    "--mode",
                    "trigger",
                ],
            )
            .unwrap();
    }
    cluster.wait_for_agents(2).unwrap();
    let run = cluster
        .capture(&[
            "--profile-id",
            "vllm1",
            "--duration",
            "1s",
            "--workload",
            "completions:rate=20,prompt=16,output=2",
        ])
        .unwrap();
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let workload = workload_line(&run.events);
    assert!(workload["ok"].as_u64().unwrap() > 0, "{workload}");
    assert_eq!(workload["model"], "sim/tiny-model", "from /v1/models");

    let capture = cluster.storage().join("vllm1");
    for tp in 0..2 {
        let stem = capture.join(format!("vllm1-TP-{tp}-EP-0"));
        let trace = stem.with_extension("trace.json.gz");
        assert!(
            std::fs::metadata(&trace).unwrap().len() > 1000,
            "{} is the new export, not the stale file",
            trace.display()
        );
        let sidecar: Value =
            serde_json::from_slice(&std::fs::read(stem.with_extension("meta.json")).unwrap())
                .unwrap();
        assert_eq!(
            sidecar["time_base"]["source"], "kineto_base_time_nanoseconds",
            "{sidecar}"
        );
    }

    let out = cluster.work.path().join("vllm.pftrace");
    let summary = merge_json(&capture, &out, &["--align", "collectives"]).unwrap();
    let ranks: Vec<&Value> = summary["ranks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["rank"] != "requests")
        .collect();
    assert_eq!(ranks.len(), 2, "{summary}");
    let outcomes: Vec<&str> = ranks
        .iter()
        .map(|r| r["collectives"]["outcome"].as_str().unwrap_or_default())
        .collect();
    assert!(outcomes.contains(&"reference"), "{outcomes:?}");
    for rank in &ranks {
        assert!(
            rank["collectives"]["matched"].as_u64().unwrap() > 10,
            "NCCL kernels matched across the workers: {rank}"
        );
        let outcome = rank["collectives"]["outcome"].as_str().unwrap();
        assert!(outcome == "reference" || outcome == "applied", "{rank}");
    }
    if let Some(tp) = TraceProcessor::find() {
        let import = tp.import(&out).unwrap();
        assert!(import.problems.is_empty(), "{:?}", import.problems);
    }
}
