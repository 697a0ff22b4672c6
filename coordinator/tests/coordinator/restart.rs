//! Captures survive a coordinator restart: the coordinator is stopped and
//! served again in-process on the same storage and address, and the fake
//! agents reconnect as real ones do (with their in-flight captures).

use crate::support;

use rankline_layout::manifest_key;
use rankline_layout::RankKey;
use rankline_proto::{
    capture_event, coordinator_message, CaptureSettings, CaptureStatus, ListCapturesRequest,
    RankState, Role,
};
use support::*;
use tonic::Code;

/// A capture's rank states as its record has them.
async fn recorded_states(coordinator: &TestCoordinator, profile_id: &str) -> Vec<String> {
    let Some(record) = coordinator.record(profile_id).await else {
        return Vec::new();
    };
    record["ranks"]
        .as_array()
        .expect("ranks")
        .iter()
        .map(|rank| rank["state"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_started_before_a_restart_completes_after_it() {
    let coordinator = TestCoordinator::start().await;
    let first = identity("h0", Role::Prefill, 0, 0);
    let second = identity("h1", Role::Prefill, 0, 1);
    let mut agents = vec![
        FakeAgent::join(&coordinator.url, first.clone()).await,
        FakeAgent::join(&coordinator.url, second.clone()).await,
    ];
    let mut control = coordinator.control().await;
    let mut events = start_capture(&mut control, request("resumed", &[], steps(3))).await;
    let start = agents[0].expect_start().await;
    agents[1].expect_start().await;
    for agent in &agents {
        agent.update("resumed", RankState::Profiling, "").await;
    }
    // The record follows the capture while it runs, not only at shutdown.
    eventually("the record says both ranks profile", || async {
        recorded_states(&coordinator, "resumed").await == ["profiling", "profiling"]
    })
    .await;
    let before = fetch(&mut control, "resumed").await;

    let coordinator = coordinator.restart().await;
    assert_eq!(coordinator.restored.running, ["resumed"]);
    assert!(coordinator.restored.problems.is_empty());
    // The watcher of the old coordinator was told it went away.
    let gone = loop {
        match tokio::time::timeout(PATIENCE, events.message())
            .await
            .expect("the old watcher's stream ends")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the old watcher ends with an error"),
            Err(status) => break status,
        }
    };
    assert_eq!(gone.code(), Code::Unavailable);
    drop(agents);

    let mut control = coordinator.control().await;
    let restored = fetch(&mut control, "resumed").await;
    assert_eq!(restored, before, "the capture comes back as it was");

    // A person re-attaches (`rankline capture show resumed --follow`).
    let mut watch = watch(&mut control, "resumed").await;

    // One agent is still profiling; the other finished during the outage.
    let still_running = FakeAgent::join_with(
        &coordinator.url,
        first.clone(),
        vec![rank_update("resumed", RankState::Profiling, "", Vec::new())],
    )
    .await;
    let _finished = FakeAgent::join_with(
        &coordinator.url,
        second.clone(),
        vec![ok_update("resumed", &second)],
    )
    .await;
    for state in [
        RankState::Stopping,
        RankState::Collecting,
        RankState::Uploading,
    ] {
        still_running.update("resumed", state, "").await;
    }
    still_running
        .send_update(ok_update("resumed", &first))
        .await;

    let (seen, summary) = follow_to_end(&mut watch).await;
    match &seen[0].kind {
        Some(capture_event::Kind::Accepted(accepted)) => {
            assert_eq!(accepted.start_at_unix_ns, start.start_at_unix_ns);
            assert_eq!(accepted.ranks.len(), 2);
        }
        other => panic!("a watcher starts with the acceptance, got {other:?}"),
    }
    assert_eq!(summary.status(), CaptureStatus::Complete);
    assert_eq!(summary.created_unix_ns, before.created_unix_ns);

    let manifest = coordinator.manifest("resumed").await;
    assert_eq!(manifest.status, "complete");
    assert_eq!(manifest.start_at_unix_ns, start.start_at_unix_ns);
    assert_eq!(manifest.created_unix_ns, before.created_unix_ns);
    let settings = manifest
        .settings
        .clone()
        .expect("the manifest records the settings");
    assert_eq!(settings.num_steps, Some(3));
    assert_eq!(
        settings.timeout_ms,
        Some(start.settings.unwrap().timeout_ms),
        "the deadline the agents were given is kept"
    );
    for (rank, who) in manifest.ranks.iter().zip([&first, &second]) {
        let key = RankKey::new("resumed", &who.rank_coords());
        assert_eq!(rank.identity.agent_id, who.agent_id);
        assert_eq!(rank.status, "ok");
        assert_eq!(rank.objects.trace, Some(key.trace()));
        assert_eq!(rank.objects.meta, Some(key.sidecar()));
    }
    eventually("the record says finished", || async {
        coordinator
            .record("resumed")
            .await
            .is_some_and(|record| record["phase"] == "finished")
    })
    .await;
    coordinator.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rank_whose_agent_never_comes_back_ends_lost() {
    let coordinator = TestCoordinator::start().await;
    let back = identity("h0", Role::Unified, 0, 0);
    let mut returning = FakeAgent::join(&coordinator.url, back.clone()).await;
    let mut vanishing =
        FakeAgent::join(&coordinator.url, identity("h1", Role::Unified, 0, 1)).await;
    let mut control = coordinator.control().await;
    let _events = start_capture(&mut control, request("halfway", &[], steps(3))).await;
    returning.expect_start().await;
    vanishing.expect_start().await;
    returning.update("halfway", RankState::Profiling, "").await;
    vanishing.update("halfway", RankState::Armed, "").await;
    eventually("the record has both updates", || async {
        recorded_states(&coordinator, "halfway").await == ["profiling", "armed"]
    })
    .await;

    let coordinator = coordinator.restart().await;
    drop((returning, vanishing));
    let mut control = coordinator.control().await;
    let mut watch = watch(&mut control, "halfway").await;
    let returning = FakeAgent::join_with(
        &coordinator.url,
        back.clone(),
        vec![rank_update("halfway", RankState::Profiling, "", Vec::new())],
    )
    .await;
    returning.run_to_ok("halfway").await;

    let (_, summary) = follow_to_end(&mut watch).await;
    assert_eq!(summary.status(), CaptureStatus::Partial);
    let lost = &summary.ranks[1];
    assert_eq!(lost.state(), RankState::Lost);
    assert!(
        lost.detail.contains("coordinator restart") && lost.detail.contains("armed"),
        "{}",
        lost.detail
    );
    let manifest = coordinator.manifest("halfway").await;
    assert_eq!(manifest.status, "partial");
    assert_eq!(manifest.ranks[0].status, "ok");
    assert_eq!(manifest.ranks[1].status, "lost");
    assert_eq!(
        manifest.ranks[1].reason.as_deref(),
        Some(lost.detail.as_str())
    );
    coordinator.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_back_without_the_capture_loses_its_rank_at_once() {
    let (coordinator, forgetful, mut agent, mut control) = with_one_agent().await;
    let _events = start_capture(
        &mut control,
        request("forgotten", &[], CaptureSettings::default()),
    )
    .await;
    agent.expect_start().await;

    let coordinator = coordinator.restart().await;
    drop(agent);
    let mut control = coordinator.control().await;
    let mut watch = watch(&mut control, "forgotten").await;
    // Its hello does not list the capture: it never got the start (or forgot it).
    let _back = FakeAgent::join(&coordinator.url, forgetful).await;
    let (_, summary) = follow_to_end(&mut watch).await;
    assert_eq!(summary.status(), CaptureStatus::Failed);
    assert_eq!(summary.ranks[0].state(), RankState::Lost);
    assert!(
        summary.ranks[0]
            .detail
            .contains("reconnected without this capture"),
        "{}",
        summary.ranks[0].detail
    );
    assert_eq!(
        coordinator.manifest("forgotten").await.ranks[0].status,
        "lost"
    );
    coordinator.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_still_apply_after_a_restart() {
    let (coordinator, who, mut agent, mut control) = with_one_agent().await;
    let settings = steps_within(3, 300);
    let _events = start_capture(&mut control, request("overdue", &[], settings)).await;
    agent.expect_start().await;
    agent.update("overdue", RankState::Armed, "").await;

    let coordinator = coordinator.restart().await;
    drop(agent);
    let mut control = coordinator.control().await;
    let mut watch = watch(&mut control, "overdue").await;
    let mut agent = FakeAgent::join_with(
        &coordinator.url,
        who,
        vec![rank_update("overdue", RankState::Armed, "", Vec::new())],
    )
    .await;
    let (_, summary) = follow_to_end(&mut watch).await;
    assert_eq!(summary.ranks[0].state(), RankState::Failed);
    assert!(
        summary.ranks[0].detail.starts_with("timed out in armed"),
        "{}",
        summary.ranks[0].detail
    );
    // The reconnected agent is told to give up too.
    assert!(matches!(
        agent.next_command().await,
        coordinator_message::Kind::Stop(_)
    ));
    assert_eq!(
        coordinator.manifest("overdue").await.ranks[0].status,
        "failed"
    );
    coordinator.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_captures_are_listed_after_a_restart_and_their_ids_stay_taken() {
    let (coordinator, _, mut agent, mut control) = with_one_agent().await;
    let mut events = start_capture(&mut control, request("done", &[], steps(1))).await;
    agent.expect_start().await;
    agent.run_to_ok("done").await;
    let (_, finished) = follow_to_end(&mut events).await;
    assert_eq!(finished.manifest_key, manifest_key("done"));

    let coordinator = coordinator.restart().await;
    assert_eq!(coordinator.restored.finished, 1);
    assert!(coordinator.restored.running.is_empty());
    let mut control = coordinator.control().await;
    let listed = control
        .list_captures(ListCapturesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.captures, vec![finished.clone()]);
    let fetched = fetch(&mut control, "done").await;
    assert_eq!(fetched, finished, "sizes and checksums included");
    let mut replay = watch(&mut control, "done").await;
    let (_, replayed) = follow_to_end(&mut replay).await;
    assert_eq!(replayed, finished);

    let _agent = FakeAgent::join(&coordinator.url, identity("h0", Role::Unified, 0, 0)).await;
    let again = refused(&mut control, request("done", &[], steps(1))).await;
    assert_eq!(again.code(), Code::AlreadyExists);
    coordinator.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_record_is_set_aside_and_the_coordinator_still_starts() {
    let (coordinator, _, mut agent, mut control) = with_one_agent().await;
    let mut events = start_capture(&mut control, request("intact", &[], steps(1))).await;
    agent.expect_start().await;
    agent.run_to_ok("intact").await;
    follow_to_end(&mut events).await;
    let garbage = b"{\"format\": \"rankline.coordinator.capture/v1\", \"profile_id\": ".to_vec();
    coordinator
        .storage
        .put_bytes(&format!("{RECORDS}/broken.json"), garbage.clone())
        .await
        .unwrap();

    let coordinator = coordinator.restart().await;
    assert_eq!(coordinator.restored.finished, 1, "the good record is used");
    let [problem] = coordinator.restored.problems.as_slice() else {
        panic!("one warning: {:?}", coordinator.restored.problems);
    };
    assert!(problem.contains("broken.json is unreadable"), "{problem}");
    assert!(
        problem.contains("starts without capture broken"),
        "{problem}"
    );
    assert!(problem.contains("set-aside/broken.json."), "{problem}");

    // Kept aside byte for byte, a note in its place.
    let aside = coordinator
        .storage
        .list(".rankline-coordinator/set-aside/")
        .await
        .unwrap();
    assert_eq!(aside.len(), 1);
    let copy = coordinator.storage.get_bytes(&aside[0].key).await.unwrap();
    assert_eq!(copy.as_ref(), garbage.as_slice());
    let note = coordinator.record("broken").await.expect("a note");
    assert_eq!(note["set_aside_as"], aside[0].key.as_str());

    let mut control = coordinator.control().await;
    let listed = control
        .list_captures(ListCapturesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.captures.len(), 1);
    assert_eq!(listed.captures[0].profile_id, "intact");
    let _agent = FakeAgent::join(&coordinator.url, identity("h0", Role::Unified, 0, 0)).await;
    let taken = refused(&mut control, request("broken", &[], steps(1))).await;
    assert_eq!(taken.code(), Code::AlreadyExists, "{}", taken.message());

    // The next start neither warns again nor copies again.
    let coordinator = coordinator.restart().await;
    assert!(coordinator.restored.problems.is_empty());
    let aside_again = coordinator
        .storage
        .list(".rankline-coordinator/set-aside/")
        .await
        .unwrap();
    assert_eq!(aside_again, aside);
    coordinator.shut_down().await;
}
