//! The coordinator end to end in one process: fake agents on real gRPC
//! streams, the Control API, and manifests in a file:// storage.

use crate::support;

use rankline_layout::manifest_key;
use rankline_layout::{RankKey, MANIFEST_FORMAT};
use rankline_proto::{
    capture_event, coordinator_message, CaptureSettings, CaptureStatus, FailRequest,
    ListAgentsRequest, ListCapturesRequest, RankState, Role, StopRequest,
};
use support::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_reaches_every_agent_and_writes_the_manifest() {
    let coordinator = TestCoordinator::start().await;
    let mut agents = vec![
        FakeAgent::join(&coordinator.url, identity("h0", Role::Prefill, 0, 0)).await,
        FakeAgent::join(&coordinator.url, identity("h1", Role::Prefill, 0, 1)).await,
        FakeAgent::join(&coordinator.url, identity("h2", Role::Decode, 0, 0)).await,
    ];
    assert_eq!(agents[0].welcome.heartbeat_interval_ms, 100);
    let mut control = coordinator.control().await;

    let mut events = control
        .capture(request("happy", &[], steps(3)))
        .await
        .expect("capture accepted")
        .into_inner();

    let mut starts = Vec::new();
    for agent in &mut agents {
        starts.push(agent.expect_start().await);
    }
    // One command, one instant, for everyone.
    assert!(starts.iter().all(|s| *s == starts[0]), "{starts:?}");
    assert_eq!(starts[0].profile_id, "happy");
    assert_eq!(starts[0].storage_url, coordinator.storage.url());
    let settings = starts[0].settings.clone().unwrap();
    assert_eq!(settings.num_steps, Some(3));
    assert!(settings.timeout_ms > 0, "agents learn the deadline");

    for agent in &agents {
        agent.run_to_ok("happy").await;
    }
    let (seen, summary) = follow_to_end(&mut events).await;
    match &seen[0].kind {
        Some(capture_event::Kind::Accepted(accepted)) => {
            assert_eq!(accepted.ranks.len(), 3);
            assert_eq!(accepted.start_at_unix_ns, starts[0].start_at_unix_ns);
        }
        other => panic!("first event is the acceptance, got {other:?}"),
    }
    let rank_events = seen
        .iter()
        .filter(|e| matches!(e.kind, Some(capture_event::Kind::Rank(_))))
        .count();
    assert_eq!(
        rank_events,
        3 * 6,
        "every state change of every rank is reported"
    );
    assert_eq!(summary.status(), CaptureStatus::Complete);
    assert_eq!(summary.manifest_key, manifest_key("happy"));

    let manifest = coordinator.manifest("happy").await;
    assert_eq!(manifest.format, MANIFEST_FORMAT);
    assert_eq!(manifest.status, "complete");
    assert_eq!(manifest.start_at_unix_ns, starts[0].start_at_unix_ns);
    assert_eq!(manifest.ranks.len(), 3);
    for agent in &agents {
        let rank = manifest
            .ranks
            .iter()
            .find(|r| r.identity.agent_id == agent.identity.agent_id)
            .expect("every selected rank is in the manifest");
        let key = RankKey::new("happy", &agent.identity.rank_coords());
        assert_eq!(rank.status, "ok");
        assert_eq!(rank.reason, None);
        assert_eq!(rank.objects.trace.as_deref(), Some(key.trace().as_str()));
        assert_eq!(rank.objects.xplane.as_deref(), Some(key.xplane().as_str()));
        assert_eq!(rank.objects.meta.as_deref(), Some(key.sidecar().as_str()));
        assert_eq!(rank.identity.host, agent.identity.host);
        assert_eq!(rank.identity.server_kind, "sglang-jax");
    }

    // The finished capture is listed, can be fetched, and replays.
    let fetched = fetch(&mut control, "happy").await;
    assert_eq!(fetched, summary);
    let listed = control
        .list_captures(ListCapturesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.captures, vec![summary.clone()]);
    let mut replay = watch(&mut control, "happy").await;
    let (replayed, replayed_summary) = follow_to_end(&mut replay).await;
    assert_eq!(
        replayed.len(),
        1 + 3 + 1,
        "acceptance, one event per rank, summary"
    );
    assert_eq!(replayed_summary, summary);

    // Agents are listed with their clocks, free again.
    let listed = control
        .list_agents(ListAgentsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.agents.len(), 3);
    for agent in &listed.agents {
        assert!(agent.connected);
        assert_eq!(agent.active_profile_id, "");
        assert_eq!(agent.clock.map(|c| c.offset_ns), Some(1_500));
    }
    coordinator.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_is_lost_and_the_capture_still_ends() {
    let coordinator = TestCoordinator::start().await;
    let mut steady = FakeAgent::join(&coordinator.url, identity("h0", Role::Unified, 0, 0)).await;
    let mut silent = FakeAgent::join(&coordinator.url, identity("h1", Role::Unified, 0, 1)).await;
    let mut control = coordinator.control().await;
    let mut events = start_capture(&mut control, request("lossy", &[], steps(3))).await;
    steady.expect_start().await;
    silent.expect_start().await;
    silent.update("lossy", RankState::Armed, "").await;
    silent.go_silent();
    steady.run_to_ok("lossy").await;

    let (_, summary) = follow_to_end(&mut events).await;
    assert_eq!(summary.status(), CaptureStatus::Partial);
    let lost = &summary.ranks[1];
    assert_eq!(lost.state(), RankState::Lost);
    assert!(lost.detail.contains("silent in armed"), "{}", lost.detail);

    let manifest = coordinator.manifest("lossy").await;
    assert_eq!(manifest.status, "partial");
    assert_eq!(manifest.ranks[0].status, "ok");
    assert_eq!(manifest.ranks[1].status, "lost");
    assert!(manifest.ranks[1].reason.is_some());

    // The silent agent was disconnected.
    silent.expect_stream_error().await;
    let agents = control
        .list_agents(ListAgentsRequest {})
        .await
        .unwrap()
        .into_inner()
        .agents;
    let listed = agents
        .iter()
        .find(|a| a.identity.as_ref().unwrap().agent_id == silent.identity.agent_id)
        .unwrap();
    assert!(!listed.connected);
    coordinator.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_update_rewrites_the_manifest_with_the_truth() {
    let (coordinator, who, mut agent, mut control) = with_one_agent().await;
    let mut events = start_capture(&mut control, request("late", &[], steps(3))).await;
    agent.expect_start().await;
    agent.update("late", RankState::Uploading, "").await;
    agent.go_silent();
    let (_, summary) = follow_to_end(&mut events).await;
    assert_eq!(summary.status(), CaptureStatus::Failed);
    assert_eq!(coordinator.manifest("late").await.ranks[0].status, "lost");

    // The agent comes back and reports that it finished after all.
    drop(agent);
    let _back =
        FakeAgent::join_with(&coordinator.url, who.clone(), vec![ok_update("late", &who)]).await;
    eventually("the manifest says ok", || async {
        coordinator.manifest("late").await.ranks[0].status == "ok"
    })
    .await;
    let manifest = coordinator.manifest("late").await;
    assert_eq!(manifest.status, "complete");
    let key = RankKey::new("late", &who.rank_coords());
    assert_eq!(manifest.ranks[0].objects.meta, Some(key.sidecar()));
    let summary = fetch(&mut control, "late").await;
    assert_eq!(summary.status(), CaptureStatus::Complete);
    coordinator.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_ids_must_be_valid_and_unused() {
    let (coordinator, _, mut agent, mut control) = with_one_agent().await;

    let invalid = refused(&mut control, request("../escape", &[], steps(1))).await;
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(invalid.message().contains("'/'"), "{}", invalid.message());

    // Already in storage (from an earlier coordinator, say).
    coordinator
        .storage
        .put_bytes(&manifest_key("stored"), b"{}".to_vec())
        .await
        .unwrap();
    let stored = refused(&mut control, request("stored", &[], steps(1))).await;
    assert_eq!(stored.code(), Code::AlreadyExists);
    assert!(
        stored.message().contains("--profile-id"),
        "{}",
        stored.message()
    );

    // Known to this coordinator.
    let mut events = start_capture(&mut control, request("twice", &[], steps(1))).await;
    agent.expect_start().await;
    let again = refused(&mut control, request("twice", &[], steps(1))).await;
    assert_eq!(again.code(), Code::AlreadyExists);

    // A generated id is valid and fresh.
    agent.run_to_ok("twice").await;
    follow_to_end(&mut events).await;
    let mut generated = start_capture(&mut control, request("", &[], steps(1))).await;
    let start = agent.expect_start().await;
    assert!(start.profile_id.starts_with("rl-"), "{}", start.profile_id);
    agent.run_to_ok(&start.profile_id).await;
    let (_, summary) = follow_to_end(&mut generated).await;
    assert_eq!(summary.profile_id, start.profile_id);
    coordinator.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selections_pick_agents_and_say_what_exists_when_nothing_matches() {
    let coordinator = TestCoordinator::start().await;
    let mut control = coordinator.control().await;
    let nobody = refused(&mut control, request("", &[], steps(1))).await;
    assert_eq!(nobody.code(), Code::FailedPrecondition);
    assert!(
        nobody.message().contains("rankline agent"),
        "{}",
        nobody.message()
    );

    let mut prefill = FakeAgent::join(&coordinator.url, identity("h0", Role::Prefill, 0, 0)).await;
    let _other = FakeAgent::join(&coordinator.url, identity("h1", Role::Prefill, 1, 0)).await;

    let unmatched = control
        .capture(request("", &[("role", "decode")], steps(1)))
        .await
        .unwrap_err();
    assert_eq!(unmatched.code(), Code::FailedPrecondition);
    let message = unmatched.message();
    assert!(message.contains("role=decode"), "{message}");
    assert!(message.contains("h0/prefill-0/TP-0-EP-0"), "{message}");
    assert!(message.contains("h1/prefill-1/TP-0-EP-0"), "{message}");

    let bad_key = control
        .capture(request("", &[("colour", "red")], steps(1)))
        .await
        .unwrap_err();
    assert_eq!(bad_key.code(), Code::InvalidArgument);

    // worker=0 OR worker=5, AND host=h0: just the first agent.
    let mut events = control
        .capture(request(
            "picked",
            &[("worker", "0"), ("worker", "5"), ("host", "h0")],
            steps(1),
        ))
        .await
        .unwrap()
        .into_inner();
    prefill.expect_start().await;
    prefill.run_to_ok("picked").await;
    let (_, summary) = follow_to_end(&mut events).await;
    assert_eq!(summary.ranks.len(), 1);
    assert_eq!(summary.status(), CaptureStatus::Complete);
    coordinator.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_in_a_running_capture_cannot_start_another() {
    let (coordinator, _, mut agent, mut control) = with_one_agent().await;
    let mut events = start_capture(
        &mut control,
        request("first", &[], CaptureSettings::default()),
    )
    .await;
    agent.expect_start().await;
    let busy = refused(&mut control, request("second", &[], steps(1))).await;
    assert_eq!(busy.code(), Code::FailedPrecondition);
    assert!(busy.message().contains("first"), "{}", busy.message());
    assert!(
        busy.message().contains("rankline stop first"),
        "{}",
        busy.message()
    );

    agent.run_to_ok("first").await;
    follow_to_end(&mut events).await;
    coordinator.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_is_forwarded_to_every_unfinished_rank() {
    let coordinator = TestCoordinator::start().await;
    let mut agents = vec![
        FakeAgent::join(&coordinator.url, identity("h0", Role::Unified, 0, 0)).await,
        FakeAgent::join(&coordinator.url, identity("h1", Role::Unified, 0, 1)).await,
    ];
    let mut control = coordinator.control().await;
    let mut events = start_capture(
        &mut control,
        request("manual", &[], CaptureSettings::default()),
    )
    .await;
    for agent in &mut agents {
        agent.expect_start().await;
        agent.update("manual", RankState::Profiling, "").await;
    }
    let stopped = control
        .stop(StopRequest {
            profile_id: "manual".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stopped.ranks, 2);
    for agent in &mut agents {
        match agent.next_command().await {
            coordinator_message::Kind::Stop(stop) => assert_eq!(stop.profile_id, "manual"),
            other => panic!("expected a stop, got {other:?}"),
        }
        agent.run_to_ok("manual").await;
    }
    let (_, summary) = follow_to_end(&mut events).await;
    assert_eq!(summary.status(), CaptureStatus::Complete);

    let too_late = control
        .stop(StopRequest {
            profile_id: "manual".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(too_late.code(), Code::FailedPrecondition);
    let unknown = control
        .stop(StopRequest {
            profile_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    coordinator.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_capture_marked_failed_says_so_in_its_manifest() {
    let (coordinator, _, mut agent, mut control) = with_one_agent().await;
    let mut events = start_capture(&mut control, request("wl", &[], steps_within(1, 10_000))).await;
    agent.expect_start().await;
    agent.run_to_ok("wl").await;
    let (_, summary) = follow_to_end(&mut events).await;
    assert_eq!(summary.status(), CaptureStatus::Complete);

    let fail = |profile_id: &str, reason: &str| FailRequest {
        profile_id: profile_id.into(),
        reason: reason.into(),
    };
    let marked = control
        .fail(fail("wl", "workload failed: HTTP 400"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(marked.status(), CaptureStatus::Failed);
    assert_eq!(marked.failure, "workload failed: HTTP 400");
    // Answered once the manifest says so.
    let manifest = coordinator.manifest("wl").await;
    assert_eq!(manifest.status, "failed");
    assert_eq!(
        manifest.reason.as_deref(),
        Some("workload failed: HTTP 400")
    );
    assert_eq!(manifest.ranks[0].status, "ok");
    let actions: Vec<&str> = manifest.audit.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["started", "failed"]);

    let no_reason = control.fail(fail("wl", " ")).await.unwrap_err();
    assert_eq!(no_reason.code(), Code::InvalidArgument);
    let unknown = control.fail(fail("nope", "x")).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    coordinator.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rank_past_its_deadline_fails_and_its_agent_is_told_to_stop() {
    let (coordinator, _, mut agent, mut control) = with_one_agent().await;
    let settings = steps_within(3, 200);
    let mut events = start_capture(&mut control, request("slow", &[], settings)).await;
    agent.expect_start().await;
    agent.update("slow", RankState::Armed, "").await;
    let (_, summary) = follow_to_end(&mut events).await;
    assert_eq!(summary.status(), CaptureStatus::Failed);
    assert_eq!(summary.ranks[0].state(), RankState::Failed);
    assert!(
        summary.ranks[0].detail.starts_with("timed out in armed"),
        "{}",
        summary.ranks[0].detail
    );
    assert!(matches!(
        agent.next_command().await,
        coordinator_message::Kind::Stop(_)
    ));
    let manifest = coordinator.manifest("slow").await;
    assert_eq!(manifest.ranks[0].status, "failed");
    coordinator.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_connection_of_an_agent_id_wins() {
    let coordinator = TestCoordinator::start().await;
    let who = identity("h0", Role::Unified, 0, 0);
    let mut old = FakeAgent::join(&coordinator.url, who.clone()).await;
    let mut new = FakeAgent::join(&coordinator.url, who).await;
    let replaced = old.expect_stream_error().await;
    assert_eq!(replaced.code(), Code::Aborted);

    let mut control = coordinator.control().await;
    let agents = control
        .list_agents(ListAgentsRequest {})
        .await
        .unwrap()
        .into_inner()
        .agents;
    assert_eq!(agents.len(), 1);
    let mut events = start_capture(&mut control, request("newest", &[], steps(1))).await;
    new.expect_start().await;
    new.run_to_ok("newest").await;
    let (_, summary) = follow_to_end(&mut events).await;
    assert_eq!(summary.status(), CaptureStatus::Complete);
    coordinator.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_claiming_one_rank_are_refused() {
    let coordinator = TestCoordinator::start().await;
    let first = identity("h0", Role::Unified, 0, 0);
    let twin = rankline_proto::AgentIdentity {
        agent_id: "twin".into(),
        ..first.clone()
    };
    let _a = FakeAgent::join(&coordinator.url, first).await;
    // The second is refused when it joins, before any capture could pick
    // both.
    let mut b = FakeAgent::join(&coordinator.url, twin).await;
    let clash = b.expect_stream_error().await;
    assert_eq!(clash.code(), Code::AlreadyExists);
    assert!(
        clash
            .message()
            .contains("already taken by the connected agent")
            && clash.message().contains("overwrite"),
        "{}",
        clash.message()
    );
    let mut control = coordinator.control().await;
    let agents = control
        .list_agents(rankline_proto::ListAgentsRequest {})
        .await
        .unwrap()
        .into_inner()
        .agents;
    assert_eq!(agents.len(), 1);
    coordinator.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranks_that_stored_the_same_file_are_never_ok() {
    let coordinator = TestCoordinator::start().await;
    let mut agents = vec![
        FakeAgent::join(&coordinator.url, identity("h", Role::Unified, 0, 0)).await,
        FakeAgent::join(&coordinator.url, identity("h", Role::Unified, 0, 1)).await,
        FakeAgent::join(&coordinator.url, identity("h2", Role::Unified, 0, 2)).await,
    ];
    let mut control = coordinator.control().await;
    let mut events = start_capture(&mut control, request("twins", &[], steps(3))).await;
    for agent in &mut agents {
        agent.expect_start().await;
    }
    // TP-0 and TP-1 took one file (two servers with one host name and one
    // spool): their traces have the same sha256 under different keys.
    let shared_trace = content_hash("the one file both servers wrote");
    for agent in &agents[..2] {
        let mut objects = rank_objects("twins", &agent.identity);
        objects[0].sha256 = shared_trace.clone();
        agent
            .send_update(rank_update("twins", RankState::Ok, "", objects))
            .await;
    }
    agents[2].run_to_ok("twins").await;
    let (_, summary) = follow_to_end(&mut events).await;
    assert_ne!(summary.status(), CaptureStatus::Complete);
    let manifest = coordinator.manifest("twins").await;
    assert_ne!(manifest.status, "complete");
    for rank in &manifest.ranks {
        if rank.identity.coords.tp_rank == 2 {
            assert_eq!(rank.status, "ok");
            continue;
        }
        assert_eq!(rank.status, "failed", "TP-{}", rank.identity.coords.tp_rank);
        let reason = rank.reason.clone().unwrap_or_default();
        for words in ["same file", "--spool"] {
            assert!(reason.contains(words), "{words:?} in {reason}");
        }
    }

    // The agent repeating its `ok` (as hellos do) does not undo the verdict.
    agents[1]
        .send_update(rank_update(
            "twins",
            RankState::Ok,
            "",
            rank_objects("twins", &agents[1].identity),
        ))
        .await;
    let summary = fetch(&mut control, "twins").await;
    let failed = summary
        .ranks
        .iter()
        .filter(|r| r.state() == RankState::Failed)
        .count();
    assert_eq!(failed, 2);
    coordinator.shut_down().await;
}
