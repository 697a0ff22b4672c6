//! `rankline coordinator`: run the control plane that agents and the CLI
//! connect to, until Ctrl-C or SIGTERM.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use rankline_coordinator::{Coordinator, CoordinatorConfig};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Prints `listening on http://ADDR` on stdout once bound; agents take that \
                        URL as --coordinator, and so do `rankline capture`, `agents`, `captures`."
)]
pub struct Args {
    /// Address for agents and the CLI (gRPC). Port 0 picks a free port.
    #[arg(long, env = "RANKLINE_LISTEN", default_value = "127.0.0.1:7471")]
    listen: String,

    /// Where captures are stored: a folder, file:///abs, s3://bucket/prefix,
    /// gs://bucket/prefix or az://container/prefix. Agents upload there too.
    #[arg(long, env = "RANKLINE_STORAGE", default_value = "./rankline-captures")]
    storage: String,

    /// Where the coordinator keeps its capture records, so running and
    /// finished captures survive a restart: a folder or a URL like --storage.
    /// Two coordinators must not share one. [default: inside --storage, under
    /// .rankline-coordinator/, so a coordinator started on another machine
    /// with the same storage resumes too]
    #[arg(long, env = "RANKLINE_STATE", value_name = "URL")]
    state: Option<String>,

    /// How often agents must send a heartbeat.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    heartbeat_interval: Duration,

    /// Heartbeat intervals an agent may miss before it is disconnected and
    /// its unfinished ranks become `lost`.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    lost_after: u32,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::runtime()?.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<ExitCode> {
    let mut config = CoordinatorConfig::new(args.storage.clone());
    config.heartbeat_interval = args.heartbeat_interval;
    config.lost_after_intervals = args.lost_after;
    config.state_url = args.state.clone();
    let mut coordinator = Coordinator::new(config)
        .with_context(|| format!("cannot use --storage {}", args.storage))?;
    // Before listening, so agents that reconnect find their captures.
    coordinator.restore().await?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}; is another coordinator running there? Choose another \
                 address with --listen (port 0 picks a free one)",
                args.listen
            )
        })?;
    let address = listener.local_addr()?;
    tracing::info!(
        storage = %coordinator.storage_url(),
        records = %coordinator.state_location(),
        "coordinator ready"
    );
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on http://{address}")?;
    stdout.flush()?;
    coordinator.serve(listener, stop_requested()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on Ctrl-C, or on SIGTERM where there is one (systemd, Kubernetes).
async fn stop_requested() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    () = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => interrupt.await,
        }
    }
    #[cfg(not(unix))]
    interrupt.await;
}
