//! Wiring: binds the listeners, starts the link, the scheduler and the HTTP
//! server, and takes them all down when the shutdown future completes.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::config::{LinkRole, SimServerConfig};
use crate::events_log::EventsLog;
use crate::link::{spawn_hub, spawn_member};
use crate::scheduler::{Rendezvous, Request, Scheduler};
use crate::{http, SimError};

/// What the HTTP handlers and the scheduler share.
pub(crate) struct Shared {
    pub config: SimServerConfig,
    pub default_output_dir: PathBuf,
    /// `/profile_status`: a profile is armed, running or being written.
    pub profiling: AtomicBool,
    /// The scheduler died (`--emulate-start-step-hang`): every request hangs.
    pub crashed: AtomicBool,
    pub requests: mpsc::Sender<Request>,
    pub events_log: Option<EventsLog>,
    pub port: u16,
    pub shutdown: watch::Receiver<bool>,
}

/// A simulated server with its listeners bound, ready to [`run`](SimServer::run).
pub struct SimServer {
    config: SimServerConfig,
    http: TcpListener,
    http_addr: SocketAddr,
    hub: Option<(TcpListener, SocketAddr)>,
    events_log: Option<EventsLog>,
}

impl SimServer {
    /// Checks the config, and binds what this process listens on besides
    /// `http`: the barrier (and multi-host command channel) when it is rank 0
    /// of a group or node 0 of a multi-host server.
    pub async fn bind(config: SimServerConfig, http: TcpListener) -> Result<SimServer, SimError> {
        config.validate()?;
        let http_addr = http.local_addr()?;
        let hub = match config.link_role() {
            LinkRole::Hub { addr, .. } => {
                let listener = TcpListener::bind(&addr).await.map_err(|source| SimError::Io {
                    context: format!(
                        "binding the rank-0 link on {addr} (dist_init_addr / group_addr); choose a free HOST:PORT"
                    ),
                    source,
                })?;
                let local = listener.local_addr()?;
                Some((listener, local))
            }
            _ => None,
        };
        let events_log = match &config.events_log {
            Some(path) => Some(EventsLog::open(
                path,
                &config.hostname,
                config.node_rank,
                config.group.as_ref().map(|g| g.rank),
            )?),
            None => None,
        };
        Ok(SimServer {
            config,
            http,
            http_addr,
            hub,
            events_log,
        })
    }

    /// The HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The address the other ranks dial, when this process is rank 0 of a
    /// group or node 0 of a multi-host server.
    pub fn link_addr(&self) -> Option<SocketAddr> {
        self.hub.as_ref().map(|(_, addr)| *addr)
    }

    /// Serves until `shutdown` completes, then stops everything and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), SimError> {
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let (link, link_task) = match (self.config.link_role(), self.hub) {
            (LinkRole::Hub { size, .. }, Some((listener, addr))) => {
                tracing::info!(%addr, size, "rank 0 link listening");
                let (handle, task) = spawn_hub(listener, size, shutdown_rx.clone());
                (Rendezvous::Linked(handle), Some(task))
            }
            (LinkRole::Member { addr, size, rank }, _) => {
                let (handle, task) =
                    spawn_member(addr, rank, size, commands_tx, shutdown_rx.clone());
                (Rendezvous::Linked(handle), Some(task))
            }
            _ => (Rendezvous::Solo, None),
        };
        let (requests_tx, requests_rx) = mpsc::channel(64);
        let shared = Arc::new(Shared {
            default_output_dir: self.config.resolved_default_output_dir(),
            config: self.config,
            profiling: AtomicBool::new(false),
            crashed: AtomicBool::new(false),
            requests: requests_tx,
            events_log: self.events_log,
            port: self.http_addr.port(),
            shutdown: shutdown_rx.clone(),
        });
        let scheduler =
            tokio::spawn(Scheduler::new(shared.clone(), requests_rx, commands_rx, link).run());
        let mut stopping = shutdown_rx.clone();
        let serve = axum::serve(self.http, http::router(shared))
            .with_graceful_shutdown(async move {
                crate::stopped(&mut stopping).await;
            })
            .into_future();
        tokio::pin!(serve);
        let served = tokio::select! {
            served = &mut serve => served,
            _ = shutdown => {
                let _ = shutdown_tx.send(true);
                serve.await
            }
        };
        let _ = shutdown_tx.send(true);
        let _ = scheduler.await;
        if let Some(task) = link_task {
            let _ = task.await;
        }
        served.map_err(|source| SimError::Io {
            context: "serving HTTP".into(),
            source,
        })
    }
}

/// Runs a simulated server on `listener` until `shutdown` completes (rank 0
/// of a group or node 0 of a multi-host server binds its link address too).
pub async fn serve(
    config: SimServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SimError> {
    SimServer::bind(config, listener).await?.run(shutdown).await
}
