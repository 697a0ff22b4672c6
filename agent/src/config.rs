//! What an agent is told at start-up (flags, environment), and the timing
//! knobs of its conversations with the server, the coordinator and storage.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use rankline_proto::security::{ClientSecurity, Secret};
use rankline_proto::{Role, ServerKind};

use crate::spool::Retention;

pub use rankline_proto::DEFAULT_COORDINATOR_URL;
/// The default base URL of the local server's HTTP API.
pub const DEFAULT_SERVER_URL: &str = "http://127.0.0.1:30000";
/// The default spool folder (captures are written below `<spool>/captures`).
pub const DEFAULT_SPOOL: &str = "/var/lib/rankline/spool";

/// Whether the agent sends `/start_profile` and `/stop_profile` itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModeChoice {
    /// Decide from the server: node 0 triggers, nodes >= 1 only collect.
    #[default]
    Auto,
    /// Always drive the server's profiling API.
    Trigger,
    /// Never call the server; wait for the files this host writes.
    Collect,
}

/// Which server family the agent drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KindChoice {
    /// Decide from `/get_server_info`; sglang-jax when nothing tells.
    #[default]
    Auto,
    SglangJax,
    Sglang,
    /// vLLM: needs the server's profiler dir (`profiler_dir`).
    Vllm,
}

impl KindChoice {
    /// The server kind this choice pins, if it pins one.
    pub fn fixed(self) -> Option<ServerKind> {
        match self {
            KindChoice::Auto => None,
            KindChoice::SglangJax => Some(ServerKind::SglangJax),
            KindChoice::Sglang => Some(ServerKind::Sglang),
            KindChoice::Vllm => Some(ServerKind::Vllm),
        }
    }
}

/// Everything an agent needs to know at start-up. Fields left `None` are
/// discovered from the server (or take their documented default).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The coordinator's gRPC address, e.g. `http://10.0.0.1:7471`.
    pub coordinator_url: String,
    /// Base URL of the local server's HTTP API.
    pub server_url: String,
    /// The host name the server puts in its JAX file names; `None`: this
    /// machine's host name.
    pub host: Option<String>,
    /// `None`: from the server's `disaggregation_mode`, else `unified`.
    pub role: Option<Role>,
    pub worker: u32,
    pub tp_rank: u32,
    pub ep_rank: u32,
    pub dp_rank: Option<u32>,
    pub pp_rank: Option<u32>,
    pub labels: BTreeMap<String, String>,
    pub mode: ModeChoice,
    pub kind: KindChoice,
    /// Captures are written below `<spool>/captures/<profile_id>/`.
    pub spool: PathBuf,
    /// vLLM: the dir its profiler writes into (the server's
    /// `VLLM_TORCH_PROFILER_DIR`); requests cannot choose one.
    pub profiler_dir: Option<PathBuf>,
    /// `None`: `<host>/<role>-<worker>/<rank label>`.
    pub agent_id: Option<String>,
    /// How many finished captures keep their files in the spool.
    pub retention: Retention,
    pub timing: Timing,
    /// The token and TLS settings for the coordinator link.
    pub coordinator_security: ClientSecurity,
    /// Sent as `Authorization: Bearer` on every call to the server (SGLang's
    /// `--api-key` / `--admin-api-key`).
    pub server_api_key: Option<Secret>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            coordinator_url: DEFAULT_COORDINATOR_URL.to_string(),
            server_url: DEFAULT_SERVER_URL.to_string(),
            host: None,
            role: None,
            worker: 0,
            tp_rank: 0,
            ep_rank: 0,
            dp_rank: None,
            pp_rank: None,
            labels: BTreeMap::new(),
            mode: ModeChoice::Auto,
            kind: KindChoice::Auto,
            spool: PathBuf::from(DEFAULT_SPOOL),
            profiler_dir: None,
            agent_id: None,
            retention: Retention::default(),
            timing: Timing::default(),
            coordinator_security: ClientSecurity::default(),
            server_api_key: None,
        }
    }
}

/// Timeouts and intervals. The defaults suit real servers; tests shrink them.
#[derive(Debug, Clone)]
pub struct Timing {
    /// TCP connect to the server or the coordinator.
    pub connect_timeout: Duration,
    /// Any server call that should answer at once (`/health`,
    /// `/get_server_info`, `/start_profile`, `/profile_status`).
    pub server_request_timeout: Duration,
    /// `/stop_profile`, which answers only once the files are written.
    pub stop_request_timeout: Duration,
    /// How often files and `/profile_status` are polled.
    pub poll_interval: Duration,
    /// Profiling budget of a `num_steps` capture (or one with neither a
    /// duration nor steps) when the capture sets no `timeout_ms`.
    pub default_profiling_budget: Duration,
    /// Added to the profiling budget for writing and collecting the files
    /// (the same budget the coordinator gives the upload too; the agent's
    /// upload goes on past it until storage holds the files).
    pub files_and_upload_budget: Duration,
    /// How long files that are not this rank's may sit complete and
    /// unchanged, with none of this rank's, before the rank fails for a
    /// host name or rank flags that do not match what the server writes.
    pub foreign_files_grace: Duration,
    /// Longest wait between two discovery attempts while the server is down.
    pub discovery_retry_max: Duration,
    /// Reconnect backoff: first delay and cap (jitter is added).
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    /// How long the coordinator may take to answer the hello with a Welcome.
    pub welcome_timeout: Duration,
    /// Idle clock bursts are this far apart.
    pub idle_clock_interval: Duration,
    /// Probes per clock burst.
    pub clock_burst_probes: usize,
    /// One clock probe's round-trip limit.
    pub clock_probe_timeout: Duration,
    /// Upload retry backoff while storage fails: first delay and cap
    /// (jitter is added). Uploads are retried until they succeed.
    pub upload_retry_initial: Duration,
    pub upload_retry_max: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            connect_timeout: Duration::from_secs(3),
            server_request_timeout: Duration::from_secs(10),
            stop_request_timeout: Duration::from_secs(120),
            poll_interval: Duration::from_millis(200),
            default_profiling_budget: Duration::from_secs(60),
            files_and_upload_budget: Duration::from_secs(120),
            foreign_files_grace: Duration::from_secs(10),
            discovery_retry_max: Duration::from_secs(5),
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            welcome_timeout: Duration::from_secs(5),
            idle_clock_interval: Duration::from_secs(30),
            clock_burst_probes: 12,
            clock_probe_timeout: Duration::from_secs(1),
            upload_retry_initial: Duration::from_secs(1),
            upload_retry_max: Duration::from_secs(60),
        }
    }
}
