//! The durable spool, in-process: uploads retried past the deadline until
//! storage takes them, an agent started again finishing what its
//! predecessor left in the journal, and the retention policy.

use crate::support;

use std::path::Path;
use std::time::Duration;

use rankline_agent::Retention;
use rankline_proto::{CaptureSettings, RankState, RankUpdate};
use support::*;

const LEAD: Duration = Duration::from_millis(300);
const JOURNALS: &str = "agents/testhost_unified-0_TP-0-EP-0/captures";

fn short(duration_ms: u64, timeout_ms: u64) -> CaptureSettings {
    CaptureSettings {
        duration_ms: Some(duration_ms),
        timeout_ms,
        ..CaptureSettings::default()
    }
}

/// A regular file where the capture's folder must go: every store of
/// `profile_id` fails (as with storage down) until it is removed.
fn block_storage(storage: &Path, profile_id: &str) -> std::path::PathBuf {
    let blocker = storage.join(profile_id);
    std::fs::write(&blocker, b"not a folder").unwrap();
    blocker
}

fn journal(spool: &Path, profile_id: &str) -> serde_json::Value {
    let path = spool.join(JOURNALS).join(format!("{profile_id}.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Every object of an `ok` update is in storage with its size and sha256,
/// and equals the file it came from in the spool.
fn assert_stored(storage: &Path, spool: &Path, update: &RankUpdate) {
    assert_eq!(update.state(), RankState::Ok, "{}", update.detail);
    assert_eq!(update.objects.len(), 3, "{:?}", update.objects);
    for object in &update.objects {
        let path = storage.join(&object.key);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), object.size);
        assert_eq!(sha256_of(&path), object.sha256, "{}", object.key);
    }
    let record = journal(spool, &update.profile_id);
    for file in record["files"].as_array().unwrap() {
        assert_eq!(file["uploaded"], true);
        let local = Path::new(file["local_path"].as_str().unwrap());
        assert_eq!(
            file["sha256"].as_str().unwrap(),
            sha256_of(local),
            "the spool file is what was stored"
        );
    }
}

#[tokio::test]
async fn failing_storage_is_retried_past_the_deadline_until_it_takes_the_files() {
    let mut rig = rig().await;

    let blocker = block_storage(rig.storage.path(), "retry");
    rig.coordinator
        .start_capture("retry", short(200, 1_000), rig.storage.path(), LEAD);
    let retrying = loop {
        let update = rig
            .coordinator
            .wait_state("retry", RankState::Uploading)
            .await;
        assert_eq!(update.state(), RankState::Uploading, "{}", update.detail);
        if update.detail.contains("attempts so far") {
            break update;
        }
    };
    assert!(
        retrying.detail.contains("retrying in") && retrying.detail.contains("files stay in"),
        "{}",
        retrying.detail
    );
    // Well past the capture's deadline, the upload is still being tried.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(journal(rig.spool.path(), "retry")["state"], "uploading");

    // The agent takes the next capture meanwhile: the upload does not hold it.
    rig.coordinator
        .start_capture("next", short(200, 0), rig.storage.path(), LEAD);
    let next = rig
        .coordinator
        .wait_state("next", RankState::Profiling)
        .await;
    assert_eq!(next.state(), RankState::Profiling, "{}", next.detail);

    std::fs::remove_file(&blocker).unwrap();
    let finals = rig.coordinator.wait_finals_of(&["retry", "next"]).await;
    assert_stored(rig.storage.path(), rig.spool.path(), &finals["retry"]);
    assert_stored(rig.storage.path(), rig.spool.path(), &finals["next"]);
}

#[tokio::test]
async fn an_agent_started_again_finishes_the_upload_its_predecessor_left() {
    let mut rig = rig().await;

    let blocker = block_storage(rig.storage.path(), "resume");
    rig.coordinator
        .start_capture("resume", short(200, 0), rig.storage.path(), LEAD);
    loop {
        let update = rig
            .coordinator
            .wait_state("resume", RankState::Uploading)
            .await;
        if update.detail.contains("attempts so far") {
            break;
        }
    }
    rig.agent.shut_down().await;
    let interrupted = journal(rig.spool.path(), "resume");
    assert_eq!(interrupted["state"], "uploading");
    assert_eq!(interrupted["files"][0]["uploaded"], false);
    std::fs::remove_file(&blocker).unwrap();

    let _second = RunningAgent::spawn(agent_config(
        &rig.coordinator.url(),
        &rig.server.url,
        rig.spool.path(),
    ));
    let hello = rig.coordinator.wait_hello().await;
    let reported: Vec<_> = hello
        .in_flight
        .iter()
        .map(|u| (u.profile_id.as_str(), u.state()))
        .collect();
    assert!(
        matches!(
            reported[..],
            [("resume", RankState::Uploading | RankState::Ok)]
        ),
        "the first hello tells the coordinator the rank goes on: {reported:?}"
    );
    // The upload may even be done by the time the hello goes out.
    let last = match hello.in_flight.into_iter().next() {
        Some(done) if done.state() == RankState::Ok => done,
        _ => rig.coordinator.wait_final("resume").await,
    };
    assert_stored(rig.storage.path(), rig.spool.path(), &last);
    assert_eq!(
        rig.server.calls(),
        ["start", "stop"],
        "the server is not asked again"
    );
}

/// What kill -9 leaves: the journal as it was in the state the capture had
/// reached. A graceful stop fails the capture itself, so the journal taken
/// while it ran is put back after the agent is gone.
async fn kill_leaving_journal(agent: RunningAgent, spool: &Path, profile_id: &str) {
    let path = spool.join(JOURNALS).join(format!("{profile_id}.json"));
    let running = std::fs::read(&path).unwrap();
    agent.shut_down().await;
    std::fs::write(&path, running).unwrap();
}

#[tokio::test]
async fn an_agent_killed_while_profiling_goes_on_after_a_restart() {
    let mut rig = rig().await;
    rig.coordinator
        .start_capture("cut", CaptureSettings::default(), rig.storage.path(), LEAD);
    rig.coordinator
        .wait_state("cut", RankState::Profiling)
        .await;
    kill_leaving_journal(rig.agent, rig.spool.path(), "cut").await;

    let _second = RunningAgent::spawn(agent_config(
        &rig.coordinator.url(),
        &rig.server.url,
        rig.spool.path(),
    ));
    let hello = rig.coordinator.wait_hello().await;
    let cut = hello
        .in_flight
        .iter()
        .find(|u| u.profile_id == "cut")
        .expect("reported in the hello");
    assert_eq!(cut.state(), RankState::Profiling, "{}", cut.detail);
    assert!(cut.detail.contains("resumed"), "{}", cut.detail);
    rig.coordinator.stop_capture("cut");
    let last = rig.coordinator.wait_final("cut").await;
    assert_stored(rig.storage.path(), rig.spool.path(), &last);
}

#[tokio::test]
async fn an_agent_killed_while_collecting_uploads_the_files_after_a_restart() {
    let mut rig = rig().await;
    // num_steps: the server stops by itself; its files wait for the test.
    let settings = CaptureSettings {
        num_steps: Some(3),
        ..CaptureSettings::default()
    };
    rig.coordinator
        .start_capture("collecting", settings, rig.storage.path(), LEAD);
    let collecting = rig
        .coordinator
        .wait_state("collecting", RankState::Collecting)
        .await;
    assert_eq!(
        collecting.state(),
        RankState::Collecting,
        "{}",
        collecting.detail
    );
    kill_leaving_journal(rig.agent, rig.spool.path(), "collecting").await;
    assert_eq!(
        journal(rig.spool.path(), "collecting")["state"],
        "collecting"
    );
    // The files are complete on disk while no agent runs.
    rig.server.release_files();

    let _second = RunningAgent::spawn(agent_config(
        &rig.coordinator.url(),
        &rig.server.url,
        rig.spool.path(),
    ));
    // Past the first agent's own farewell (`failed`, as it was shut down).
    let hello = rig.coordinator.wait_hello().await;
    let last = match hello
        .in_flight
        .into_iter()
        .find(|u| u.profile_id == "collecting")
    {
        Some(done) if done.state() == RankState::Ok => done,
        Some(resumed) => {
            assert!(!resumed.state().is_final(), "{}", resumed.detail);
            rig.coordinator.wait_final("collecting").await
        }
        None => panic!("the hello reports the capture"),
    };
    assert_stored(rig.storage.path(), rig.spool.path(), &last);
    assert_eq!(
        rig.server.calls(),
        ["start"],
        "the server is not asked again"
    );
}

#[tokio::test]
async fn retention_keeps_the_newest_captures_files_only() {
    let spool = tempfile::tempdir().unwrap();
    let storage = tempfile::tempdir().unwrap();
    let server = FakeServer::start("testhost").await;
    let mut coordinator = FakeCoordinator::start().await;
    let config = rankline_agent::AgentConfig {
        retention: Retention {
            keep_captures: 1,
            keep_bytes: u64::MAX,
        },
        ..agent_config(&coordinator.url(), &server.url, spool.path())
    };
    let _agent = RunningAgent::spawn(config);
    coordinator.wait_hello().await;

    let mut locals = Vec::new();
    for id in ["old", "new"] {
        coordinator.start_capture(id, short(100, 0), storage.path(), LEAD);
        let last = coordinator.wait_final(id).await;
        assert_stored(storage.path(), spool.path(), &last);
        locals.push(spool.path().join("captures").join(id));
    }
    assert!(!locals[0].exists(), "the older capture's files are gone");
    assert!(!spool.path().join(JOURNALS).join("old.json").exists());
    assert!(locals[1].is_dir(), "the newest capture keeps its files");
    assert!(
        storage.path().join("old/old-TP-0-EP-0.xplane.pb").is_file(),
        "storage keeps every capture"
    );
}
