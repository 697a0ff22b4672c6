//! `rankline coordinator`: run the control plane that agents and the CLI
//! connect to, until Ctrl-C or SIGTERM.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rankline_coordinator::{Coordinator, CoordinatorConfig, Security, ServerTls, TokenTable};

use crate::args::TlsIdentityArgs;
use crate::signals::shutdown_requested;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Prints `listening on http://ADDR` (https:// with --tls-cert) on stdout once \
                  bound; agents take that URL as --coordinator, and so do `rankline capture`, \
                  `agents`, `captures`. Securing it (tokens, TLS, mutual TLS): docs/SECURITY.md."
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

    /// The tokens this coordinator accepts, one per line: `NAME ROLE TOKEN`
    /// (ROLE: agent, operator, or agent,operator; `#` comments). Agents need
    /// an agent token, the CLI an operator token. The file must not be
    /// world-readable. [default: no tokens; anyone who reaches the port]
    #[arg(
        long,
        env = "RANKLINE_COORDINATOR_TOKEN_FILE",
        value_name = "PATH",
        help_heading = "Security"
    )]
    token_file: Option<PathBuf>,

    #[command(flatten, next_help_heading = "Security")]
    identity: TlsIdentityArgs,

    /// Mutual TLS: agents must present a certificate signed by this CA
    /// (PEM) whose CN or a SAN is the agent id they claim. Without
    /// --token-file the CLI must present one too.
    #[arg(
        long,
        env = "RANKLINE_TLS_CLIENT_CA",
        value_name = "PEM",
        requires = "tls_cert",
        help_heading = "Security"
    )]
    tls_client_ca: Option<PathBuf>,
}

impl Args {
    /// The tokens and TLS settings, read now so a bad file fails at start.
    fn security(&self) -> anyhow::Result<Security> {
        let tokens = self
            .token_file
            .as_deref()
            .map(TokenTable::load)
            .transpose()
            .context("--token-file")?;
        let tls = match self.identity.pair() {
            Some((cert, key)) => Some(
                ServerTls::load(cert, key, self.tls_client_ca.as_deref())
                    .context("--tls-cert / --tls-key / --tls-client-ca")?,
            ),
            None => None,
        };
        Ok(Security {
            tokens: tokens.map(Arc::new),
            tls,
        })
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::runtime()?.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<ExitCode> {
    let mut config = CoordinatorConfig::new(args.storage.clone());
    config.heartbeat_interval = args.heartbeat_interval;
    config.lost_after_intervals = args.lost_after;
    config.state_url = args.state.clone();
    config.security = args.security()?;
    let scheme = config.security.scheme();
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
        security = %coordinator.security_summary(),
        "coordinator ready"
    );
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {scheme}://{address}")?;
    stdout.flush()?;
    coordinator.serve(listener, shutdown_requested()).await?;
    Ok(ExitCode::SUCCESS)
}
