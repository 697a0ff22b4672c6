//! `rankline sim-server`: runs a simulated sglang-jax / SGLang server
//! (`rankline-simserver`) until SIGTERM or ctrl-c. Prints exactly one line,
//! `listening on http://<addr>`, to stdout once bound.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use rankline_simserver::{
    DisaggregationMode, Faults, GroupConfig, ServerKind, SimServer, SimServerConfig, TraceFileKind,
};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    /// sglang-jax on TPU: JAX `trace.json.gz` + `.xplane.pb` per host.
    SglangJax,
    /// SGLang on GPU: one Kineto `trace.json.gz` per rank (`.tmp`, then renamed).
    Sglang,
    /// vLLM on GPU: profiler routes only with --default-output-dir (or
    /// VLLM_TORCH_PROFILER_DIR); `<worker>.<ms>.pt.trace.json.gz` per worker there.
    Vllm,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Mode {
    Null,
    Prefill,
    Decode,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum MissingFile {
    /// Leave out `<host>.trace.json.gz`.
    Trace,
    /// Leave out `<host>.xplane.pb`.
    Xplane,
}

/// Run a simulated server that answers the profiling HTTP API like the real
/// one (quirks included) and writes real-format trace files.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// HTTP port; 0 picks a free one (read it from the `listening on` line).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Address to bind; also the `host` in /get_server_info.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, value_enum, default_value = "sglang-jax")]
    kind: Kind,
    /// Host name the JAX files are named after [default: this machine's].
    #[arg(long)]
    hostname: Option<String>,
    #[arg(long, default_value = "sim/tiny-model")]
    model_path: String,

    #[arg(long, default_value_t = 1)]
    tp_size: u32,
    #[arg(long, default_value_t = 1)]
    ep_size: u32,
    #[arg(long, default_value_t = 1)]
    dp_size: u32,
    #[arg(long, default_value_t = 1)]
    pp_size: u32,
    /// This process's TP rank (SGLang file names). Without it an SGLang
    /// server writes a file for every TP rank of its node, as a real one
    /// with --tp-size 8 on one host writes eight.
    #[arg(long)]
    tp_rank: Option<u32>,
    #[arg(long, default_value_t = 0)]
    ep_rank: u32,
    #[arg(long, default_value_t = 0)]
    dp_rank: u32,
    #[arg(long, default_value_t = 0)]
    pp_rank: u32,
    /// Disaggregation mode reported by /get_server_info.
    #[arg(long, value_enum, default_value = "null")]
    disaggregation_mode: Mode,

    /// Hosts of a multi-host server: node 0 serves the API and broadcasts
    /// start/stop; nodes >= 1 serve only a dummy /health.
    #[arg(long, default_value_t = 1)]
    nnodes: u32,
    #[arg(long, default_value_t = 0)]
    node_rank: u32,
    /// HOST:PORT node 0 listens on for the other nodes (needed when --nnodes > 1).
    #[arg(long)]
    dist_init_addr: Option<String>,

    /// HOST:PORT of the collective barrier shared by independent servers
    /// (group rank 0 listens there; with port 0 it logs the port it got).
    #[arg(long, requires_all = ["group_size", "group_rank"])]
    group_addr: Option<String>,
    /// Servers in the group (with --group-addr).
    #[arg(long, requires = "group_addr")]
    group_size: Option<u32>,
    /// This server's rank in the group, 0..group-size (with --group-addr).
    #[arg(long, requires = "group_addr")]
    group_rank: Option<u32>,

    /// TPU chips on this host (one device plane each) [default: tp-size / nnodes].
    #[arg(long)]
    local_devices: Option<u32>,
    /// One forward step every this many ms, profiling or not.
    #[arg(long, default_value_t = 10.0)]
    step_ms: f64,
    /// From /start_profile arriving to the recorded profile_start_time.
    #[arg(long, default_value_t = 18.7)]
    start_delay_ms: f64,
    /// From /stop_profile to the files written and the answer.
    #[arg(long, default_value_t = 550.0)]
    export_ms: f64,
    /// From an automatic stop (num_steps) to the files written.
    #[arg(long, default_value_t = 1000.0)]
    auto_stop_export_ms: f64,
    /// About how many trace events one step writes (1 s = 100 steps at the default step).
    #[arg(long, default_value_t = 1000)]
    events_per_step: usize,
    #[arg(long, default_value_t = 5)]
    collectives_per_step: usize,
    /// Python tracer when a start leaves python_tracer_level unset or 0 (the
    /// real server treats 0 as unset), or with_stack unset for SGLang: 1 = on.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    python_tracer_default: u8,
    /// Output dir of a start that names none [default: $SGLANG_JAX_PROFILER_DIR
    /// or $SGLANG_TORCH_PROFILER_DIR by --kind, else /tmp].
    #[arg(long)]
    default_output_dir: Option<PathBuf>,
    /// Answer /profile_status with 404, like builds before it existed.
    #[arg(long)]
    no_profile_status: bool,
    /// Append one JSON line per /start_profile or /stop_profile received:
    /// {"event","received_unix_ns","node_rank","group_rank","hostname","port"}.
    #[arg(long)]
    events_log: Option<PathBuf>,
    /// Require `Authorization: Bearer <KEY>` like SGLang's --api-key (401
    /// `{"error": "Unauthorized"}` without it; /health and /metrics stay open).
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,

    /// Fault: every /start_profile answers 500.
    #[arg(long, help_heading = "Fault injection")]
    fail_start: bool,
    /// Fault: every /stop_profile answers 500 and the profile keeps running.
    #[arg(long, help_heading = "Fault injection")]
    fail_stop: bool,
    /// Fault: accept connections, never answer any request.
    #[arg(long, help_heading = "Fault injection")]
    hang: bool,
    /// Fault: /stop_profile never answers and no files are written.
    #[arg(long, help_heading = "Fault injection")]
    hang_stop: bool,
    /// Fault: stops succeed but no trace file is written (the JAX folder still appears).
    #[arg(long, help_heading = "Fault injection")]
    no_files: bool,
    /// Fault: write only one file of the JAX pair.
    #[arg(long, value_enum, help_heading = "Fault injection")]
    missing_file: Option<MissingFile>,
    /// Fault: spread writing each file over this many ms (sizes grow visibly).
    #[arg(long, default_value_t = 0.0, help_heading = "Fault injection")]
    slow_write_ms: f64,
    /// Reproduce sglang-jax 0.0.2: a start with both start_step and num_steps
    /// answers 200, then the scheduler dies and every later request hangs.
    #[arg(long, help_heading = "Fault injection")]
    emulate_start_step_hang: bool,
    /// Fault: every inference request (/generate, /v1/*) answers 400 with
    /// the "missing model field" message of seed 004.
    #[arg(long, help_heading = "Fault injection")]
    reject_requests: bool,
}

fn millis(value: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value / 1000.0)
        .with_context(|| format!("--{flag} {value}: give a non-negative number of milliseconds"))
}

impl Args {
    fn config(&self) -> anyhow::Result<SimServerConfig> {
        let group = match (&self.group_addr, self.group_size, self.group_rank) {
            (Some(addr), Some(size), Some(rank)) => Some(GroupConfig {
                addr: addr.clone(),
                size,
                rank,
            }),
            _ => None,
        };
        let ranks_per_node = (self.tp_size / self.nnodes.max(1)).max(1);
        let mut config = SimServerConfig {
            kind: match self.kind {
                Kind::SglangJax => ServerKind::SglangJax,
                Kind::Sglang => ServerKind::Sglang,
                Kind::Vllm => ServerKind::Vllm,
            },
            host: self.host.clone(),
            model_path: self.model_path.clone(),
            tp_size: self.tp_size,
            ep_size: self.ep_size,
            dp_size: self.dp_size,
            pp_size: self.pp_size,
            tp_rank: self.tp_rank.unwrap_or(self.node_rank * ranks_per_node),
            sglang_ranks_written: match (self.kind, self.tp_rank) {
                (Kind::Sglang | Kind::Vllm, None) => ranks_per_node,
                _ => 1,
            },
            ep_rank: self.ep_rank,
            dp_rank: self.dp_rank,
            pp_rank: self.pp_rank,
            nnodes: self.nnodes,
            node_rank: self.node_rank,
            dist_init_addr: self.dist_init_addr.clone(),
            disaggregation_mode: match self.disaggregation_mode {
                Mode::Null => None,
                Mode::Prefill => Some(DisaggregationMode::Prefill),
                Mode::Decode => Some(DisaggregationMode::Decode),
            },
            group,
            local_devices: self.local_devices,
            step_interval: millis(self.step_ms, "step-ms")?,
            start_delay: millis(self.start_delay_ms, "start-delay-ms")?,
            export_delay: millis(self.export_ms, "export-ms")?,
            auto_stop_export_delay: millis(self.auto_stop_export_ms, "auto-stop-export-ms")?,
            events_per_step: self.events_per_step,
            collectives_per_step: self.collectives_per_step,
            python_tracer_default: self.python_tracer_default == 1,
            default_output_dir: self.default_output_dir.clone(),
            profile_status_route: !self.no_profile_status,
            events_log: self.events_log.clone(),
            api_key: self.api_key.clone(),
            faults: Faults {
                fail_start: self.fail_start,
                fail_stop: self.fail_stop,
                hang: self.hang,
                hang_stop: self.hang_stop,
                no_files: self.no_files,
                missing_file: self.missing_file.map(|file| match file {
                    MissingFile::Trace => TraceFileKind::TraceJson,
                    MissingFile::Xplane => TraceFileKind::Xplane,
                }),
                slow_write: millis(self.slow_write_ms, "slow-write-ms")?,
                emulate_start_step_hang: self.emulate_start_step_hang,
                reject_requests: self.reject_requests,
            },
            ..SimServerConfig::default()
        };
        if let Some(hostname) = &self.hostname {
            config.hostname = hostname.clone();
        }
        Ok(config)
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = args.config()?;
    // One thread is plenty and keeps many simulated servers on a small
    // machine cheap; file writing runs on tokio's blocking pool.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| {
                format!(
                    "cannot bind {}:{}; choose another --port",
                    args.host, args.port
                )
            })?;
        let server = SimServer::bind(config, listener).await?;
        if let Some(link) = server.link_addr() {
            tracing::info!(%link, "rank 0 link bound");
        }
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on http://{}", server.http_addr())?;
        stdout.flush()?;
        drop(stdout);
        server.run(crate::signals::shutdown_requested()).await?;
        Ok(ExitCode::SUCCESS)
    })
}
