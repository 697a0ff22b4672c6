//! Test support: an in-process coordinator on a loopback port, fake agents
//! that a test scripts message by message, and helpers to follow captures.

// Each test binary uses its own part of this.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use rankline_coordinator::{Coordinator, CoordinatorConfig, RestoreReport};
use rankline_layout::manifest_key;
use rankline_layout::{Manifest, RankKey};
use rankline_proto::agent_link_client::AgentLinkClient;
use rankline_proto::{
    agent_message, capture_event, coordinator_message, unix_now_ns, AgentHello, AgentIdentity,
    AgentMessage, CaptureEvent, CaptureRequest, CaptureSettings, CaptureSummary, ClockEstimate,
    CoordinatorMessage, GetCaptureRequest, Heartbeat, RankState, RankUpdate, Role, Selector,
    ServerKind, StartCapture, StoredObject, WatchRequest, Welcome,
};
use rankline_storage::Storage;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// A generous bound so a broken coordinator fails a test instead of hanging
/// it; never a timing assertion.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Where a test coordinator keeps its capture records (the default: inside
/// the capture storage).
pub const RECORDS: &str = ".rankline-coordinator/captures";

/// A coordinator serving on 127.0.0.1:<free port> with file:// storage in a
/// temp dir.
pub struct TestCoordinator {
    pub url: String,
    pub storage: Storage,
    /// What this coordinator restored when it started.
    pub restored: RestoreReport,
    address: SocketAddr,
    stop_signal: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), rankline_coordinator::CoordinatorError>>>,
    dir: tempfile::TempDir,
}

impl TestCoordinator {
    /// Heartbeats every 100 ms; silent for 1 s means lost, also right after
    /// a restart (no extra grace).
    pub async fn start() -> TestCoordinator {
        let dir = tempfile::tempdir().expect("temp dir");
        TestCoordinator::serve_in(dir, "127.0.0.1:0".parse().expect("address")).await
    }

    async fn serve_in(dir: tempfile::TempDir, address: SocketAddr) -> TestCoordinator {
        let storage_url = format!("file://{}", dir.path().display());
        let mut config = CoordinatorConfig::new(storage_url.clone());
        config.heartbeat_interval = Duration::from_millis(100);
        config.lost_after_intervals = 10;
        config.restart_grace = Duration::ZERO;
        let mut coordinator = Coordinator::new(config).expect("coordinator");
        let restored = coordinator.restore().await.expect("restore");
        let listener = tokio::net::TcpListener::bind(address).await.expect("bind");
        let address = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(coordinator.serve(listener, async {
            let _ = stopped.await;
        }));
        TestCoordinator {
            url: format!("http://{address}"),
            storage: Storage::open(&storage_url).expect("storage"),
            restored,
            address,
            stop_signal: Some(stop),
            task: Some(task),
            dir,
        }
    }

    /// Stops this coordinator and starts a new one on the same storage and
    /// address, as a restarted process would.
    pub async fn restart(mut self) -> TestCoordinator {
        self.stop().await;
        TestCoordinator::serve_in(self.dir, self.address).await
    }

    /// A capture's record as stored, once it is written.
    pub async fn record(&self, profile_id: &str) -> Option<serde_json::Value> {
        let bytes = self
            .storage
            .get_bytes(&format!("{RECORDS}/{profile_id}.json"))
            .await
            .ok()?;
        Some(serde_json::from_slice(&bytes).expect("record JSON"))
    }

    pub async fn control(&self) -> rankline_client::Client {
        rankline_client::connect(&self.url)
            .await
            .expect("connect to coordinator")
    }

    /// Stops the coordinator and checks it ends cleanly.
    pub async fn shut_down(mut self) {
        self.stop().await;
    }

    async fn stop(&mut self) {
        let _ = self.stop_signal.take().expect("running").send(());
        let task = self.task.take().expect("running");
        tokio::time::timeout(PATIENCE, task)
            .await
            .expect("coordinator ends after shutdown")
            .expect("coordinator task")
            .expect("coordinator serve");
    }

    pub async fn manifest(&self, profile_id: &str) -> Manifest {
        let bytes = self
            .storage
            .get_bytes(&manifest_key(profile_id))
            .await
            .expect("manifest in storage");
        serde_json::from_slice(&bytes).expect("manifest JSON")
    }
}

pub fn identity(host: &str, role: Role, worker: u32, tp: u32) -> AgentIdentity {
    let mut identity = AgentIdentity {
        agent_id: format!("{host}/{}-{worker}/TP-{tp}-EP-0", role.word()),
        host: host.into(),
        worker,
        tp_rank: tp,
        server_url: "http://127.0.0.1:30000".into(),
        trigger: true,
        agent_version: "test".into(),
        ..Default::default()
    };
    identity.set_role(role);
    identity.set_server_kind(ServerKind::SglangJax);
    identity
}

/// An agent whose every message the test decides, except heartbeats, which
/// a background task sends until the agent "goes silent".
pub struct FakeAgent {
    pub identity: AgentIdentity,
    pub welcome: Welcome,
    outbound: mpsc::Sender<AgentMessage>,
    commands: Streaming<CoordinatorMessage>,
    heartbeats: JoinHandle<()>,
}

impl FakeAgent {
    pub async fn join(url: &str, identity: AgentIdentity) -> FakeAgent {
        FakeAgent::join_with(url, identity, Vec::new()).await
    }

    /// Joins with in-flight updates in the hello (a reconnect).
    pub async fn join_with(
        url: &str,
        identity: AgentIdentity,
        in_flight: Vec<RankUpdate>,
    ) -> FakeAgent {
        let mut link = AgentLinkClient::connect(url.to_string())
            .await
            .expect("agent connects");
        let (outbound, rx) = mpsc::channel(64);
        outbound
            .send(message(agent_message::Kind::Hello(AgentHello {
                identity: Some(identity.clone()),
                in_flight,
            })))
            .await
            .expect("queue hello");
        let mut commands = link
            .join(ReceiverStream::new(rx))
            .await
            .expect("join")
            .into_inner();
        let welcome = match next(&mut commands).await {
            coordinator_message::Kind::Welcome(welcome) => welcome,
            other => panic!("expected a welcome first, got {other:?}"),
        };
        let heartbeats = tokio::spawn(send_heartbeats(
            outbound.clone(),
            Duration::from_millis(u64::from(welcome.heartbeat_interval_ms)),
        ));
        FakeAgent {
            identity,
            welcome,
            outbound,
            commands,
            heartbeats,
        }
    }

    /// Stops heartbeats but keeps the stream open: a hung agent.
    pub fn go_silent(&self) {
        self.heartbeats.abort();
    }

    /// The next command from the coordinator.
    pub async fn next_command(&mut self) -> coordinator_message::Kind {
        next(&mut self.commands).await
    }

    pub async fn expect_start(&mut self) -> StartCapture {
        match self.next_command().await {
            coordinator_message::Kind::Start(start) => start,
            other => panic!("expected a start, got {other:?}"),
        }
    }

    /// The error the coordinator ends this agent's stream with.
    pub async fn expect_stream_error(&mut self) -> tonic::Status {
        loop {
            match tokio::time::timeout(PATIENCE, self.commands.message())
                .await
                .expect("stream ends")
            {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("stream ended without an error"),
                Err(status) => return status,
            }
        }
    }

    pub async fn update(&self, profile_id: &str, state: RankState, detail: &str) {
        self.send_update(rank_update(profile_id, state, detail, Vec::new()))
            .await;
    }

    pub async fn send_update(&self, update: RankUpdate) {
        self.outbound
            .send(message(agent_message::Kind::Update(update)))
            .await
            .expect("send update");
    }

    /// Walks a rank through every state to `ok`, reporting its objects.
    pub async fn run_to_ok(&self, profile_id: &str) {
        for state in [
            RankState::Armed,
            RankState::Profiling,
            RankState::Stopping,
            RankState::Collecting,
            RankState::Uploading,
        ] {
            self.update(profile_id, state, "").await;
        }
        self.send_update(ok_update(profile_id, &self.identity))
            .await;
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.heartbeats.abort();
    }
}

/// The objects a real agent reports for a rank: trace, xplane, sidecar.
pub fn rank_objects(profile_id: &str, identity: &AgentIdentity) -> Vec<StoredObject> {
    let key = RankKey::new(profile_id, &identity.rank_coords());
    [key.trace(), key.xplane(), key.sidecar()]
        .into_iter()
        .map(|key| StoredObject {
            sha256: content_hash(&key),
            key,
            size: 1000,
        })
        .collect()
}

/// A sha256-shaped digest that differs for every object, as real files' do.
pub fn content_hash(key: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    format!("{:016x}", hasher.finish()).repeat(4)
}

pub fn ok_update(profile_id: &str, identity: &AgentIdentity) -> RankUpdate {
    rank_update(
        profile_id,
        RankState::Ok,
        "",
        rank_objects(profile_id, identity),
    )
}

pub fn rank_update(
    profile_id: &str,
    state: RankState,
    detail: &str,
    objects: Vec<StoredObject>,
) -> RankUpdate {
    let mut update = RankUpdate {
        profile_id: profile_id.into(),
        detail: detail.into(),
        objects,
        at_unix_ns: unix_now_ns(),
        ..Default::default()
    };
    update.set_state(state);
    update
}

fn message(kind: agent_message::Kind) -> AgentMessage {
    AgentMessage { kind: Some(kind) }
}

async fn next(commands: &mut Streaming<CoordinatorMessage>) -> coordinator_message::Kind {
    tokio::time::timeout(PATIENCE, commands.message())
        .await
        .expect("a command arrives")
        .expect("command stream healthy")
        .expect("command stream open")
        .kind
        .expect("command has a kind")
}

async fn send_heartbeats(outbound: mpsc::Sender<AgentMessage>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        let heartbeat = Heartbeat {
            sent_at_unix_ns: unix_now_ns(),
            clock: Some(ClockEstimate {
                offset_ns: 1_500,
                error_bound_ns: 40,
                round_trip_ns: 80,
                samples: 8,
                ..Default::default()
            }),
            active_profile_id: String::new(),
        };
        if outbound
            .send(message(agent_message::Kind::Heartbeat(heartbeat)))
            .await
            .is_err()
        {
            return;
        }
    }
}

pub fn request(
    profile_id: &str,
    select: &[(&str, &str)],
    settings: CaptureSettings,
) -> CaptureRequest {
    CaptureRequest {
        profile_id: profile_id.into(),
        select: select
            .iter()
            .map(|(key, value)| Selector {
                key: key.to_string(),
                value: value.to_string(),
            })
            .collect(),
        settings: Some(settings),
        lead_time_ms: 0,
    }
}

/// A coordinator with one unified agent (`h0`, TP-0) joined, and a
/// Control client: the start of most tests.
pub async fn with_one_agent() -> (
    TestCoordinator,
    AgentIdentity,
    FakeAgent,
    rankline_client::Client,
) {
    let coordinator = TestCoordinator::start().await;
    let who = identity("h0", Role::Unified, 0, 0);
    let agent = FakeAgent::join(&coordinator.url, who.clone()).await;
    let control = coordinator.control().await;
    (coordinator, who, agent, control)
}

/// Starts a capture the coordinator must accept; its event stream.
pub async fn start_capture(
    control: &mut rankline_client::Client,
    request: CaptureRequest,
) -> Streaming<CaptureEvent> {
    control.capture(request).await.unwrap().into_inner()
}

/// Asks for a capture the coordinator must refuse; its refusal.
pub async fn refused(
    control: &mut rankline_client::Client,
    request: CaptureRequest,
) -> tonic::Status {
    control.capture(request).await.unwrap_err()
}

/// `num_steps`, with a deadline `timeout_ms` after the start.
pub fn steps_within(num_steps: u32, timeout_ms: u64) -> CaptureSettings {
    CaptureSettings {
        timeout_ms,
        ..steps(num_steps)
    }
}

pub fn steps(num_steps: u32) -> CaptureSettings {
    CaptureSettings {
        num_steps: Some(num_steps),
        ..Default::default()
    }
}

/// Every event of a capture stream up to its summary.
pub async fn follow_to_end(
    events: &mut Streaming<CaptureEvent>,
) -> (Vec<CaptureEvent>, CaptureSummary) {
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(PATIENCE, events.message())
            .await
            .expect("the capture ends")
            .expect("event stream healthy")
            .expect("event stream ends with a summary");
        if let Some(capture_event::Kind::Finished(summary)) = &event.kind {
            let summary = summary.clone();
            seen.push(event);
            return (seen, summary);
        }
        seen.push(event);
    }
}

/// Polls until `check` holds (bounded by [`PATIENCE`]).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < give_up,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GetCapture` for a capture that must exist.
pub async fn fetch(control: &mut rankline_client::Client, profile_id: &str) -> CaptureSummary {
    control
        .get_capture(GetCaptureRequest {
            profile_id: profile_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// `Watch` on a capture that must exist.
pub async fn watch(
    control: &mut rankline_client::Client,
    profile_id: &str,
) -> Streaming<CaptureEvent> {
    control
        .watch(WatchRequest {
            profile_id: profile_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
}
