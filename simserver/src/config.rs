//! What a simulated server is: its identity as `/get_server_info` reports it,
//! its place in a multi-host server or a collective group, its timing, the
//! size of the traces it writes, and the faults it injects for tests.

use std::path::PathBuf;
use std::time::Duration;

use crate::trace::TraceFileKind;
use crate::SimError;

/// Which real server is simulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerKind {
    /// sglang-jax on TPU: JAX profiler output (`trace.json.gz` + `.xplane.pb`).
    #[default]
    SglangJax,
    /// SGLang on GPU: one Kineto `trace.json.gz` per rank, `.tmp` then renamed.
    Sglang,
    /// vLLM on GPU: `/start_profile` and `/stop_profile` only when a profiler
    /// dir is set (`VLLM_TORCH_PROFILER_DIR`), answered 200 with an empty
    /// body; each worker writes `<worker>.<ms>.pt.trace.json.gz` (Kineto)
    /// into that fixed dir, whatever the request says; no `/get_server_info`.
    Vllm,
}

impl ServerKind {
    /// The `device` field of `/get_server_info`.
    pub fn device(self) -> &'static str {
        match self {
            ServerKind::SglangJax => "tpu",
            ServerKind::Sglang | ServerKind::Vllm => "cuda",
        }
    }

    /// The environment variable the real server takes its default output dir from.
    pub fn profiler_dir_env(self) -> &'static str {
        match self {
            ServerKind::SglangJax => "SGLANG_JAX_PROFILER_DIR",
            ServerKind::Sglang => "SGLANG_TORCH_PROFILER_DIR",
            ServerKind::Vllm => "VLLM_TORCH_PROFILER_DIR",
        }
    }
}

/// `--disaggregation-mode` of a PD-disaggregated deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisaggregationMode {
    Prefill,
    Decode,
}

impl DisaggregationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DisaggregationMode::Prefill => "prefill",
            DisaggregationMode::Decode => "decode",
        }
    }
}

/// Membership in a group of independent single-node servers whose
/// collectives rendezvous for real (rank 0 hosts a small TCP barrier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// `HOST:PORT` rank 0 listens on (port 0 lets rank 0 pick one; read it
    /// back with [`crate::SimServer::link_addr`]).
    pub addr: String,
    pub size: u32,
    pub rank: u32,
}

/// Faults a capture test can inject. All off by default.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Every `/start_profile` answers a bare 500.
    pub fail_start: bool,
    /// Every `/stop_profile` answers a bare 500 and the profile keeps running.
    pub fail_stop: bool,
    /// Every request is accepted and never answered.
    pub hang: bool,
    /// `/stop_profile` never answers and no files are written.
    pub hang_stop: bool,
    /// Stops succeed but no trace file is written (the JAX folder still appears).
    pub no_files: bool,
    /// Write one file of the JAX pair only.
    pub missing_file: Option<TraceFileKind>,
    /// Spread the writing of each file over this long, so sizes grow visibly.
    pub slow_write: Duration,
    /// Reproduce sglang-jax 0.0.2: a start with both `start_step` and
    /// `num_steps` answers 200, then the scheduler dies at its next step and
    /// every later request hangs.
    pub emulate_start_step_hang: bool,
    /// Every inference request (`/generate`, `/v1/*`) answers the 400 a
    /// request without `model` gets (seed 004), whatever it sends.
    pub reject_requests: bool,
}

/// Everything a simulated server needs. `Default` is a single-host
/// sglang-jax server with one TPU chip and the real server's timing.
#[derive(Debug, Clone)]
pub struct SimServerConfig {
    pub kind: ServerKind,
    /// The host name the files are named after (default: this machine's).
    pub hostname: String,
    /// The `host` reported by `/get_server_info` (the bind host).
    pub host: String,
    pub model_path: String,
    pub tp_size: u32,
    pub ep_size: u32,
    pub dp_size: u32,
    pub pp_size: u32,
    /// This process's ranks (SGLang file names; JAX ignores them).
    pub tp_rank: u32,
    /// SGLang: how many consecutive TP ranks, from `tp_rank` on, this
    /// process writes a file for. A real server with tp=8 on one host runs
    /// a scheduler per rank and writes eight files; 1 emulates one of them.
    pub sglang_ranks_written: u32,
    pub ep_rank: u32,
    pub dp_rank: u32,
    pub pp_rank: u32,
    pub nnodes: u32,
    pub node_rank: u32,
    /// `HOST:PORT` node 0 listens on for the other nodes (required when `nnodes > 1`).
    pub dist_init_addr: Option<String>,
    pub disaggregation_mode: Option<DisaggregationMode>,
    pub group: Option<GroupConfig>,
    /// Accelerator chips on this host (JAX device planes); default `tp_size / nnodes`.
    pub local_devices: Option<u32>,
    /// One forward step every this long, profiling or not.
    pub step_interval: Duration,
    /// From a `/start_profile` arriving to the recorded `profile_start_time`.
    pub start_delay: Duration,
    /// From `/stop_profile` to the files being written (and the answer).
    pub export_delay: Duration,
    /// From an automatic stop (`num_steps`) to the files being written.
    pub auto_stop_export_delay: Duration,
    /// About how many trace events one step produces.
    pub events_per_step: usize,
    pub collectives_per_step: usize,
    /// Whether the Python tracer runs when the request leaves
    /// `python_tracer_level` unset or 0 (the real server treats 0 as unset).
    pub python_tracer_default: bool,
    /// Where profiles go when the request names no `output_dir`; `None`
    /// reads the kind's environment variable, else `/tmp`.
    pub default_output_dir: Option<PathBuf>,
    /// Serve `/profile_status` (newer builds); `false` answers 404 like older ones.
    pub profile_status_route: bool,
    /// Append one JSON line per `/start_profile` / `/stop_profile` received.
    pub events_log: Option<PathBuf>,
    /// Like SGLang's `--api-key`: every route but `/health*` and `/metrics*`
    /// then wants `Authorization: Bearer <key>` and answers 401 without it.
    pub api_key: Option<String>,
    pub faults: Faults,
}

impl Default for SimServerConfig {
    fn default() -> Self {
        SimServerConfig {
            kind: ServerKind::SglangJax,
            hostname: system_hostname(),
            host: "127.0.0.1".to_string(),
            model_path: "sim/tiny-model".to_string(),
            tp_size: 1,
            ep_size: 1,
            dp_size: 1,
            pp_size: 1,
            tp_rank: 0,
            sglang_ranks_written: 1,
            ep_rank: 0,
            dp_rank: 0,
            pp_rank: 0,
            nnodes: 1,
            node_rank: 0,
            dist_init_addr: None,
            disaggregation_mode: None,
            group: None,
            local_devices: None,
            step_interval: Duration::from_millis(10),
            start_delay: Duration::from_micros(18_700),
            export_delay: Duration::from_millis(550),
            auto_stop_export_delay: Duration::from_millis(1000),
            events_per_step: 1000,
            collectives_per_step: 5,
            python_tracer_default: true,
            default_output_dir: None,
            profile_status_route: true,
            events_log: None,
            api_key: None,
            faults: Faults::default(),
        }
    }
}

/// How this process joins its peers' collectives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LinkRole {
    /// No peers: collectives complete at once.
    Solo,
    /// Rank 0: hosts the barrier (and, for a multi-host server, broadcasts
    /// profiling commands).
    Hub { addr: String, size: u32 },
    /// Rank >= 1: dials the hub, retrying until it is up.
    Member { addr: String, size: u32, rank: u32 },
}

impl SimServerConfig {
    /// Checks the combination of settings; the error names the field to fix.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |message: String| Err(SimError::Config(message));
        for (name, size) in [
            ("tp_size", self.tp_size),
            ("ep_size", self.ep_size),
            ("dp_size", self.dp_size),
            ("pp_size", self.pp_size),
            ("nnodes", self.nnodes),
        ] {
            if size == 0 {
                return bad(format!("{name} must be at least 1"));
            }
        }
        for (name, rank, size) in [
            ("tp_rank", self.tp_rank, self.tp_size),
            ("ep_rank", self.ep_rank, self.ep_size),
            ("dp_rank", self.dp_rank, self.dp_size),
            ("pp_rank", self.pp_rank, self.pp_size),
            ("node_rank", self.node_rank, self.nnodes),
        ] {
            if rank >= size {
                return bad(format!(
                    "{name} {rank} is out of range: it must be below {size}"
                ));
            }
        }
        if self.nnodes > 1 && self.dist_init_addr.is_none() {
            return bad(
                "a multi-host server (nnodes > 1) needs dist_init_addr (HOST:PORT of node 0)"
                    .into(),
            );
        }
        if let Some(group) = &self.group {
            if self.nnodes > 1 {
                return bad(
                    "use either a multi-host server (nnodes > 1) or a group, not both".into(),
                );
            }
            if group.size == 0 || group.rank >= group.size {
                return bad(format!(
                    "group rank {} must be below group size {}",
                    group.rank, group.size
                ));
            }
        }
        if self.sglang_ranks_written == 0 || self.tp_rank + self.sglang_ranks_written > self.tp_size
        {
            return bad(format!(
                "{} SGLang rank files from tp_rank {} do not fit in tp_size {}",
                self.sglang_ranks_written, self.tp_rank, self.tp_size
            ));
        }
        if self.local_devices == Some(0) {
            return bad("local_devices must be at least 1".into());
        }
        if self.step_interval.is_zero() {
            return bad("step_interval must be positive".into());
        }
        if self.hostname.is_empty() || self.hostname.contains('/') {
            return bad(format!(
                "hostname {:?} cannot name a file: give a plain host name",
                self.hostname
            ));
        }
        Ok(())
    }

    /// TPU chips on this host.
    pub fn devices_on_host(&self) -> u32 {
        self.local_devices
            .unwrap_or_else(|| (self.tp_size / self.nnodes).max(1))
    }

    /// vLLM serves its profiler routes only when a profiler dir is set.
    pub fn vllm_profiler_enabled(&self) -> bool {
        self.default_output_dir.is_some()
            || std::env::var_os(self.kind.profiler_dir_env()).is_some_and(|d| !d.is_empty())
    }

    /// The output dir used when a start names none.
    pub fn resolved_default_output_dir(&self) -> PathBuf {
        self.default_output_dir.clone().unwrap_or_else(|| {
            std::env::var_os(self.kind.profiler_dir_env())
                .filter(|dir| !dir.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/tmp"))
        })
    }

    pub(crate) fn link_role(&self) -> LinkRole {
        let (addr, size, rank) = if self.nnodes > 1 {
            let addr = self.dist_init_addr.clone().unwrap_or_default();
            (addr, self.nnodes, self.node_rank)
        } else if let Some(group) = self.group.clone().filter(|g| g.size > 1) {
            (group.addr, group.size, group.rank)
        } else {
            return LinkRole::Solo;
        };
        if rank == 0 {
            LinkRole::Hub { addr, size }
        } else {
            LinkRole::Member { addr, size, rank }
        }
    }

    /// Whether profiling commands travel over the link (a multi-host server),
    /// rather than each group member being driven on its own.
    pub(crate) fn broadcasts_commands(&self) -> bool {
        self.nnodes > 1
    }

    /// The rank used to vary event durations between processes.
    pub(crate) fn jitter_seed(&self) -> u64 {
        let group_rank = self.group.as_ref().map_or(0, |g| g.rank);
        let mut seed = 0xcbf2_9ce4_8422_2325u64;
        for byte in self.hostname.bytes() {
            seed = (seed ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
        }
        seed ^ (u64::from(self.node_rank) << 32)
            ^ (u64::from(group_rank) << 16)
            ^ u64::from(self.tp_rank)
    }
}

/// This machine's host name, as Python's `socket.gethostname()` sees it.
pub fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|n| !n.is_empty()))
        .unwrap_or_else(|| "localhost".to_string())
}
