//! End-to-end captures (issue 2): a coordinator, agents and simulated servers
//! as separate processes on loopback, driven through the `rankline` CLI.

use std::path::Path;
use std::time::Duration;

use rankline_e2e::{free_port, run_rankline, wait_until, Cluster, Spawn};
use rankline_layout::{Manifest, Sidecar};
use sha2::{Digest, Sha256};

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

fn manifest(cluster: &Cluster, profile_id: &str) -> Manifest {
    let path = cluster.storage().join(profile_id).join("manifest.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn sidecar(cluster: &Cluster, stem: &str) -> Sidecar {
    let path = cluster.storage().join(format!("{stem}.meta.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// Every file a sidecar lists exists with its recorded size and sha256.
fn assert_rank_stored(cluster: &Cluster, stem: &str) -> Sidecar {
    let meta = sidecar(cluster, stem);
    let mut kinds = vec![];
    for file in &meta.files {
        let path = cluster.storage().join(&file.key);
        assert!(file.key.starts_with(stem), "{} under {stem}", file.key);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            file.size,
            "{}",
            file.key
        );
        assert_eq!(sha256_of(&path), file.sha256, "{}", file.key);
        kinds.push(file.key.rsplit_once(stem).unwrap().1.to_string());
    }
    kinds.sort();
    assert_eq!(kinds, [".trace.json.gz", ".xplane.pb"]);
    meta
}

/// Starts a simulated server that logs the profiling calls it receives.
fn add_logged_server(cluster: &mut Cluster, name: &str, args: &[&str]) -> String {
    let log = cluster.work.path().join(format!("{name}.events.jsonl"));
    let mut all = vec!["--events-log", log.to_str().unwrap()];
    all.extend_from_slice(args);
    cluster.add_server(name, &all).unwrap()
}

fn starts_received(cluster: &Cluster, name: &str) -> usize {
    let log = cluster.work.path().join(format!("{name}.events.jsonl"));
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"start_profile\""))
        .count()
}

#[test]
fn four_ranks_are_stored_under_canonical_names_with_matching_checksums() {
    let mut cluster = Cluster::start(&[]).unwrap();
    for tp in 0..4 {
        let host = format!("host{tp}");
        let url = cluster
            .add_server(&format!("server{tp}"), &["--hostname", &host])
            .unwrap();
        cluster
            .add_agent(
                &format!("agent{tp}"),
                &url,
                &["--host", &host, "--tp-rank", &tp.to_string()],
            )
            .unwrap();
    }
    cluster.wait_for_agents(4).unwrap();

    let run = cluster
        .capture(&["--profile-id", "e2e4", "--duration", "300ms"])
        .unwrap();
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert_eq!(run.summary()["status"], "complete");

    let manifest = manifest(&cluster, "e2e4");
    assert_eq!(manifest.profile_id, "e2e4");
    assert_eq!(manifest.status, "complete");
    assert_eq!(manifest.ranks.len(), 4);
    let mut tps: Vec<u32> = manifest
        .ranks
        .iter()
        .map(|r| r.identity.coords.tp_rank)
        .collect();
    tps.sort();
    assert_eq!(tps, [0, 1, 2, 3]);
    for rank in &manifest.ranks {
        let tp = rank.identity.coords.tp_rank;
        let stem = format!("e2e4/e2e4-TP-{tp}-EP-0");
        assert_eq!(rank.status, "ok");
        assert_eq!(
            rank.objects.trace.as_deref(),
            Some(&*format!("{stem}.trace.json.gz"))
        );
        assert_eq!(
            rank.objects.xplane.as_deref(),
            Some(&*format!("{stem}.xplane.pb"))
        );
        assert_eq!(
            rank.objects.meta.as_deref(),
            Some(&*format!("{stem}.meta.json"))
        );
        let meta = assert_rank_stored(&cluster, &stem);
        assert_eq!(meta.identity.host, format!("host{tp}"));
        assert!(meta.time_base.unix_ns > 0, "JAX time base recorded");
        assert!(meta.clock.is_some(), "clock fit recorded");
    }
}

#[test]
fn pd_workers_with_colliding_ranks_are_kept_apart_by_folder() {
    let mut cluster = Cluster::start(&[]).unwrap();
    for (role, worker) in [("prefill", 0), ("prefill", 1), ("decode", 0), ("decode", 1)] {
        let name = format!("{role}{worker}");
        let url = cluster
            .add_server(&name, &["--hostname", &name, "--disaggregation-mode", role])
            .unwrap();
        // The role comes from the server (/get_server_info); the worker index
        // from the agent's flag.
        cluster
            .add_agent(
                &name,
                &url,
                &["--host", &name, "--worker", &worker.to_string()],
            )
            .unwrap();
    }
    cluster.wait_for_agents(4).unwrap();

    let run = cluster
        .capture(&["--profile-id", "pd", "--duration", "300ms"])
        .unwrap();
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    for folder in ["prefill-0", "prefill-1", "decode-0", "decode-1"] {
        let meta = assert_rank_stored(&cluster, &format!("pd/{folder}/pd-TP-0-EP-0"));
        assert_eq!(meta.identity.host, folder.replace('-', ""));
    }
    assert_eq!(manifest(&cluster, "pd").ranks.len(), 4);

    // A selection profiles one group only, as upstream tooling does.
    let run = cluster
        .capture(&[
            "--profile-id",
            "pf",
            "--duration",
            "200ms",
            "--select",
            "role=prefill",
        ])
        .unwrap();
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let roles: Vec<String> = manifest(&cluster, "pf")
        .ranks
        .iter()
        .map(|r| r.identity.coords.role.to_string())
        .collect();
    assert_eq!(roles, ["prefill", "prefill"]);
}

#[test]
fn multi_host_server_is_triggered_once_and_every_host_collects() {
    let mut cluster = Cluster::start(&[]).unwrap();
    let dist = format!("127.0.0.1:{}", free_port());
    for node in 0..4 {
        let host = format!("node{node}");
        let node_rank = node.to_string();
        let url = add_logged_server(
            &mut cluster,
            &host,
            &[
                "--hostname",
                &host,
                "--nnodes",
                "4",
                "--node-rank",
                &node_rank,
                "--dist-init-addr",
                &dist,
                "--tp-size",
                "4",
            ],
        );
        // Trigger or collect is discovered: node 0 answers /get_server_info,
        // the others 404 there.
        cluster
            .add_agent(&host, &url, &["--host", &host, "--tp-rank", &node_rank])
            .unwrap();
    }
    cluster.wait_for_agents(4).unwrap();

    let run = cluster
        .capture(&["--profile-id", "mh", "--duration", "300ms"])
        .unwrap();
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let mut triggers = 0;
    for node in 0..4 {
        let meta = assert_rank_stored(&cluster, &format!("mh/mh-TP-{node}-EP-0"));
        assert_eq!(meta.identity.host, format!("node{node}"));
        assert_eq!(
            meta.files[0].source_name.split('.').next(),
            Some(&*format!("node{node}"))
        );
        triggers += usize::from(meta.identity.trigger);
    }
    assert_eq!(triggers, 1, "exactly one agent triggers the server");
    assert_eq!(starts_received(&cluster, "node0"), 1);
}

#[test]
fn a_down_server_fails_its_rank_and_the_capture_still_ends() {
    let mut cluster = Cluster::start(&[]).unwrap();
    let url = cluster.add_server("ok", &["--hostname", "ok"]).unwrap();
    cluster
        .add_agent("ok", &url, &["--host", "ok", "--tp-rank", "0"])
        .unwrap();
    let nobody = format!("http://127.0.0.1:{}", free_port());
    cluster
        .add_agent(
            "down",
            &nobody,
            &[
                "--host",
                "down",
                "--tp-rank",
                "1",
                "--mode",
                "trigger",
                "--kind",
                "sglang-jax",
            ],
        )
        .unwrap();
    cluster.wait_for_agents(2).unwrap();

    let run = cluster
        .capture(&["--profile-id", "down1", "--duration", "200ms"])
        .unwrap();
    assert_eq!(run.code, 1, "a failed rank fails the command");
    assert_eq!(run.summary()["status"], "partial");
    let ranks = run.ranks();
    let down = ranks.iter().find(|r| r.0.contains("TP-1")).unwrap();
    assert_eq!(down.1, "failed");
    assert!(
        down.2.contains(&nobody),
        "the reason names the server: {}",
        down.2
    );
    let manifest = manifest(&cluster, "down1");
    let failed = manifest
        .ranks
        .iter()
        .find(|r| r.identity.coords.tp_rank == 1)
        .unwrap();
    assert_eq!(failed.status, "failed");
    assert!(failed.reason.is_some());

    let partial_ok = cluster
        .capture(&[
            "--profile-id",
            "down2",
            "--duration",
            "200ms",
            "--allow-partial",
        ])
        .unwrap();
    assert_eq!(
        partial_ok.code, 0,
        "--allow-partial accepts a partial capture"
    );
}

#[test]
fn a_500_on_start_fails_the_rank_with_advice() {
    let mut cluster = Cluster::start(&[]).unwrap();
    let url = cluster
        .add_server("s", &["--hostname", "s", "--fail-start"])
        .unwrap();
    cluster.add_agent("a", &url, &["--host", "s"]).unwrap();
    cluster.wait_for_agents(1).unwrap();

    let run = cluster
        .capture(&["--profile-id", "f500", "--duration", "200ms"])
        .unwrap();
    assert_eq!(run.code, 1);
    assert_eq!(run.summary()["status"], "failed");
    let (_, state, detail) = &run.ranks()[0];
    assert_eq!(state, "failed");
    assert!(detail.contains("500"), "{detail}");
    assert_eq!(manifest(&cluster, "f500").ranks[0].status, "failed");
}

#[test]
fn a_hanging_server_times_out_instead_of_hanging_the_capture() {
    let mut cluster = Cluster::start(&[]).unwrap();
    let url = cluster
        .add_server("s", &["--hostname", "s", "--hang"])
        .unwrap();
    cluster
        .add_agent(
            "a",
            &url,
            &["--host", "s", "--mode", "trigger", "--kind", "sglang-jax"],
        )
        .unwrap();
    cluster.wait_for_agents(1).unwrap();

    let run = cluster
        .capture(&[
            "--profile-id",
            "hang",
            "--duration",
            "200ms",
            "--timeout",
            "20s",
        ])
        .unwrap();
    assert_eq!(run.code, 1);
    let (_, state, detail) = &run.ranks()[0];
    assert_eq!(state, "failed");
    assert!(
        detail.to_lowercase().contains("answer") || detail.contains("timed out"),
        "{detail}"
    );
}

#[test]
fn an_agent_that_dies_mid_capture_is_marked_lost_and_the_capture_ends() {
    let mut cluster =
        Cluster::start(&["--heartbeat-interval", "200ms", "--lost-after", "5"]).unwrap();
    for tp in 0..2 {
        let host = format!("h{tp}");
        let url = add_logged_server(&mut cluster, &host, &["--hostname", &host]);
        cluster
            .add_agent(
                &host,
                &url,
                &["--host", &host, "--tp-rank", &tp.to_string()],
            )
            .unwrap();
    }
    cluster.wait_for_agents(2).unwrap();

    let url = cluster.coordinator_url().to_string();
    let capture = std::thread::spawn(move || {
        run_rankline(&[
            "capture",
            "--json",
            "--coordinator",
            &url,
            "--profile-id",
            "lost1",
            "--duration",
            "3s",
        ])
        .unwrap()
    });
    wait_until(
        "the servers to start profiling",
        Duration::from_secs(30),
        || (starts_received(&cluster, "h1") == 1).then_some(()),
    )
    .unwrap();
    cluster.agents[1].kill_hard();

    let output = capture.join().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let manifest = manifest(&cluster, "lost1");
    assert_eq!(manifest.status, "partial");
    let status = |tp: u32| {
        manifest
            .ranks
            .iter()
            .find(|r| r.identity.coords.tp_rank == tp)
            .map(|r| r.status)
            .unwrap()
    };
    assert_eq!(status(0), "ok");
    assert_eq!(status(1), "lost");
}

#[test]
fn agents_wait_for_an_unreachable_coordinator_and_connect_when_it_comes() {
    let work = tempfile::tempdir().unwrap();
    let port = free_port();
    let coordinator_url = format!("http://127.0.0.1:{port}");
    let server = Spawn::rankline("server", &["sim-server", "--port", "0", "--hostname", "s"])
        .wait_for_url()
        .start()
        .unwrap();
    let _agent = Spawn::rankline("agent", &["agent", "--host", "s"])
        .args(["--coordinator", &coordinator_url, "--server", server.url()])
        .arg("--spool")
        .arg(work.path().join("spool").to_string_lossy())
        .start()
        .unwrap();
    // Nothing listens yet: the agent retries with backoff.
    std::thread::sleep(Duration::from_millis(1500));
    let _coordinator = Spawn::rankline("coordinator", &["coordinator"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--storage")
        .arg(work.path().join("storage").to_string_lossy())
        .wait_for_url()
        .start()
        .unwrap();
    let run = wait_until("the agent to connect", Duration::from_secs(30), || {
        let out = run_rankline(&["agents", "--json", "--coordinator", &coordinator_url]).ok()?;
        let agents: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).ok()?;
        (agents.len() == 1 && agents[0]["connected"] == true).then_some(())
    });
    run.unwrap();
    let output = run_rankline(&[
        "capture",
        "--coordinator",
        &coordinator_url,
        "--profile-id",
        "late",
        "--duration",
        "200ms",
    ])
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn bad_requests_are_refused_with_a_clear_error() {
    let mut cluster = Cluster::start(&[]).unwrap();
    let url = add_logged_server(&mut cluster, "s", &["--hostname", "s"]);
    cluster.add_agent("a", &url, &["--host", "s"]).unwrap();
    cluster.wait_for_agents(1).unwrap();

    let ok = cluster
        .capture(&["--profile-id", "dup", "--duration", "100ms"])
        .unwrap();
    assert_eq!(ok.code, 0, "{}", ok.stderr);

    let again = cluster
        .capture(&["--profile-id", "dup", "--duration", "100ms"])
        .unwrap();
    assert_eq!(again.code, 2);
    assert!(again.stderr.contains("already"), "{}", again.stderr);

    let invalid = cluster
        .capture(&["--profile-id", "../etc", "--duration", "100ms"])
        .unwrap();
    assert_eq!(invalid.code, 2);
    assert!(
        invalid.stderr.contains("letters, digits"),
        "{}",
        invalid.stderr
    );

    let nothing = cluster
        .capture(&["--select", "role=decode", "--duration", "100ms"])
        .unwrap();
    assert_eq!(nothing.code, 2);
    assert!(
        nothing.stderr.contains("s/unified-0"),
        "lists the agents: {}",
        nothing.stderr
    );

    // A second capture on the same agent while one runs is refused.
    let url = cluster.coordinator_url().to_string();
    let long = std::thread::spawn(move || {
        run_rankline(&[
            "capture",
            "--coordinator",
            &url,
            "--profile-id",
            "long",
            "--duration",
            "3s",
        ])
        .unwrap()
    });
    wait_until("the long capture to start", Duration::from_secs(30), || {
        (starts_received(&cluster, "s") == 2).then_some(())
    })
    .unwrap();
    let busy = cluster
        .capture(&["--profile-id", "second", "--duration", "100ms"])
        .unwrap();
    assert_eq!(busy.code, 2);
    assert!(
        busy.stderr.contains("long"),
        "names the running capture: {}",
        busy.stderr
    );
    assert!(long.join().unwrap().status.success());
}
