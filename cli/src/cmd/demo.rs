//! `rankline demo`: the whole product on one machine, no TPU needed.
//!
//! It starts an embedded coordinator, N simulated sglang-jax servers (one
//! collective group, so their all-reduces really rendezvous) and one agent
//! per server, all in this process on loopback; runs one capture through the
//! same code path as `rankline capture`; and merges it into one `.pftrace`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use rankline_agent::{Agent, AgentConfig, KindChoice, ModeChoice};
use rankline_coordinator::CoordinatorConfig;
use rankline_proto::{CaptureRequest, CaptureSettings, ListAgentsRequest};
use rankline_simserver::{DisaggregationMode, GroupConfig, SimServer, SimServerConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long the demo waits for its coordinator to save its records.
const COORDINATOR_STOP_TIMEOUT: Duration = Duration::from_secs(15);

use super::capture::{start_and_follow, Outcome};
use crate::args::CoordinatorArg;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Everything runs in this process on 127.0.0.1; nothing is left running \
                        afterwards. Open the merged trace at https://ui.perfetto.dev (drag the \
                        file in) or with trace_processor."
)]
pub struct Args {
    /// Folder for everything the demo writes (captures, spool, merged trace).
    #[arg(long, default_value = "./rankline-demo")]
    out: PathBuf,
    /// Simulated TP ranks per server role.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    ranks: u32,
    /// PD disaggregation: a prefill and a decode server, each with --ranks ranks.
    #[arg(long)]
    pd: bool,
    /// How long the servers profile.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    duration: Duration,
}

/// One simulated server and the agent beside it.
struct Rank {
    role: Option<DisaggregationMode>,
    tp_rank: u32,
    host: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Absolute and without `./`, so every path the demo prints can be pasted.
    let out = std::path::absolute(&args.out)
        .with_context(|| format!("cannot resolve the demo folder {}", args.out.display()))?;
    std::fs::create_dir_all(&out)
        .with_context(|| format!("cannot create the demo folder {}", out.display()))?;
    let runtime = super::runtime()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut coordinator = None;
    let result = runtime.block_on(run_demo(&args, &out, stop_rx, &mut coordinator));
    crate::quiet_logs();
    stop_tx.send(true).ok();
    // The coordinator saves its last capture records as it stops: wait for
    // that, or a coordinator started later on this storage would resume the
    // capture from an older record. Servers and agents end with the runtime.
    if let Some(coordinator) = coordinator {
        runtime.block_on(async {
            tokio::time::timeout(COORDINATOR_STOP_TIMEOUT, coordinator)
                .await
                .ok()
        });
    }
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}

/// The embedded coordinator's task, awaited at the end.
type CoordinatorTask = tokio::task::JoinHandle<Result<(), rankline_coordinator::CoordinatorError>>;

async fn run_demo(
    args: &Args,
    out: &Path,
    stop: watch::Receiver<bool>,
    coordinator_task: &mut Option<CoordinatorTask>,
) -> anyhow::Result<ExitCode> {
    let storage = out.join("captures");
    let shutdown = move || {
        let mut stop = stop.clone();
        async move {
            stop.wait_for(|stopped| *stopped).await.ok();
        }
    };

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let coordinator_url = format!("http://{}", listener.local_addr()?);
    let coordinator = rankline_coordinator::Coordinator::new(CoordinatorConfig::new(
        storage.to_string_lossy().as_ref(),
    ))?;
    *coordinator_task = Some(tokio::spawn(coordinator.serve(listener, shutdown())));

    let roles: Vec<Option<DisaggregationMode>> = if args.pd {
        vec![
            Some(DisaggregationMode::Prefill),
            Some(DisaggregationMode::Decode),
        ]
    } else {
        vec![None]
    };
    let mut ranks = Vec::new();
    for role in roles {
        let mut group_addr = None;
        for tp_rank in 0..args.ranks {
            let prefix = role.map_or("host", DisaggregationMode::as_str);
            let rank = Rank {
                role,
                tp_rank,
                host: format!("{prefix}-tp{tp_rank}"),
            };
            let server_url = start_server(&rank, args.ranks, &mut group_addr, shutdown()).await?;
            start_agent(&rank, &server_url, &coordinator_url, out, shutdown());
            ranks.push(rank);
        }
    }
    println!(
        "rankline demo: coordinator at {coordinator_url}, {} simulated sglang-jax server(s) with \
         an agent each",
        ranks.len()
    );
    wait_for_agents(&coordinator_url, ranks.len()).await?;

    let profile_id = rankline_layout::generate_profile_id(rankline_proto::unix_now_ns());
    let request = CaptureRequest {
        profile_id: profile_id.to_string(),
        settings: Some(CaptureSettings {
            duration_ms: Some(args.duration.as_millis() as u64),
            ..Default::default()
        }),
        ..Default::default()
    };
    let coordinator = CoordinatorArg {
        coordinator: coordinator_url.clone(),
        security: Default::default(),
    };
    let outcome = start_and_follow(&coordinator, request, false).await?;
    if !matches!(
        outcome,
        Outcome::Finished(rankline_proto::CaptureStatus::Complete)
    ) {
        bail!("the demo capture did not complete; see the per-rank table above");
    }

    let capture_dir = storage.join(profile_id.as_str());
    let merged = out.join(format!("{profile_id}.pftrace"));
    println!("\nmerging {} ranks into one timeline ...", ranks.len());
    let options = rankline_merge::MergeOptions::new(
        vec![capture_dir.to_string_lossy().into_owned()],
        &merged,
    );
    let summary = tokio::task::spawn_blocking(move || rankline_merge::merge(&options))
        .await
        .context("the merge worker stopped")??;
    print!("{}", summary.render());
    let report_path = out.join(format!("{profile_id}-report.html"));
    let report_options = rankline_merge::MergeOptions::new(
        vec![capture_dir.to_string_lossy().into_owned()],
        &report_path,
    );
    let report = tokio::task::spawn_blocking(move || rankline_report::build(&report_options))
        .await
        .context("the report worker stopped")??;
    super::report::write_report(&report, &report_path)?;
    println!("\nreview: {}", report_path.display());
    println!(
        "\nDone. Everything is under {}:\n  capture: {}\n  merged:  {}\n\
         Merge it again, e.g. as Chrome JSON: rankline merge {} -o {}.json.gz\n\
         Open the xplanes in XProf / TensorBoard: rankline export-xprof {} --out {}",
        out.display(),
        capture_dir.display(),
        merged.display(),
        capture_dir.display(),
        out.join(profile_id.as_str()).display(),
        capture_dir.display(),
        out.join(format!("{profile_id}-xprof")).display(),
    );
    Ok(ExitCode::SUCCESS)
}

/// Starts one simulated server in this process; rank 0 of a group also
/// hosts the group's collective barrier, whose address the others get.
async fn start_server(
    rank: &Rank,
    group_size: u32,
    group_addr: &mut Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<String> {
    let config = SimServerConfig {
        hostname: rank.host.clone(),
        tp_size: group_size,
        tp_rank: rank.tp_rank,
        local_devices: Some(1),
        disaggregation_mode: rank.role,
        group: (group_size > 1).then(|| GroupConfig {
            addr: group_addr.clone().unwrap_or_else(|| "127.0.0.1:0".into()),
            size: group_size,
            rank: rank.tp_rank,
        }),
        ..SimServerConfig::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let server = SimServer::bind(config, listener)
        .await
        .context("cannot start a simulated server")?;
    if group_addr.is_none() {
        *group_addr = server.link_addr().map(|addr| addr.to_string());
    }
    let url = format!("http://{}", server.http_addr());
    tokio::spawn(server.run(shutdown));
    Ok(url)
}

fn start_agent(
    rank: &Rank,
    server_url: &str,
    coordinator_url: &str,
    out: &Path,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let config = AgentConfig {
        coordinator_url: coordinator_url.to_string(),
        server_url: server_url.to_string(),
        host: Some(rank.host.clone()),
        tp_rank: rank.tp_rank,
        mode: ModeChoice::Trigger,
        kind: KindChoice::SglangJax,
        spool: out.join("spool"),
        ..AgentConfig::default()
    };
    tokio::spawn(async move {
        if let Err(error) = Agent::run(config, shutdown).await {
            tracing::error!(%error, "a demo agent stopped");
        }
    });
}

async fn wait_for_agents(coordinator_url: &str, expected: usize) -> anyhow::Result<()> {
    let mut client = rankline_client::connect(coordinator_url).await?;
    for _ in 0..300 {
        let agents = client
            .list_agents(ListAgentsRequest {})
            .await?
            .into_inner()
            .agents;
        if agents.iter().filter(|a| a.connected).count() >= expected {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the demo agents did not connect to the embedded coordinator within 30 s")
}
