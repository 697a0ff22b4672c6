//! Captures driven end to end in-process: an in-test coordinator sends
//! StartCapture / StopCapture, the agent drives a scriptable server (or only
//! collects), and the results land in a file:// storage.

use crate::support;

use std::path::Path;
use std::time::Duration;

use rankline_agent::{KindChoice, ModeChoice};
use rankline_layout::{FileKind, Sidecar, TimeBaseSource};
use rankline_proto::{CaptureSettings, RankState, RankUpdate};
use support::*;

const LEAD: Duration = Duration::from_millis(300);

fn duration(ms: u64) -> CaptureSettings {
    CaptureSettings {
        duration_ms: Some(ms),
        ..CaptureSettings::default()
    }
}

fn num_steps(steps: u32) -> CaptureSettings {
    CaptureSettings {
        num_steps: Some(steps),
        ..CaptureSettings::default()
    }
}

/// Checks every stored object against its bytes and returns the sidecar.
fn check_stored(storage: &Path, update: &RankUpdate) -> Sidecar {
    assert_eq!(update.state(), RankState::Ok, "{}", update.detail);
    for object in &update.objects {
        let path = storage.join(&object.key);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            object.size,
            "{}",
            object.key
        );
        assert_eq!(sha256_of(&path), object.sha256, "{}", object.key);
    }
    let sidecar_object = update.objects.last().unwrap();
    assert!(
        sidecar_object.key.ends_with(".meta.json"),
        "the sidecar is the last object"
    );
    let sidecar: Sidecar =
        serde_json::from_slice(&std::fs::read(storage.join(&sidecar_object.key)).unwrap()).unwrap();
    let sidecar_written = std::fs::metadata(storage.join(&sidecar_object.key))
        .unwrap()
        .modified()
        .unwrap();
    for file in &sidecar.files {
        let object = update
            .objects
            .iter()
            .find(|o| o.key == file.key)
            .expect("sidecar file is stored");
        assert_eq!((object.size, &object.sha256), (file.size, &file.sha256));
        let written = std::fs::metadata(storage.join(&file.key))
            .unwrap()
            .modified()
            .unwrap();
        assert!(
            written <= sidecar_written,
            "{} was stored after the sidecar",
            file.key
        );
    }
    sidecar
}

#[tokio::test]
async fn a_full_capture_stores_both_files_then_the_sidecar() {
    let mut rig = rig().await;
    let identity = rig.hello.identity.unwrap();
    assert_eq!(identity.host, "testhost");
    assert!(identity.trigger);

    rig.coordinator
        .start_capture("cap1", duration(300), rig.storage.path(), LEAD);
    let mut states = Vec::new();
    let last = loop {
        let update = rig.coordinator.next_update("cap1").await;
        if states.last() != Some(&update.state()) {
            states.push(update.state());
        }
        if update.state().is_final() {
            break update;
        }
    };
    assert_eq!(
        states,
        [
            RankState::Armed,
            RankState::Profiling,
            RankState::Stopping,
            RankState::Collecting,
            RankState::Uploading,
            RankState::Ok
        ],
        "{}",
        last.detail
    );
    let sidecar = check_stored(rig.storage.path(), &last);
    let keys: Vec<&str> = last.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "cap1/cap1-TP-0-EP-0.trace.json.gz",
            "cap1/cap1-TP-0-EP-0.xplane.pb",
            "cap1/cap1-TP-0-EP-0.meta.json"
        ]
    );
    assert_eq!(rig.server.calls(), ["start", "stop"]);

    // The rig.server was told to write into the rig.agent's own rig.spool, where the files stay.
    let output_dir = rig.spool.path().join("captures/cap1/unified-0");
    assert_eq!(
        rig.server.start_body()["output_dir"],
        output_dir.to_str().unwrap()
    );
    let source = output_dir.join("plugins/profile/2026_11_22_21_52_13/testhost.trace.json.gz");
    assert_eq!(sha256_of(&source), last.objects[0].sha256);

    assert_eq!(sidecar.profile_id, "cap1");
    assert_eq!(sidecar.identity.host, "testhost");
    assert_eq!(sidecar.identity.server_kind, "sglang-jax");
    assert_eq!(
        sidecar.file(FileKind::Trace).unwrap().source_name,
        "testhost.trace.json.gz"
    );
    assert_eq!(
        sidecar.time_base.source,
        TimeBaseSource::XplaneProfileStartTime
    );
    assert!(sidecar.time_base.unix_ns >= sidecar.start_requested_unix_ns);
    assert_eq!(
        sidecar.profile_stop_unix_ns,
        Some(sidecar.time_base.unix_ns + 1_000_000)
    );
    let stop_requested = sidecar
        .stop_requested_unix_ns
        .expect("the agent stopped it");
    assert!(stop_requested >= sidecar.start_requested_unix_ns + 300_000_000);
    let clock = sidecar.clock.expect("the sidecar has a clock fit");
    assert!(!clock.samples.is_empty());

    let journal: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            rig.spool
                .path()
                .join("agents/testhost_unified-0_TP-0-EP-0/captures/cap1.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(journal["state"], "ok");
    assert_eq!(journal["sidecar_written"], true);
    assert_eq!(journal["files"][1]["uploaded"], true);
    rig.agent.shut_down().await;
}

#[tokio::test]
async fn num_steps_without_status_route_survives_the_500_of_a_late_stop() {
    let spool = tempfile::tempdir().unwrap();
    let storage = tempfile::tempdir().unwrap();
    let server = FakeServer::start("testhost").await;
    server
        .state
        .status_route
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let mut coordinator = FakeCoordinator::start().await;
    let _agent = RunningAgent::spawn(agent_config(&coordinator.url(), &server.url, spool.path()));
    coordinator.wait_hello().await;

    coordinator.start_capture("steps", num_steps(3), storage.path(), LEAD);
    coordinator.wait_state("steps", RankState::Profiling).await;
    // The server already stopped by itself; a stop now gets the bare 500.
    coordinator.stop_capture("steps");
    let stopping = coordinator.wait_state("steps", RankState::Stopping).await;
    assert_eq!(stopping.state(), RankState::Stopping, "{}", stopping.detail);
    // Wait until the 500 has come back before the files appear.
    while server.calls().len() < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.release_files();
    let last = coordinator.wait_final("steps").await;
    let sidecar = check_stored(storage.path(), &last);
    assert_eq!(server.calls(), ["start", "stop"]);
    assert_eq!(server.start_body()["num_steps"], 3);
    assert!(sidecar.stop_requested_unix_ns.is_some());
}

#[tokio::test]
async fn num_steps_with_status_route_needs_no_stop() {
    let mut rig = rig().await;

    rig.coordinator
        .start_capture("steps2", num_steps(2), rig.storage.path(), LEAD);
    let stopping = rig
        .coordinator
        .wait_state("steps2", RankState::Stopping)
        .await;
    assert!(
        stopping.detail.contains("stopped by itself"),
        "{}",
        stopping.detail
    );
    rig.server.release_files();
    let last = rig.coordinator.wait_final("steps2").await;
    let sidecar = check_stored(rig.storage.path(), &last);
    assert_eq!(
        rig.server.calls(),
        ["start"],
        "no stop after an automatic stop"
    );
    assert_eq!(sidecar.stop_requested_unix_ns, None);
    assert!(sidecar.stop_observed_unix_ns.is_some());
}

#[tokio::test]
async fn a_server_that_is_down_fails_the_rank_with_a_reason() {
    let spool = tempfile::tempdir().unwrap();
    let storage = tempfile::tempdir().unwrap();
    let nothing_listens = ReservedPort::new();
    let nothing = nothing_listens.url();
    let mut coordinator = FakeCoordinator::start().await;
    let _agent = RunningAgent::spawn(agent_config(&coordinator.url(), &nothing, spool.path()));
    coordinator.wait_hello().await;

    coordinator.start_capture("down", duration(200), storage.path(), LEAD);
    let last = coordinator.wait_final("down").await;
    assert_eq!(last.state(), RankState::Failed);
    assert!(
        last.detail.contains("cannot reach the server"),
        "{}",
        last.detail
    );
    assert!(last.detail.contains("/start_profile"), "{}", last.detail);
}

#[tokio::test]
async fn a_500_on_start_says_a_profile_is_probably_running() {
    let mut rig = rig().await;
    *rig.server.state.on_start.lock().unwrap() = OnStart::Fail500;

    rig.coordinator
        .start_capture("busy-server", duration(200), rig.storage.path(), LEAD);
    let last = rig.coordinator.wait_final("busy-server").await;
    assert_eq!(last.state(), RankState::Failed);
    assert!(last.detail.contains("already running"), "{}", last.detail);
    assert!(last.detail.contains("/stop_profile"), "{}", last.detail);
    assert_eq!(
        rig.server.calls(),
        ["start"],
        "the other profile is left alone"
    );
}

#[tokio::test]
async fn a_hanging_server_fails_the_rank_by_timeout() {
    let mut rig = rig().await;
    *rig.server.state.on_start.lock().unwrap() = OnStart::Hang;

    let settings = CaptureSettings {
        timeout_ms: 1_000,
        ..duration(200)
    };
    rig.coordinator
        .start_capture("hang", settings, rig.storage.path(), LEAD);
    let last = rig.coordinator.wait_final("hang").await;
    assert_eq!(last.state(), RankState::Failed);
    assert!(last.detail.contains("timed out"), "{}", last.detail);
    assert!(last.detail.contains("/start_profile"), "{}", last.detail);
}

#[tokio::test]
async fn a_second_start_is_refused_while_a_capture_runs() {
    let mut rig = rig().await;

    rig.coordinator.start_capture(
        "first",
        CaptureSettings::default(),
        rig.storage.path(),
        LEAD,
    );
    rig.coordinator
        .wait_state("first", RankState::Profiling)
        .await;
    rig.coordinator
        .start_capture("second", duration(100), rig.storage.path(), LEAD);
    let refused = rig.coordinator.wait_final("second").await;
    assert_eq!(refused.state(), RankState::Failed);
    assert!(
        refused.detail.contains("busy with first"),
        "{}",
        refused.detail
    );

    rig.coordinator.stop_capture("first");
    let first = rig.coordinator.wait_final("first").await;
    check_stored(rig.storage.path(), &first);
}

#[tokio::test]
async fn a_collect_only_agent_uploads_what_its_host_wrote() {
    let spool = tempfile::tempdir().unwrap();
    let storage = tempfile::tempdir().unwrap();
    let never_called = ReservedPort::new().url();
    let mut coordinator = FakeCoordinator::start().await;
    let config = rankline_agent::AgentConfig {
        mode: ModeChoice::Collect,
        tp_rank: 1,
        ..agent_config(&coordinator.url(), &never_called, spool.path())
    };
    let _agent = RunningAgent::spawn(config);
    let hello = coordinator.wait_hello().await;
    assert!(!hello.identity.unwrap().trigger);

    coordinator.start_capture("multi", duration(200), storage.path(), LEAD);
    let waiting = coordinator.wait_state("multi", RankState::Profiling).await;
    assert!(
        waiting.detail.contains("collect-only"),
        "{}",
        waiting.detail
    );
    // Node 0 triggered the server; every host writes into the same path.
    let output_dir = spool.path().join("captures/multi/unified-0");
    write_jax_files(&output_dir, "otherhost", 1_000);
    write_jax_files(&output_dir, "testhost", 2_000);

    let last = coordinator.wait_final("multi").await;
    let sidecar = check_stored(storage.path(), &last);
    assert_eq!(last.objects[0].key, "multi/multi-TP-1-EP-0.trace.json.gz");
    let ours = output_dir.join("plugins/profile/2026_11_22_21_52_13/testhost.xplane.pb");
    assert_eq!(
        sidecar.file(FileKind::Xplane).unwrap().sha256,
        sha256_of(&ours)
    );
    assert_eq!(sidecar.time_base.unix_ns, 2_000);
    assert!(!sidecar.identity.trigger);
}

#[tokio::test]
async fn a_kineto_tmp_file_is_never_picked_up() {
    let spool = tempfile::tempdir().unwrap();
    let storage = tempfile::tempdir().unwrap();
    let never_called = ReservedPort::new().url();
    let mut coordinator = FakeCoordinator::start().await;
    let config = rankline_agent::AgentConfig {
        mode: ModeChoice::Collect,
        kind: KindChoice::Sglang,
        tp_rank: 1,
        ..agent_config(&coordinator.url(), &never_called, spool.path())
    };
    let _agent = RunningAgent::spawn(config);
    coordinator.wait_hello().await;

    coordinator.start_capture("kin", duration(200), storage.path(), LEAD);
    coordinator.wait_state("kin", RankState::Profiling).await;
    let output_dir = spool.path().join("captures/kin/unified-0");
    let final_name = output_dir.join("1763850000.25-TP-1.trace.json.gz");
    let tmp_name = output_dir.join("1763850000.25-TP-1.trace.json.gz.tmp");
    let kineto = |base: i64| {
        gzip(&format!(
            r#"{{"schemaVersion":1,"traceEvents":[{{"ph":"X","ts":1,"dur":2,"name":"k"}}],"baseTimeNanoseconds":{base}}}"#
        ))
    };
    std::fs::write(&tmp_name, kineto(111)).unwrap();
    // Another rank's finished file must not satisfy this rank.
    std::fs::write(
        output_dir.join("1763850000.25-TP-0.trace.json.gz"),
        kineto(222),
    )
    .unwrap();
    // Many polls pass while only the .tmp exists.
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(&tmp_name, kineto(333)).unwrap();
    std::fs::rename(&tmp_name, &final_name).unwrap();

    let last = coordinator.wait_final("kin").await;
    let sidecar = check_stored(storage.path(), &last);
    assert_eq!(
        last.objects.len(),
        2,
        "trace and sidecar: {:?}",
        last.objects
    );
    assert_eq!(last.objects[0].key, "kin/kin-TP-1-EP-0.trace.json.gz");
    assert_eq!(last.objects[0].sha256, sha256_of(&final_name));
    assert_eq!(
        sidecar.time_base.source,
        TimeBaseSource::KinetoBaseTimeNanoseconds
    );
    assert_eq!(sidecar.time_base.unix_ns, 333);
    assert_eq!(sidecar.identity.server_kind, "sglang");
}

#[tokio::test]
async fn a_shutdown_mid_capture_reports_it_and_leaves_the_server_idle() {
    let mut rig = rig().await;

    rig.coordinator
        .start_capture("cut", CaptureSettings::default(), rig.storage.path(), LEAD);
    rig.coordinator
        .wait_state("cut", RankState::Profiling)
        .await;
    rig.agent.shut_down().await;
    let last = rig.coordinator.wait_final("cut").await;
    assert_eq!(last.state(), RankState::Failed);
    assert!(last.detail.contains("shut down"), "{}", last.detail);
    tokio::time::timeout(WAIT, async {
        while rig.server.calls() != ["start", "stop"] {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the agent stops the profile it started");
}

#[tokio::test]
async fn files_under_another_host_name_fail_the_rank_once_complete_not_at_the_timeout() {
    let spool = tempfile::tempdir().unwrap();
    let storage = tempfile::tempdir().unwrap();
    // The server's machine calls itself "realname"; the agent was told "testhost".
    let server = FakeServer::start("realname").await;
    let mut coordinator = FakeCoordinator::start().await;
    let _agent = RunningAgent::spawn(agent_config(&coordinator.url(), &server.url, spool.path()));
    coordinator.wait_hello().await;

    // A deadline far beyond the test's wait: only an early report passes.
    let settings = CaptureSettings {
        timeout_ms: 600_000,
        ..duration(200)
    };
    coordinator.start_capture("foreign", settings, storage.path(), LEAD);
    let last = coordinator.wait_final("foreign").await;
    assert_eq!(last.state(), RankState::Failed, "{}", last.detail);
    for words in [
        "realname.trace.json.gz",
        "realname.xplane.pb",
        "named after host 'testhost'",
        "--host realname",
    ] {
        assert!(last.detail.contains(words), "{words:?} in {}", last.detail);
    }
    assert!(!last.detail.contains("timed out"), "{}", last.detail);
}

#[tokio::test]
async fn a_second_agent_on_the_same_files_is_refused_at_start() {
    let spool = tempfile::tempdir().unwrap();
    let server = FakeServer::start("testhost").await;
    let other_server = FakeServer::start("testhost").await;
    let mut coordinator = FakeCoordinator::start().await;
    let first = RunningAgent::spawn(agent_config(&coordinator.url(), &server.url, spool.path()));
    coordinator.wait_hello().await;

    // Another server with the same host name and the same spool, another rank.
    let second = rankline_agent::AgentConfig {
        tp_rank: 1,
        ..agent_config(&coordinator.url(), &other_server.url, spool.path())
    };
    let refused = tokio::time::timeout(
        WAIT,
        rankline_agent::Agent::run(second.clone(), std::future::pending()),
    )
    .await
    .expect("refused at start, not left running")
    .expect_err("the files are the first agent's");
    let message = refused.to_string();
    for words in ["testhost/unified-0/TP-0-EP-0", "--spool", "host 'testhost'"] {
        assert!(message.contains(words), "{words:?} in {message}");
    }

    // Once the first agent is gone its files are free.
    first.shut_down().await;
    let _second = RunningAgent::spawn(second);
    let hello = coordinator.wait_hello().await;
    assert_eq!(hello.identity.unwrap().tp_rank, 1);
}
