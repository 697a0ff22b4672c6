//! The rankline coordinator: the control plane between the CLI and the
//! agents.
//!
//! One gRPC listener serves both services of `rankline-proto`:
//! * `AgentLink`: every agent keeps a `Join` stream open (hello, heartbeats,
//!   rank updates up; welcome, start and stop commands down). The registry
//!   tracks each agent's liveness and clock estimate; an agent silent for
//!   `lost_after` is disconnected and its unfinished ranks become `lost`.
//! * `Control`: the CLI starts a capture (the same `StartCapture`, with one
//!   start instant a lead time ahead, pushed to every selected agent before
//!   anything awaits), follows it rank by rank, stops it, lists agents and
//!   captures. When every rank is final the coordinator writes
//!   `<profile_id>/manifest.json` through `rankline-storage`.
//!
//! Captures survive a restart: each has a JSON record (by default in the
//! capture storage under `.rankline-coordinator/captures/`, see
//! [`CoordinatorConfig::state_url`]) that a new coordinator reads before it
//! serves ([`Coordinator::restore`]), so finished captures are listed again
//! and running ones resume when their agents reconnect.
//!
//! ```no_run
//! # async fn run() -> Result<(), rankline_coordinator::CoordinatorError> {
//! let config = rankline_coordinator::CoordinatorConfig::new("./rankline-captures");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
//! rankline_coordinator::serve(config, listener, std::future::pending()).await
//! # }
//! ```
//!
//! The client side (connecting to `Control`, rendering its answers) is
//! `rankline-client`.

mod agent_link;
pub mod auth;
mod capture;
mod config;
mod control;
mod registry;
mod selection;
mod shared;
mod state;
mod validate;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rankline_proto::agent_link_server::AgentLinkServer;
use rankline_proto::control_server::ControlServer;
use rankline_storage::{Storage, StorageError};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

pub use auth::{AuthError, Security, ServerTls, TokenTable};
pub use config::CoordinatorConfig;
pub use selection::{parse_selectors, SelectError, Selection, SELECT_KEYS};
pub use state::RestoreReport;

use agent_link::AgentLinkService;
use auth::TokenRole;
use control::ControlService;
use shared::Shared;
use state::RecordStore;

/// How long open connections may take to close once the coordinator stops
/// (agents and watchers are told at once; this only bounds a peer that does
/// not hang up).
const CONNECTION_DRAIN_LIMIT: Duration = Duration::from_millis(500);

/// Why a coordinator could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("cannot open the capture storage: {0}")]
    Storage(#[from] StorageError),
    #[error("cannot open the state storage for capture records (--state): {0}")]
    StateStorage(#[source] StorageError),
    #[error(
        "cannot read the capture records in {location}: {source}. Starting without them would \
         drop the captures a previous coordinator was running; check that the storage is \
         reachable and start again (or give another --state to start afresh)"
    )]
    Restore {
        location: String,
        #[source]
        source: StorageError,
    },
    #[error("the coordinator's gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("cannot use the TLS certificate and key (--tls-cert, --tls-key): {0}")]
    Tls(#[source] tonic::transport::Error),
}

/// A coordinator ready to serve. Build it, optionally [`Coordinator::restore`],
/// then [`Coordinator::serve`].
pub struct Coordinator {
    shared: Arc<Shared>,
    restored: bool,
}

impl Coordinator {
    /// Opens the storages and prepares an empty registry.
    pub fn new(mut config: CoordinatorConfig) -> Result<Coordinator, CoordinatorError> {
        let storage = Storage::open(&config.storage_url)?;
        // Agents get the normalized form, so `./captures` means the same
        // folder to an agent started elsewhere on this machine.
        config.storage_url = storage.url().to_string();
        let records = RecordStore::open(config.state_url.as_deref(), &storage)
            .map_err(CoordinatorError::StateStorage)?;
        Ok(Coordinator {
            shared: Arc::new(Shared::new(config, storage, records)),
            restored: false,
        })
    }

    /// The normalized storage URL captures go to.
    pub fn storage_url(&self) -> &str {
        self.shared.storage.url()
    }

    /// Which tokens and TLS are on, for a person.
    pub fn security_summary(&self) -> String {
        self.shared.config.security.summary()
    }

    /// Where the capture records are kept, for a person.
    pub fn state_location(&self) -> String {
        self.shared.records.location()
    }

    /// Reads the capture records a previous coordinator left (once; `serve`
    /// does it when this was not called). Records that cannot be used are
    /// set aside or skipped, each with a warning in the report; storage that
    /// cannot be read is an error.
    pub async fn restore(&mut self) -> Result<RestoreReport, CoordinatorError> {
        if self.restored {
            return Ok(RestoreReport::default());
        }
        let report = self
            .shared
            .restore()
            .await
            .map_err(|source| CoordinatorError::Restore {
                location: self.shared.records.location(),
                source,
            })?;
        self.restored = true;
        Ok(report)
    }

    /// Serves `AgentLink` and `Control` on `listener` until `shutdown`
    /// resolves; then ends every agent stream and watcher and waits (10 s at
    /// most each) for manifests and capture records still being written.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), CoordinatorError> {
        self.restore().await?;
        let shared = self.shared;
        let sweeper = tokio::spawn(sweep_until_shutdown(Arc::clone(&shared)));
        let record_writer = tokio::spawn(Arc::clone(&shared).save_records_until_shutdown());
        let signal = {
            let shared = Arc::clone(&shared);
            async move {
                shutdown.await;
                tracing::info!("coordinator shutting down");
                shared.begin_shutdown();
            }
        };
        let security = &shared.config.security;
        warn_if_open(&listener, security);
        let mut server = Server::builder();
        if let Some(tls) = &security.tls {
            server = server
                .tls_config(tls.config())
                .map_err(CoordinatorError::Tls)?;
        }
        // Start commands are tiny and latency-critical: no Nagle delay.
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let served = server
            .add_service(AgentLinkServer::with_interceptor(
                AgentLinkService {
                    shared: Arc::clone(&shared),
                },
                security.gate(TokenRole::Agent),
            ))
            .add_service(ControlServer::with_interceptor(
                ControlService {
                    shared: Arc::clone(&shared),
                },
                security.gate(TokenRole::Operator),
            ))
            .serve_with_incoming_shutdown(incoming, signal);
        let served = tokio::select! {
            served = served => served,
            () = async {
                shared.shutting_down().await;
                tokio::time::sleep(CONNECTION_DRAIN_LIMIT).await;
            } => {
                tracing::warn!("connections still open {CONNECTION_DRAIN_LIMIT:?} after the shutdown began; stopping without them");
                Ok(())
            }
        };
        shared.begin_shutdown();
        let _ = sweeper.await;
        shared.finish_writes(record_writer).await;
        Ok(served?)
    }
}

/// Runs a coordinator with `config` on `listener` until `shutdown` resolves.
pub async fn serve(
    config: CoordinatorConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CoordinatorError> {
    Coordinator::new(config)?.serve(listener, shutdown).await
}

/// Warns when anyone beyond this machine can reach a coordinator that
/// asks for no credentials.
fn warn_if_open(listener: &TcpListener, security: &Security) {
    let Ok(address) = listener.local_addr() else {
        return;
    };
    if address.ip().is_loopback() || security.authenticates() {
        return;
    }
    tracing::warn!(
        %address,
        "listening beyond loopback without authentication: anyone who reaches this port can \
         list the agents, start and stop captures, or join as an agent. Give --token-file \
         (and --tls-cert/--tls-key, --tls-client-ca); see docs/SECURITY.md"
    );
}

/// Checks liveness and deadlines a few times per heartbeat interval.
async fn sweep_until_shutdown(shared: Arc<Shared>) {
    let mut ticks = tokio::time::interval(shared.config.sweep_interval());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shared.shutting_down() => return,
        }
        let ended = shared.registry().sweep(
            shared.config.lost_after(),
            shared.config.lost_after_restart(),
        );
        shared.settle_all(ended);
    }
}
