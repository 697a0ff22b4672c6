//! Several ranks on one machine, as real processes on loopback: one agent
//! serving every rank of an SGLang tp=8 host, two servers named alike never
//! sharing a file, and the client commands' printing (a closed stdout, the
//! next-step hints).

use std::collections::BTreeSet;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use rankline_e2e::Cluster;
use rankline_e2e::{rankline_bin, run_rankline, wait_until, Spawn};
use rankline_layout::Manifest;

fn manifest(cluster: &Cluster, profile_id: &str) -> Manifest {
    let path = cluster.storage().join(profile_id).join("manifest.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// The sha256 of every rank's trace, as the manifest's sidecars say.
fn trace_hashes(cluster: &Cluster, profile_id: &str) -> Vec<String> {
    manifest(cluster, profile_id)
        .ranks
        .iter()
        .filter_map(|rank| rank.objects.meta.clone())
        .map(|meta| {
            let sidecar: serde_json::Value =
                serde_json::from_slice(&std::fs::read(cluster.storage().join(meta)).unwrap())
                    .unwrap();
            sidecar["files"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["kind"] == "trace")
                .map(|f| f["sha256"].as_str().unwrap().to_string())
                .unwrap()
        })
        .collect()
}

#[test]
fn two_servers_named_alike_on_one_machine_never_share_a_file() {
    // README's "real deployment" steps on one machine: two servers with
    // default options (both name their files after this machine) and an
    // agent beside each, with the same spool.
    let mut cluster = Cluster::start(&[]).unwrap();
    let first = cluster.add_server("server0", &[]).unwrap();
    let second = cluster.add_server("server1", &[]).unwrap();
    cluster
        .add_agent("agent0", &first, &["--tp-rank", "0"])
        .unwrap();
    cluster.wait_for_agents(1).unwrap();
    let mut refused = cluster
        .agent_spawn("agent1", &second, &["--tp-rank", "1"])
        .start()
        .unwrap();
    let status = refused
        .wait_exit(Duration::from_secs(60))
        .expect("the second agent is refused at start, not left running");
    assert!(!status.success());
    let log = refused.log_text();
    for words in [
        "refusing to start",
        "already collects",
        "--spool",
        "unified-0/TP-0-EP-0",
    ] {
        assert!(log.contains(words), "{words:?} in:\n{log}");
    }

    // With its own spool the second server writes its own folder.
    let own_spool = cluster.work.path().join("spool-1");
    let agent = Spawn::rankline("agent1", &["agent", "--tp-rank", "1"])
        .args([
            "--coordinator",
            cluster.coordinator_url(),
            "--server",
            &second,
        ])
        .arg("--spool")
        .arg(own_spool.to_string_lossy())
        .start()
        .unwrap();
    cluster.agents.push(agent);
    cluster.wait_for_agents(2).unwrap();
    let run = cluster
        .capture(&["--profile-id", "apart", "--duration", "300ms"])
        .unwrap();
    assert_eq!(run.code, 0, "{:?}\n{}", run.ranks(), run.stderr);
    let hashes: BTreeSet<_> = trace_hashes(&cluster, "apart").into_iter().collect();
    assert_eq!(hashes.len(), 2, "each rank its own file");
}

#[test]
fn one_agent_serves_every_rank_of_an_sglang_tp8_host() {
    let mut cluster = Cluster::start(&[]).unwrap();
    let server = cluster
        .add_server(
            "sglang",
            &[
                "--kind",
                "sglang",
                "--tp-size",
                "8",
                "--hostname",
                "gpu0",
                "--events-per-step",
                "50",
            ],
        )
        .unwrap();
    cluster
        .add_agent("agent", &server, &["--ranks", "auto", "--host", "gpu0"])
        .unwrap();
    cluster.wait_for_agents(8).unwrap();
    // Each rank says who it is once the server told it its kind.
    wait_until(
        "one trigger among the 8 ranks",
        Duration::from_secs(30),
        || {
            let agents = cluster.agents_json().ok()?;
            let triggers = agents
                .iter()
                .filter(|a| a["identity"]["trigger"] == true)
                .count();
            (triggers == 1).then_some(())
        },
    )
    .unwrap();

    let run = cluster
        .capture(&["--profile-id", "tp8", "--duration", "300ms"])
        .unwrap();
    assert_eq!(run.code, 0, "{:?}\n{}", run.ranks(), run.stderr);
    let ranks = run.ranks();
    assert_eq!(ranks.len(), 8);
    assert!(ranks.iter().all(|(_, state, _)| state == "ok"), "{ranks:?}");
    let manifest = manifest(&cluster, "tp8");
    let mut keys: Vec<_> = manifest
        .ranks
        .iter()
        .map(|r| r.objects.trace.clone().unwrap())
        .collect();
    keys.sort();
    let expected: Vec<_> = (0..8)
        .map(|tp| format!("tp8/tp8-TP-{tp}-EP-0.trace.json.gz"))
        .collect();
    assert_eq!(keys, expected);
    let hashes: BTreeSet<_> = trace_hashes(&cluster, "tp8").into_iter().collect();
    assert_eq!(hashes.len(), 8, "eight different files");
}

#[test]
fn client_commands_end_quietly_on_a_closed_stdout_and_hint_with_their_coordinator() {
    let mut cluster = Cluster::start(&[]).unwrap();
    let url = cluster.coordinator_url().to_string();

    // An empty coordinator on a non-default address: the hint names it.
    let empty = run_rankline(&["captures", "--coordinator", &url]).unwrap();
    let text = String::from_utf8_lossy(&empty.stdout);
    assert!(
        text.contains(&format!("`rankline capture --coordinator {url}`")),
        "{text}"
    );

    let server = cluster.add_server("s", &["--hostname", "s"]).unwrap();
    cluster.add_agent("a", &server, &["--host", "s"]).unwrap();
    cluster.wait_for_agents(1).unwrap();
    let run = cluster
        .capture(&["--profile-id", "piped", "--duration", "200ms"])
        .unwrap();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let stopped = run_rankline(&["stop", "piped", "--coordinator", &url]).unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&stopped.stdout),
        String::from_utf8_lossy(&stopped.stderr)
    );
    for hint in said.split('`').skip(1).step_by(2) {
        if hint.starts_with("rankline capture") || hint.starts_with("rankline stop") {
            assert!(hint.contains(&format!("--coordinator {url}")), "{said}");
        }
    }

    // `rankline capture show ID --json | head`: the reader is gone before
    // anything is written.
    for args in [
        vec!["capture", "show", "piped", "--json"],
        vec!["captures", "--json"],
        vec!["agents", "--json"],
    ] {
        let mut child = Command::new(rankline_bin())
            .args(&args)
            .args(["--coordinator", &url])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_ne!(status.code(), Some(101), "{args:?}: {stderr}");
        // Quietly, as a Unix tool SIGPIPE ends: nothing said, 141 (or 0
        // when the answer fit in the pipe before the reader left).
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
        assert!(matches!(status.code(), Some(0 | 141)), "{args:?}: {status}");
    }
}
