//! Test doubles for driving an agent in-process: a coordinator (a tiny
//! tonic `AgentLink` server) and a scriptable profiling server (axum) whose
//! faults can be switched on one at a time, plus helpers to run an agent.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use rankline_agent::{AgentConfig, RankChoice, Timing};
use rankline_proto::agent_link_server::{AgentLink, AgentLinkServer};
use rankline_proto::{
    agent_message, coordinator_message, unix_now_ns, AgentHello, AgentMessage, CaptureSettings,
    ClockProbeRequest, ClockProbeResponse, CoordinatorMessage, RankState, RankUpdate, StartCapture,
    StopCapture, Welcome,
};
use rankline_xplane::messages::x_stat::Value as StatValue;
use rankline_xplane::{XPlane, XSpace, XStat, XStatMetadata};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

/// Longest any test waits for one expected message.
pub const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Coordinator
// ---------------------------------------------------------------------------

type CommandSender = mpsc::UnboundedSender<Result<CoordinatorMessage, Status>>;

#[derive(Debug)]
struct LinkState {
    /// (agent id from the stream's hello, message).
    received: mpsc::UnboundedSender<(String, AgentMessage)>,
    /// One command stream per joined agent; commands go to all of them.
    commands: Mutex<Vec<CommandSender>>,
    refuse: AtomicBool,
    joins: AtomicUsize,
    /// The coordinator's clock runs this far ahead of the real one.
    clock_ahead_ns: i64,
}

#[derive(Clone, Debug)]
struct LinkService(Arc<LinkState>);

#[tonic::async_trait]
impl AgentLink for LinkService {
    type JoinStream = Pin<Box<dyn Stream<Item = Result<CoordinatorMessage, Status>> + Send>>;

    async fn join(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::JoinStream>, Status> {
        if self.0.refuse.load(Ordering::SeqCst) {
            return Err(Status::unavailable("refusing joins for this test"));
        }
        self.0.joins.fetch_add(1, Ordering::SeqCst);
        let mut inbound = request.into_inner();
        let (commands, outgoing) = mpsc::unbounded_channel();
        let _ = commands.send(Ok(coordinator(coordinator_message::Kind::Welcome(
            Welcome {
                coordinator_id: "test-coordinator".into(),
                heartbeat_interval_ms: 200,
            },
        ))));
        self.0.commands.lock().unwrap().push(commands);
        let received = self.0.received.clone();
        tokio::spawn(async move {
            let mut agent_id = String::new();
            while let Ok(Some(message)) = inbound.message().await {
                if let Some(agent_message::Kind::Hello(hello)) = &message.kind {
                    agent_id = hello
                        .identity
                        .as_ref()
                        .map(|i| i.agent_id.clone())
                        .unwrap_or_default();
                }
                if received.send((agent_id.clone(), message)).is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(
            outgoing,
        ))))
    }

    async fn clock_probe(
        &self,
        request: Request<ClockProbeRequest>,
    ) -> Result<Response<ClockProbeResponse>, Status> {
        let t2 = unix_now_ns() + self.0.clock_ahead_ns;
        Ok(Response::new(ClockProbeResponse {
            t1_unix_ns: request.into_inner().t1_unix_ns,
            t2_unix_ns: t2,
            t3_unix_ns: unix_now_ns() + self.0.clock_ahead_ns,
        }))
    }
}

/// Heartbeats keep coming, so a wait for one kind of message needs its own limit.
async fn within_wait<T>(wait: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, wait)
        .await
        .expect("the expected message did not come in time")
}

fn coordinator(kind: coordinator_message::Kind) -> CoordinatorMessage {
    CoordinatorMessage { kind: Some(kind) }
}

/// An in-test coordinator: records what agents send, sends them commands.
pub struct FakeCoordinator {
    pub addr: SocketAddr,
    state: Arc<LinkState>,
    received: mpsc::UnboundedReceiver<(String, AgentMessage)>,
    stop_server: Option<oneshot::Sender<()>>,
}

impl FakeCoordinator {
    pub async fn start() -> FakeCoordinator {
        Self::start_on(ReservedPort::new(), 0).await
    }

    /// Listens on a reserved port (so a test can start it late); its clock
    /// runs `clock_ahead_ns` ahead of the real one.
    pub async fn start_on(port: ReservedPort, clock_ahead_ns: i64) -> FakeCoordinator {
        let listener = port.listen();
        let addr = listener.local_addr().unwrap();
        let (received_tx, received) = mpsc::unbounded_channel();
        let state = Arc::new(LinkState {
            received: received_tx,
            commands: Mutex::new(Vec::new()),
            refuse: AtomicBool::new(false),
            joins: AtomicUsize::new(0),
            clock_ahead_ns,
        });
        let (stop_server, stopped) = oneshot::channel::<()>();
        let service = AgentLinkServer::new(LinkService(Arc::clone(&state)));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                }),
        );
        FakeCoordinator {
            addr,
            state,
            received,
            stop_server: Some(stop_server),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn joins(&self) -> usize {
        self.state.joins.load(Ordering::SeqCst)
    }

    /// Ends every agent's stream from this side and refuses (or accepts
    /// again) new joins.
    pub fn drop_link(&self, refuse_new_joins: bool) {
        self.state.refuse.store(refuse_new_joins, Ordering::SeqCst);
        self.state.commands.lock().unwrap().clear();
    }

    pub fn accept_joins(&self) {
        self.state.refuse.store(false, Ordering::SeqCst);
    }

    /// Sends a command to every agent whose stream is open.
    pub fn send(&self, kind: coordinator_message::Kind) {
        let mut commands = self.state.commands.lock().unwrap();
        commands.retain(|sender| sender.send(Ok(coordinator(kind.clone()))).is_ok());
        assert!(!commands.is_empty(), "no agent is joined");
    }

    pub fn start_capture(
        &self,
        profile_id: &str,
        settings: CaptureSettings,
        storage: &Path,
        lead: Duration,
    ) {
        self.send(coordinator_message::Kind::Start(StartCapture {
            profile_id: profile_id.into(),
            start_at_unix_ns: unix_now_ns() + self.state.clock_ahead_ns + lead.as_nanos() as i64,
            settings: Some(settings),
            storage_url: format!("file://{}", storage.display()),
        }));
    }

    pub fn stop_capture(&self, profile_id: &str) {
        self.send(coordinator_message::Kind::Stop(StopCapture {
            profile_id: profile_id.into(),
        }));
    }

    /// The next message of any agent, with the agent's id.
    pub async fn next_message_from(&mut self) -> (String, AgentMessage) {
        tokio::time::timeout(WAIT, self.received.recv())
            .await
            .expect("no message from the agent in time")
            .expect("coordinator channel closed")
    }

    pub async fn next_message(&mut self) -> AgentMessage {
        self.next_message_from().await.1
    }

    /// The final update of `profile_id` from each of `agents` agents, by agent id.
    pub async fn wait_finals(
        &mut self,
        profile_id: &str,
        agents: usize,
    ) -> BTreeMap<String, RankUpdate> {
        within_wait(async {
            let mut finals = BTreeMap::new();
            while finals.len() < agents {
                let (agent, message) = self.next_message_from().await;
                if let Some(agent_message::Kind::Update(update)) = message.kind {
                    if update.profile_id == profile_id && update.state().is_final() {
                        finals.insert(agent, update);
                    }
                }
            }
            finals
        })
        .await
    }

    /// The final update of each of `profile_ids` (from one agent), by profile id.
    pub async fn wait_finals_of(&mut self, profile_ids: &[&str]) -> BTreeMap<String, RankUpdate> {
        within_wait(async {
            let mut finals = BTreeMap::new();
            while finals.len() < profile_ids.len() {
                if let Some(agent_message::Kind::Update(update)) = self.next_message().await.kind {
                    if profile_ids.contains(&update.profile_id.as_str())
                        && update.state().is_final()
                    {
                        finals.insert(update.profile_id.clone(), update);
                    }
                }
            }
            finals
        })
        .await
    }

    pub async fn wait_hello(&mut self) -> AgentHello {
        within_wait(async {
            loop {
                if let Some(agent_message::Kind::Hello(hello)) = self.next_message().await.kind {
                    return hello;
                }
            }
        })
        .await
    }

    /// The first heartbeat that carries a clock estimate.
    pub async fn wait_clock_heartbeat(&mut self) -> rankline_proto::Heartbeat {
        within_wait(async {
            loop {
                if let Some(agent_message::Kind::Heartbeat(beat)) = self.next_message().await.kind {
                    if beat.clock.is_some() {
                        return beat;
                    }
                }
            }
        })
        .await
    }

    /// The next update of `profile_id`, skipping everything else.
    pub async fn next_update(&mut self, profile_id: &str) -> RankUpdate {
        within_wait(async {
            loop {
                if let Some(agent_message::Kind::Update(update)) = self.next_message().await.kind {
                    if update.profile_id == profile_id {
                        return update;
                    }
                }
            }
        })
        .await
    }

    /// Waits for an update of `profile_id` in `state` (or a final one,
    /// whichever comes first), skipping everything else.
    pub async fn wait_state(&mut self, profile_id: &str, state: RankState) -> RankUpdate {
        loop {
            let update = self.next_update(profile_id).await;
            if update.state() == state || update.state().is_final() {
                return update;
            }
        }
    }

    pub async fn wait_final(&mut self, profile_id: &str) -> RankUpdate {
        self.wait_state(profile_id, RankState::Ok).await
    }

    pub fn shut_down(&mut self) {
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        self.drop_link(true);
    }
}

impl Drop for FakeCoordinator {
    fn drop(&mut self) {
        self.shut_down();
    }
}

// ---------------------------------------------------------------------------
// Profiling server
// ---------------------------------------------------------------------------

/// How the fake server answers `/start_profile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStart {
    Accept,
    /// A bare 500, as when a profile already runs.
    Fail500,
    /// Never answers.
    Hang,
}

#[derive(Debug)]
pub struct ServerState {
    /// The host name files are named after.
    pub host: String,
    /// `/get_server_info`'s answer; `None` serves 404 (a node >= 1).
    pub info: Mutex<Option<Value>>,
    pub on_start: Mutex<OnStart>,
    pub status_route: AtomicBool,
    /// Output dir of the running profile and its start instant.
    running: Mutex<Option<(PathBuf, i64)>>,
    /// A profile stopped by `num_steps` whose files wait for `release_files`.
    finished: Mutex<Option<(PathBuf, i64)>>,
    /// Every profiling call: (route, JSON body).
    pub calls: Mutex<Vec<(String, Value)>>,
}

/// A scriptable sglang-jax look-alike on loopback.
pub struct FakeServer {
    pub url: String,
    pub state: Arc<ServerState>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeServer {
    pub async fn start(host: &str) -> FakeServer {
        Self::start_on(host, ReservedPort::new()).await
    }

    /// Listens on a reserved port, so a test can start the server after the agent.
    pub async fn start_on(host: &str, port: ReservedPort) -> FakeServer {
        let state = Arc::new(ServerState {
            host: host.into(),
            info: Mutex::new(Some(json!({
                "tp_size": 1, "nnodes": 1, "node_rank": 0, "device": "tpu",
                "disaggregation_mode": null, "xla_backend": "tpu"
            }))),
            on_start: Mutex::new(OnStart::Accept),
            status_route: AtomicBool::new(true),
            running: Mutex::new(None),
            finished: Mutex::new(None),
            calls: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/health", get(|| async { StatusCode::OK }))
            .route("/get_server_info", get(server_info))
            .route("/start_profile", post(start_profile))
            .route("/stop_profile", post(stop_profile))
            .route("/profile_status", get(profile_status))
            .with_state(Arc::clone(&state));
        let listener = port.listen();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeServer { url, state, task }
    }

    /// Writes the files of a profile that `num_steps` ended.
    pub fn release_files(&self) {
        let (dir, start) = self
            .state
            .finished
            .lock()
            .unwrap()
            .take()
            .expect("no finished profile");
        write_jax_files(&dir, &self.state.host, start);
    }

    pub fn calls(&self) -> Vec<String> {
        self.state
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|(route, _)| route.clone())
            .collect()
    }

    pub fn start_body(&self) -> Value {
        self.state
            .calls
            .lock()
            .unwrap()
            .iter()
            .find(|(route, _)| route == "start")
            .map(|(_, body)| body.clone())
            .expect("no start was received")
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn server_info(State(state): State<Arc<ServerState>>) -> Result<Json<Value>, StatusCode> {
    state
        .info
        .lock()
        .unwrap()
        .clone()
        .map(Json)
        .ok_or(StatusCode::NOT_FOUND)
}

async fn start_profile(
    State(state): State<Arc<ServerState>>,
    body: Option<Json<Value>>,
) -> (StatusCode, &'static str) {
    let body = body.map_or(Value::Null, |Json(body)| body);
    state
        .calls
        .lock()
        .unwrap()
        .push(("start".into(), body.clone()));
    let on_start = *state.on_start.lock().unwrap();
    match on_start {
        OnStart::Accept => {}
        OnStart::Fail500 => return (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
        OnStart::Hang => {
            drop(body);
            return std::future::pending().await;
        }
    }
    let mut running = state.running.lock().unwrap();
    if running.is_some() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    }
    let dir = PathBuf::from(body["output_dir"].as_str().unwrap_or("/tmp"));
    let started = (dir, unix_now_ns());
    if body.get("num_steps").is_some() {
        // The steps pass at once; the files come when the test releases them.
        *state.finished.lock().unwrap() = Some(started);
    } else {
        *running = Some(started);
    }
    (StatusCode::OK, "Start profiling.\n")
}

async fn stop_profile(State(state): State<Arc<ServerState>>) -> (StatusCode, &'static str) {
    state
        .calls
        .lock()
        .unwrap()
        .push(("stop".into(), Value::Null));
    let Some((dir, start)) = state.running.lock().unwrap().take() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    };
    write_jax_files(&dir, &state.host, start);
    (
        StatusCode::OK,
        "Stop profiling. This will take some time.\n",
    )
}

async fn profile_status(State(state): State<Arc<ServerState>>) -> Result<Json<Value>, StatusCode> {
    if !state.status_route.load(Ordering::SeqCst) {
        return Err(StatusCode::NOT_FOUND);
    }
    let running = state.running.lock().unwrap().is_some();
    Ok(Json(
        json!({"status": if running { "in_progress" } else { "idle" }}),
    ))
}

/// A JAX session folder with `<host>.trace.json.gz` and a `<host>.xplane.pb`
/// whose `Task Environment` plane records `start_ns`.
pub fn write_jax_files(output_dir: &Path, host: &str, start_ns: i64) {
    let session = output_dir.join("plugins/profile/2026_11_22_21_52_13");
    std::fs::create_dir_all(&session).unwrap();
    let trace = json!({"displayTimeUnit": "ns", "traceEvents": [
        {"ph": "X", "pid": 701, "tid": 1, "ts": 10.5, "dur": 3.0, "name": "step"}, {}
    ]});
    std::fs::write(
        session.join(format!("{host}.trace.json.gz")),
        gzip(&trace.to_string()),
    )
    .unwrap();
    let stats: BTreeMap<i64, &str> = [(1, "profile_start_time"), (2, "profile_stop_time")].into();
    let plane = XPlane {
        id: 3,
        name: "Task Environment".into(),
        stat_metadata: stats
            .iter()
            .map(|(id, name)| {
                (
                    *id,
                    XStatMetadata {
                        id: *id,
                        name: (*name).into(),
                        description: String::new(),
                    },
                )
            })
            .collect(),
        stats: vec![
            XStat {
                metadata_id: 1,
                value: Some(StatValue::Uint64Value(start_ns as u64)),
            },
            XStat {
                metadata_id: 2,
                value: Some(StatValue::Uint64Value(start_ns as u64 + 1_000_000)),
            },
        ],
        ..Default::default()
    };
    let space = XSpace {
        planes: vec![plane],
        ..Default::default()
    };
    std::fs::write(
        session.join(format!("{host}.xplane.pb")),
        prost::Message::encode_to_vec(&space),
    )
    .unwrap();
}

pub fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap()
}

// ---------------------------------------------------------------------------
// Agent
// ---------------------------------------------------------------------------

/// Timing that keeps tests quick: short polls, quick reconnects.
pub fn quick_timing() -> Timing {
    Timing {
        connect_timeout: Duration::from_secs(2),
        server_request_timeout: Duration::from_secs(2),
        stop_request_timeout: Duration::from_secs(5),
        poll_interval: Duration::from_millis(50),
        default_profiling_budget: Duration::from_secs(10),
        files_and_upload_budget: Duration::from_secs(10),
        foreign_files_grace: Duration::from_millis(500),
        discovery_retry_max: Duration::from_millis(200),
        reconnect_initial: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(200),
        welcome_timeout: Duration::from_secs(2),
        idle_clock_interval: Duration::from_secs(30),
        clock_burst_probes: 8,
        clock_probe_timeout: Duration::from_secs(1),
        upload_retry_initial: Duration::from_millis(50),
        upload_retry_max: Duration::from_millis(200),
    }
}

/// A running agent; dropping it shuts the agent down.
pub struct RunningAgent {
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningAgent {
    pub fn spawn(config: AgentConfig) -> RunningAgent {
        Self::spawn_ranks(config, RankChoice::One)
    }

    /// An agent process serving the `ranks` of its server's host.
    pub fn spawn_ranks(config: AgentConfig, ranks: RankChoice) -> RunningAgent {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            rankline_agent::run_ranks(config, ranks, async {
                let _ = stopped.await;
            })
            .await
            .expect("agent configuration is valid");
        });
        RunningAgent {
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn shut_down(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("agent shuts down")
                .unwrap();
        }
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// An agent config for tests: given URLs, a spool, host `testhost`.
/// One agent beside a fake server, joined to a fake coordinator, with a
/// spool and a storage folder: how most tests begin.
pub struct Rig {
    pub spool: tempfile::TempDir,
    pub storage: tempfile::TempDir,
    pub server: FakeServer,
    pub coordinator: FakeCoordinator,
    pub agent: RunningAgent,
    pub hello: AgentHello,
}

/// Starts a [`Rig`] and waits for the agent's hello.
pub async fn rig() -> Rig {
    let spool = tempfile::tempdir().unwrap();
    let storage = tempfile::tempdir().unwrap();
    let server = FakeServer::start("testhost").await;
    let mut coordinator = FakeCoordinator::start().await;
    let agent = RunningAgent::spawn(agent_config(&coordinator.url(), &server.url, spool.path()));
    let hello = coordinator.wait_hello().await;
    Rig {
        spool,
        storage,
        server,
        coordinator,
        agent,
        hello,
    }
}

pub fn agent_config(coordinator: &str, server: &str, spool: &Path) -> AgentConfig {
    AgentConfig {
        coordinator_url: coordinator.into(),
        server_url: server.into(),
        host: Some("testhost".into()),
        spool: spool.to_path_buf(),
        timing: quick_timing(),
        ..AgentConfig::default()
    }
}

/// sha256 of a file, lower-case hex.
pub fn sha256_of(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// A loopback port held but not listening: connections to it are refused
/// until `listen`, and no other test can take it meanwhile.
pub struct ReservedPort {
    socket: socket2::Socket,
    pub addr: SocketAddr,
}

impl ReservedPort {
    pub fn new() -> ReservedPort {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        socket.bind(&any.into()).unwrap();
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        ReservedPort { socket, addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn listen(self) -> tokio::net::TcpListener {
        self.socket.listen(128).unwrap();
        self.socket.set_nonblocking(true).unwrap();
        tokio::net::TcpListener::from_std(self.socket.into()).unwrap()
    }
}
