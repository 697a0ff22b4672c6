//! The agent's link to the coordinator, its clock estimate and its
//! discovery of the server, driven in-process.

use crate::support;

use std::time::Duration;

use rankline_layout::Sidecar;
use rankline_proto::{unix_now_ns, CaptureSettings, RankState, Role, ServerKind};
use serde_json::json;
use support::*;

#[tokio::test]
async fn an_unreachable_coordinator_is_joined_once_it_is_up() {
    let spool = tempfile::tempdir().unwrap();
    let server = FakeServer::start("testhost").await;
    let port = ReservedPort::new();
    let _agent = RunningAgent::spawn(agent_config(&port.url(), &server.url, spool.path()));
    // Let the agent fail a few times first.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut coordinator = FakeCoordinator::start_on(port, 0).await;
    let hello = coordinator.wait_hello().await;
    assert_eq!(hello.identity.unwrap().host, "testhost");
    assert!(hello.in_flight.is_empty());
    // Heartbeats follow the hello.
    coordinator.wait_clock_heartbeat().await;
}

#[tokio::test]
async fn a_capture_goes_on_through_an_outage_and_is_reported_after_it() {
    let spool = tempfile::tempdir().unwrap();
    let storage = tempfile::tempdir().unwrap();
    let server = FakeServer::start("testhost").await;
    let mut coordinator = FakeCoordinator::start().await;
    let _agent = RunningAgent::spawn(agent_config(&coordinator.url(), &server.url, spool.path()));
    coordinator.wait_hello().await;
    let settings = CaptureSettings {
        duration_ms: Some(300),
        ..CaptureSettings::default()
    };
    coordinator.start_capture(
        "outage",
        settings,
        storage.path(),
        Duration::from_millis(200),
    );
    coordinator.wait_state("outage", RankState::Profiling).await;

    // The coordinator goes away mid-capture and refuses the agent for a while.
    coordinator.drop_link(true);
    let journal = spool
        .path()
        .join("agents/testhost_unified-0_TP-0-EP-0/captures/outage.json");
    loop {
        let text = std::fs::read(&journal).unwrap_or_default();
        let state = serde_json::from_slice::<serde_json::Value>(&text)
            .map(|record| record["state"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default();
        if state == "ok" || state == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let joins_during_outage = coordinator.joins();
    coordinator.accept_joins();

    let hello = coordinator.wait_hello().await;
    assert!(coordinator.joins() > joins_during_outage);
    let finished = hello
        .in_flight
        .iter()
        .find(|update| update.profile_id == "outage")
        .expect("the hello carries the capture that ended during the outage");
    assert_eq!(finished.state(), RankState::Ok, "{}", finished.detail);
    assert_eq!(finished.objects.len(), 3);
    assert!(storage
        .path()
        .join("outage/outage-TP-0-EP-0.meta.json")
        .exists());
}

#[tokio::test]
async fn the_clock_offset_is_measured_and_the_start_converted() {
    let spool = tempfile::tempdir().unwrap();
    let storage = tempfile::tempdir().unwrap();
    let server = FakeServer::start("testhost").await;
    // The coordinator's clock is 5 s ahead, so this agent's offset is -5 s.
    let ahead: i64 = 5_000_000_000;
    let mut coordinator = FakeCoordinator::start_on(ReservedPort::new(), ahead).await;
    let _agent = RunningAgent::spawn(agent_config(&coordinator.url(), &server.url, spool.path()));
    coordinator.wait_hello().await;

    let estimate = coordinator.wait_clock_heartbeat().await.clock.unwrap();
    assert!(
        estimate.offset_ns.abs_diff(-ahead) <= estimate.error_bound_ns,
        "{estimate:?}"
    );
    assert!(
        estimate.error_bound_ns < 50_000_000,
        "loopback: {estimate:?}"
    );
    assert!(estimate.samples >= 1);

    let lead = Duration::from_millis(400);
    let start_at_on_coordinator = unix_now_ns() + ahead + lead.as_nanos() as i64;
    coordinator.start_capture(
        "clock",
        CaptureSettings {
            duration_ms: Some(100),
            ..CaptureSettings::default()
        },
        storage.path(),
        lead,
    );
    let last = coordinator.wait_final("clock").await;
    assert_eq!(last.state(), RankState::Ok, "{}", last.detail);
    let sidecar: Sidecar = serde_json::from_slice(
        &std::fs::read(storage.path().join("clock/clock-TP-0-EP-0.meta.json")).unwrap(),
    )
    .unwrap();
    let fit = sidecar.clock.unwrap();
    assert!(
        fit.offset_ns.abs_diff(-ahead) <= fit.error_bound_ns,
        "{fit:?}"
    );
    assert!(fit.samples.len() >= 2, "samples before and after: {fit:?}");
    // The start went out at the coordinator's instant, on this host's clock
    // 5 s earlier (not 5 s later, nor at once; the bound allows for the
    // estimate's error, the slack for a loaded test machine).
    let on_this_host = start_at_on_coordinator - ahead;
    let sent = sidecar.start_requested_unix_ns;
    assert!(
        sent + fit.error_bound_ns as i64 >= on_this_host,
        "sent {} ms early",
        (on_this_host - sent) / 1_000_000
    );
    assert!(
        sent - on_this_host < 1_000_000_000,
        "sent {} ms late",
        (sent - on_this_host) / 1_000_000
    );
}

#[tokio::test]
async fn discovery_sets_role_and_kind_and_flags_win() {
    let spool = tempfile::tempdir().unwrap();
    let server = FakeServer::start("testhost").await;
    *server.state.info.lock().unwrap() = Some(json!({
        "disaggregation_mode": "prefill", "device": "cuda", "node_rank": 0, "tp_size": 2
    }));
    let mut coordinator = FakeCoordinator::start().await;
    let config = rankline_agent::AgentConfig {
        worker: 2,
        ..agent_config(&coordinator.url(), &server.url, spool.path())
    };
    let _agent = RunningAgent::spawn(config);
    let identity = loop {
        let identity = coordinator.wait_hello().await.identity.unwrap();
        if identity.role() == Role::Prefill {
            break identity;
        }
    };
    assert_eq!(identity.server_kind(), ServerKind::Sglang);
    assert_eq!(identity.node_rank, Some(0));
    assert!(identity.trigger);
    assert_eq!(identity.agent_id, "testhost/prefill-2/TP-0-EP-0");

    let flagged = rankline_agent::AgentConfig {
        role: Some(Role::Decode),
        kind: rankline_agent::KindChoice::SglangJax,
        ..agent_config(&coordinator.url(), &server.url, spool.path())
    };
    let _flagged = RunningAgent::spawn(flagged);
    // Discovery adds the node rank; role and kind stay as flagged.
    loop {
        let identity = coordinator.wait_hello().await.identity.unwrap();
        assert_eq!(identity.role(), Role::Decode);
        assert_eq!(identity.server_kind(), ServerKind::SglangJax);
        if identity.node_rank == Some(0) {
            break;
        }
    }
}

#[tokio::test]
async fn a_server_that_only_answers_health_makes_a_collector_once_it_is_up() {
    let spool = tempfile::tempdir().unwrap();
    let port = ReservedPort::new();
    let mut coordinator = FakeCoordinator::start().await;
    let _agent = RunningAgent::spawn(agent_config(&coordinator.url(), &port.url(), spool.path()));
    // The server is down: the agent joins anyway, as a tentative trigger.
    let first = coordinator.wait_hello().await.identity.unwrap();
    assert!(first.trigger);

    let server = FakeServer::start_on("testhost", port).await;
    *server.state.info.lock().unwrap() = None;
    let again = coordinator.wait_hello().await.identity.unwrap();
    assert!(!again.trigger, "a node >= 1 only collects");
    assert_eq!(again.node_rank, None);
}
