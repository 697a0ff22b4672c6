//! `rankline agent`: the daemon beside one server process. Parses flags and
//! `RANKLINE_*` variables into an `AgentConfig` and runs `rankline_agent::Agent`
//! on a small single-threaded runtime (64 agents may share two cores).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::builder::TypedValueParser;
use rankline_agent::{AgentConfig, KindChoice, ModeChoice, RankChoice, Retention, Timing};
use rankline_layout::Role;

use rankline_proto::security::{read_secret_file, Secret};

use crate::args::CoordinatorArg;
use crate::signals::shutdown_requested;

/// The variable the server API key can come in, when no file is given.
const SERVER_KEY_VARIABLE: &str = "RANKLINE_SERVER_API_KEY";

/// Run an agent beside one server process.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// Base URL of the local server's HTTP API (sglang-jax or SGLang).
    #[arg(
        long,
        env = "RANKLINE_SERVER",
        value_name = "URL",
        default_value = rankline_agent::DEFAULT_SERVER_URL
    )]
    server: String,

    /// The host name the server sees; sglang-jax names its files after it
    /// (<host>.trace.json.gz). [default: this machine's host name]
    #[arg(long, env = "RANKLINE_HOST", value_name = "NAME")]
    host: Option<String>,

    /// Which kind of worker the server is. [default: the server's
    /// disaggregation_mode, else unified]
    #[arg(long, env = "RANKLINE_ROLE", value_parser = role_parser())]
    role: Option<Role>,

    /// Which server of that role this is (prefill-0, prefill-1, ...).
    #[arg(long, env = "RANKLINE_WORKER", value_name = "N", default_value_t = 0)]
    worker: u32,

    /// Tensor-parallel rank of the process (or host) this agent stands for.
    #[arg(long, env = "RANKLINE_TP_RANK", value_name = "N", default_value_t = 0)]
    tp_rank: u32,

    /// Serve several ranks from this one agent: `auto` (every rank this
    /// host's server writes, from its /get_server_info: an SGLang server
    /// with tp=8 writes eight files on one host; a JAX host is one rank,
    /// its node_rank) or TP ranks like `0-7` / `0,2,4-5`. Each rank is
    /// reported and stored on its own; only the server's first rank
    /// triggers it.
    #[arg(long, env = "RANKLINE_RANKS", value_name = "auto|LIST", value_parser = RankChoice::parse, conflicts_with = "tp_rank")]
    ranks: Option<RankChoice>,

    /// Expert-parallel rank.
    #[arg(long, env = "RANKLINE_EP_RANK", value_name = "N", default_value_t = 0)]
    ep_rank: u32,

    /// Data-parallel rank, when the deployment has DP > 1.
    #[arg(long, env = "RANKLINE_DP_RANK", value_name = "N")]
    dp_rank: Option<u32>,

    /// Pipeline-parallel rank, when the deployment has PP > 1.
    #[arg(long, env = "RANKLINE_PP_RANK", value_name = "N")]
    pp_rank: Option<u32>,

    /// A free-form label for `rankline capture --select label.<key>=<value>`;
    /// repeat for more (RANKLINE_LABELS takes k=v,k=v).
    #[arg(
        long = "label",
        env = "RANKLINE_LABELS",
        value_name = "KEY=VALUE",
        value_delimiter = ',',
        value_parser = parse_label
    )]
    labels: Vec<(String, String)>,

    /// trigger: this agent sends /start_profile and /stop_profile. collect:
    /// it never calls the server and only uploads the files its host writes
    /// (nodes >= 1 of a multi-host server; give --role then). auto: node 0
    /// (and, for SGLang, TP rank 0) triggers, other nodes collect.
    #[arg(long, env = "RANKLINE_MODE", value_enum, default_value_t = ModeArg::Auto)]
    mode: ModeArg,

    /// Server family, which decides file names and time bases. auto: read
    /// it from /get_server_info, sglang-jax when nothing tells.
    #[arg(long, env = "RANKLINE_KIND", value_enum, default_value_t = KindArg::Auto)]
    kind: KindArg,

    /// vLLM (--kind vllm): the dir the server's torch profiler writes into,
    /// its VLLM_TORCH_PROFILER_DIR (vLLM takes no output dir per request).
    #[arg(
        long,
        env = "VLLM_TORCH_PROFILER_DIR",
        value_name = "DIR",
        required_if_eq("kind", "vllm")
    )]
    profiler_dir: Option<PathBuf>,

    /// Local folder for captures: the server writes into
    /// <spool>/captures/<profile_id>/<role>-<worker>. Agents of one
    /// multi-host server must use the same path on every host.
    #[arg(
        long,
        env = "RANKLINE_SPOOL",
        value_name = "DIR",
        default_value = rankline_agent::DEFAULT_SPOOL
    )]
    spool: PathBuf,

    /// A stable, unique name for this agent. [default:
    /// <host>/<role>-<worker>/TP-<n>-EP-<m>]
    #[arg(long, env = "RANKLINE_AGENT_ID", value_name = "ID")]
    agent_id: Option<String>,

    /// Retention: the newest N finished captures keep their files in the
    /// spool after a verified upload; older ones are deleted. Files whose
    /// upload is not verified are never deleted.
    #[arg(
        long,
        env = "RANKLINE_KEEP_CAPTURES",
        value_name = "N",
        default_value_t = rankline_agent::spool::DEFAULT_KEEP_CAPTURES
    )]
    keep_captures: usize,

    /// Retention: the kept captures' files take at most this much of the
    /// spool (e.g. 500M, 20G, 0 to delete each capture's files once its
    /// upload is verified).
    #[arg(
        long,
        env = "RANKLINE_KEEP_BYTES",
        value_name = "SIZE",
        default_value = "10G",
        value_parser = parse_size
    )]
    keep_bytes: u64,

    /// A file holding the server's API key (SGLang's --api-key or
    /// --admin-api-key; not world-readable), sent as `Authorization:
    /// Bearer` on every call to the server. [default: the
    /// RANKLINE_SERVER_API_KEY variable, if set]
    #[arg(long, env = "RANKLINE_SERVER_API_KEY_FILE", value_name = "PATH")]
    server_api_key_file: Option<PathBuf>,

    // Last: its security flags open their own help section.
    #[command(flatten)]
    coordinator: CoordinatorArg,
}

const AFTER_HELP: &str = "\
The agent dials the coordinator and waits for captures. On a capture it calls the
server's /start_profile at the common start instant, stops it (duration, num_steps,
or `rankline stop`), waits for this rank's complete files, uploads them to the
capture's storage and writes the sidecar last. What the server can tell (role, node
rank, kind) is read from its GET /get_server_info, retried in the background while it
is down; flags win over what it says.

Examples:
  rankline agent --coordinator http://10.0.0.1:7471 --spool /tmp/rankline
  rankline agent --server http://127.0.0.1:30001 --role decode --worker 1 --tp-rank 0
  RANKLINE_MODE=collect RANKLINE_TP_RANK=1 rankline agent   # node 1 of a 2-host server
  rankline agent --ranks auto --spool /tmp/rankline   # every rank of this host's server (SGLang tp=8: 8)

Two agents (or ranks) never take the same file: an agent whose server files another
agent on this machine already collects (same --spool, same host name, same rank) is
refused at start, naming the other and what to change.

The agent runs until SIGINT or SIGTERM. It keeps running while the coordinator
or the server is down and reconnects by itself.

Uploads are read back and checked (size and sha256) and retried with backoff until
storage takes them, past the capture's deadline if need be. A capture's journal in
<spool>/agents/ lets an agent restarted mid-upload (even after kill -9) finish it.

A secured coordinator (docs/SECURITY.md) wants an agent token (--token-file or
RANKLINE_TOKEN), https:// with --tls-ca, and for mutual TLS --tls-cert/--tls-key whose CN
or SAN is this agent's --agent-id. A server started with SGLang's --api-key wants
--server-api-key-file (or RANKLINE_SERVER_API_KEY).";

/// `--role`: the role words, listed in `--help` as a value enum's would be.
fn role_parser() -> impl TypedValueParser<Value = Role> {
    clap::builder::PossibleValuesParser::new(Role::ALL.map(Role::word))
        .try_map(|word| word.parse::<Role>())
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    Auto,
    Trigger,
    Collect,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum KindArg {
    Auto,
    SglangJax,
    Sglang,
    /// vLLM: /start_profile + /stop_profile, files from --profiler-dir.
    Vllm,
}

/// `1048576`, `512K`, `500M`, `20G`, `1T` (powers of 1024; `KiB`, `MB`, ... also read).
fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let digits = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits);
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("{text:?} is not a size (e.g. 0, 500M, 20G)")),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("{text:?} is not a size (e.g. 0, 500M, 20G)"))
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(format!(
            "{text:?} is not KEY=VALUE (e.g. --label zone=us-east1-b)"
        )),
    }
}

impl Args {
    fn into_config(self) -> anyhow::Result<AgentConfig> {
        let coordinator_security = self.coordinator.security.security()?;
        let server_api_key = server_api_key(self.server_api_key_file.as_ref())?;
        Ok(AgentConfig {
            coordinator_url: self.coordinator.coordinator,
            server_url: self.server,
            host: self.host,
            role: self.role.map(rankline_proto::Role::from),
            worker: self.worker,
            tp_rank: self.tp_rank,
            ep_rank: self.ep_rank,
            dp_rank: self.dp_rank,
            pp_rank: self.pp_rank,
            labels: self.labels.into_iter().collect(),
            mode: match self.mode {
                ModeArg::Auto => ModeChoice::Auto,
                ModeArg::Trigger => ModeChoice::Trigger,
                ModeArg::Collect => ModeChoice::Collect,
            },
            kind: match self.kind {
                KindArg::Auto => KindChoice::Auto,
                KindArg::SglangJax => KindChoice::SglangJax,
                KindArg::Sglang => KindChoice::Sglang,
                KindArg::Vllm => KindChoice::Vllm,
            },
            spool: self.spool,
            profiler_dir: self.profiler_dir,
            agent_id: self.agent_id,
            retention: Retention {
                keep_captures: self.keep_captures,
                keep_bytes: self.keep_bytes,
            },
            timing: Timing::default(),
            coordinator_security,
            server_api_key,
        })
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let ranks = args.ranks.clone().unwrap_or(RankChoice::One);
    let config = args.into_config()?;
    // One thread runs everything; blocking work (precise start sleeps, time
    // base reads) gets a few short-lived helper threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()
        .context("cannot start the agent's runtime")?;
    runtime.block_on(rankline_agent::run_ranks(
        config,
        ranks,
        shutdown_requested(),
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// The agent's key for the server's HTTP API: `--server-api-key-file`, else
/// the RANKLINE_SERVER_API_KEY variable.
fn server_api_key(file: Option<&PathBuf>) -> anyhow::Result<Option<Secret>> {
    if let Some(path) = file {
        let key = read_secret_file(path, "server API key file").context("--server-api-key-file")?;
        return Ok(Some(Secret::new(key)));
    }
    match std::env::var(SERVER_KEY_VARIABLE) {
        Ok(key) if !key.trim().is_empty() => Ok(Some(Secret::new(key.trim()))),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1536"), Ok(1536));
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("20GiB"), Ok(20 << 30));
        assert_eq!(parse_size("2 kb"), Ok(2048));
        for bad in ["", "G", "ten", "5X", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }
}
