//! The agent against the simulated server (`rankline-simserver`), which
//! follows SERVERS.md: real-format files, the folder before the files, the
//! automatic stop by `num_steps`, Kineto's `.tmp`, multi-host nodes.

use crate::support;

use std::path::Path;
use std::time::Duration;

use rankline_agent::AgentConfig;
use rankline_layout::{FileKind, Sidecar, TimeBaseSource};
use rankline_proto::{CaptureSettings, RankState, RankUpdate};
use rankline_simserver::{Faults, ServerKind, SimServer, SimServerConfig};
use support::*;
use tokio::sync::oneshot;

const LEAD: Duration = Duration::from_millis(300);

/// A simulated server on loopback; dropping the sender stops it.
struct Sim {
    url: String,
    link: Option<std::net::SocketAddr>,
    _stop: oneshot::Sender<()>,
}

async fn sim(config: SimServerConfig) -> Sim {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = SimServer::bind(config, listener).await.unwrap();
    let url = format!("http://{}", server.http_addr());
    let link = server.link_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Sim {
        url,
        link,
        _stop: stop,
    }
}

fn sim_config(hostname: &str) -> SimServerConfig {
    SimServerConfig {
        hostname: hostname.into(),
        events_per_step: 50,
        ..SimServerConfig::default()
    }
}

fn sidecar_of(storage: &Path, update: &RankUpdate) -> Sidecar {
    assert_eq!(update.state(), RankState::Ok, "{}", update.detail);
    for object in &update.objects {
        assert_eq!(
            sha256_of(&storage.join(&object.key)),
            object.sha256,
            "{}",
            object.key
        );
    }
    let key = &update.objects.last().unwrap().key;
    serde_json::from_slice(&std::fs::read(storage.join(key)).unwrap()).unwrap()
}

#[tokio::test]
async fn a_jax_capture_of_the_simulated_server_carries_its_time_base() {
    let spool = tempfile::tempdir().unwrap();
    let storage = tempfile::tempdir().unwrap();
    let server = sim(sim_config("testhost")).await;
    let mut coordinator = FakeCoordinator::start().await;
    let _agent = RunningAgent::spawn(agent_config(&coordinator.url(), &server.url, spool.path()));
    let identity = coordinator.wait_hello().await.identity.unwrap();
    assert_eq!(
        identity.node_rank,
        Some(0),
        "discovered before the first hello"
    );

    let settings = CaptureSettings {
        duration_ms: Some(300),
        ..CaptureSettings::default()
    };
    coordinator.start_capture("sim1", settings, storage.path(), LEAD);
    let last = coordinator.wait_final("sim1").await;
    let sidecar = sidecar_of(storage.path(), &last);
    let xplane = storage
        .path()
        .join(&sidecar.file(FileKind::Xplane).unwrap().key);
    let times = rankline_xplane::read_profile_times(std::fs::File::open(xplane).unwrap()).unwrap();
    assert_eq!(
        sidecar.time_base.source,
        TimeBaseSource::XplaneProfileStartTime
    );
    assert_eq!(Some(sidecar.time_base.unix_ns), times.start_unix_ns);
    assert_eq!(sidecar.profile_stop_unix_ns, times.stop_unix_ns);
    assert!(sidecar.time_base.unix_ns > sidecar.start_requested_unix_ns);
}

#[tokio::test]
async fn num_steps_on_a_server_without_status_tolerates_the_late_stop() {
    let spool = tempfile::tempdir().unwrap();
    let storage = tempfile::tempdir().unwrap();
    let server = sim(SimServerConfig {
        profile_status_route: false,
        // The files come well after the window below ends.
        auto_stop_export_delay: Duration::from_secs(2),
        ..sim_config("testhost")
    })
    .await;
    let mut coordinator = FakeCoordinator::start().await;
    let _agent = RunningAgent::spawn(agent_config(&coordinator.url(), &server.url, spool.path()));
    coordinator.wait_hello().await;

    // Three steps end the profile by themselves; the window's stop comes later.
    let settings = CaptureSettings {
        num_steps: Some(3),
        duration_ms: Some(400),
        ..CaptureSettings::default()
    };
    coordinator.start_capture("steps", settings, storage.path(), LEAD);
    let last = coordinator.wait_final("steps").await;
    let sidecar = sidecar_of(storage.path(), &last);
    assert!(sidecar.stop_requested_unix_ns.is_some());
    assert_eq!(sidecar.files.len(), 2);
}

#[tokio::test]
async fn kineto_files_are_taken_only_once_renamed_from_tmp() {
    let spool = tempfile::tempdir().unwrap();
    let storage = tempfile::tempdir().unwrap();
    let server = sim(SimServerConfig {
        kind: ServerKind::Sglang,
        tp_size: 2,
        tp_rank: 1,
        faults: Faults {
            slow_write: Duration::from_millis(400),
            ..Faults::default()
        },
        ..sim_config("gpuhost")
    })
    .await;
    let mut coordinator = FakeCoordinator::start().await;
    let config = AgentConfig {
        tp_rank: 1,
        mode: rankline_agent::ModeChoice::Trigger,
        ..agent_config(&coordinator.url(), &server.url, spool.path())
    };
    let _agent = RunningAgent::spawn(config);
    let identity = coordinator.wait_hello().await.identity.unwrap();
    assert_eq!(
        identity.server_kind(),
        rankline_proto::ServerKind::Sglang,
        "discovered"
    );

    let settings = CaptureSettings {
        duration_ms: Some(200),
        ..CaptureSettings::default()
    };
    coordinator.start_capture("kin", settings, storage.path(), LEAD);
    let last = coordinator.wait_final("kin").await;
    let sidecar = sidecar_of(storage.path(), &last);
    assert_eq!(
        sidecar.time_base.source,
        TimeBaseSource::KinetoBaseTimeNanoseconds
    );
    let trace = sidecar.file(FileKind::Trace).unwrap();
    assert_eq!(trace.key, "kin/kin-TP-1-EP-0.trace.json.gz");
    assert!(trace.source_name.contains("-TP-1"), "{}", trace.source_name);
    // What was stored is the finished file the server left in the spool.
    let local = spool
        .path()
        .join("captures/kin/unified-0")
        .join(&trace.source_name);
    assert_eq!(sha256_of(&local), trace.sha256);
}

#[tokio::test]
async fn a_two_host_server_has_one_trigger_and_one_collector() {
    let spool = tempfile::tempdir().unwrap();
    let storage = tempfile::tempdir().unwrap();
    let node0 = sim(SimServerConfig {
        nnodes: 2,
        node_rank: 0,
        tp_size: 2,
        dist_init_addr: Some("127.0.0.1:0".into()),
        ..sim_config("host0")
    })
    .await;
    let node1 = sim(SimServerConfig {
        nnodes: 2,
        node_rank: 1,
        tp_size: 2,
        dist_init_addr: Some(node0.link.unwrap().to_string()),
        ..sim_config("host1")
    })
    .await;
    let mut coordinator = FakeCoordinator::start().await;
    // Same spool path on both "hosts", as the agents of one server must have.
    let agent0 = AgentConfig {
        host: Some("host0".into()),
        ..agent_config(&coordinator.url(), &node0.url, spool.path())
    };
    let agent1 = AgentConfig {
        host: Some("host1".into()),
        tp_rank: 1,
        ..agent_config(&coordinator.url(), &node1.url, spool.path())
    };
    let _agent0 = RunningAgent::spawn(agent0);
    let _agent1 = RunningAgent::spawn(agent1);
    let mut triggers = Vec::new();
    while triggers.len() < 2 {
        triggers.push(coordinator.wait_hello().await.identity.unwrap().trigger);
    }
    triggers.sort();
    assert_eq!(triggers, [false, true], "node 0 triggers, node 1 collects");

    let settings = CaptureSettings {
        duration_ms: Some(300),
        ..CaptureSettings::default()
    };
    coordinator.start_capture("mh", settings, storage.path(), LEAD);
    let finals = coordinator.wait_finals("mh", 2).await;
    let mut hosts = Vec::new();
    for update in finals.values() {
        let sidecar = sidecar_of(storage.path(), update);
        let trace = sidecar.file(FileKind::Trace).unwrap();
        assert_eq!(
            trace.source_name,
            format!("{}.trace.json.gz", sidecar.identity.host)
        );
        hosts.push((
            sidecar.identity.host.clone(),
            sidecar.identity.trigger,
            trace.key.clone(),
        ));
    }
    hosts.sort();
    assert_eq!(
        hosts,
        [
            (
                "host0".to_string(),
                true,
                "mh/mh-TP-0-EP-0.trace.json.gz".to_string()
            ),
            (
                "host1".to_string(),
                false,
                "mh/mh-TP-1-EP-0.trace.json.gz".to_string()
            ),
        ]
    );
}

#[tokio::test]
async fn one_agent_serves_every_rank_of_an_sglang_host() {
    let spool = tempfile::tempdir().unwrap();
    let storage = tempfile::tempdir().unwrap();
    let events = spool.path().join("server-events.jsonl");
    // One SGLang server with tp=4 on one host writes four rank files.
    let server = sim(SimServerConfig {
        kind: ServerKind::Sglang,
        tp_size: 4,
        sglang_ranks_written: 4,
        events_log: Some(events.clone()),
        ..sim_config("gpu0")
    })
    .await;
    let mut coordinator = FakeCoordinator::start().await;
    let config = AgentConfig {
        host: Some("gpu0".into()),
        ..agent_config(&coordinator.url(), &server.url, spool.path())
    };
    let _agent = RunningAgent::spawn_ranks(config, rankline_agent::RankChoice::Auto);
    let mut hellos = Vec::new();
    while hellos.len() < 4 {
        let identity = coordinator.wait_hello().await.identity.unwrap();
        // A rank may say hello again once discovery named its kind.
        hellos.retain(|(tp, _): &(u32, bool)| *tp != identity.tp_rank);
        hellos.push((identity.tp_rank, identity.trigger));
    }
    hellos.sort();
    assert_eq!(
        hellos,
        [(0, true), (1, false), (2, false), (3, false)],
        "every rank of the host, one trigger"
    );

    let settings = CaptureSettings {
        duration_ms: Some(300),
        ..CaptureSettings::default()
    };
    coordinator.start_capture("tp4", settings, storage.path(), LEAD);
    let finals = coordinator.wait_finals("tp4", 4).await;
    let mut stored = Vec::new();
    for update in finals.values() {
        let sidecar = sidecar_of(storage.path(), update);
        let trace = sidecar.file(FileKind::Trace).unwrap();
        let tp = sidecar.identity.coords.tp_rank;
        assert!(
            trace.source_name.contains(&format!("-TP-{tp}.")),
            "{} for TP-{tp}",
            trace.source_name
        );
        stored.push((trace.key.clone(), trace.sha256.clone()));
    }
    stored.sort();
    let keys: Vec<_> = stored.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(
        keys,
        (0..4)
            .map(|tp| format!("tp4/tp4-TP-{tp}-EP-0.trace.json.gz"))
            .collect::<Vec<_>>()
    );
    let mut hashes: Vec<_> = stored.iter().map(|(_, sha)| sha.clone()).collect();
    hashes.sort();
    hashes.dedup();
    assert_eq!(hashes.len(), 4, "four different files");
    let starts = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .filter(|line| line.contains("\"start_profile\""))
        .count();
    assert_eq!(starts, 1, "one trigger per server");
}
