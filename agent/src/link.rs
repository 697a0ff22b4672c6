//! The agent's life line to the coordinator: `AgentLink.Join`, kept open
//! forever. A session sends the hello (with the captures still in flight),
//! heartbeats and rank updates, and takes commands; when it breaks the link
//! reconnects with exponential backoff and jitter.

use std::sync::Arc;
use std::time::Duration;

use rankline_proto::agent_link_client::AgentLinkClient;
use rankline_proto::{
    agent_message, coordinator_message, unix_now_ns, AgentHello, AgentMessage, Heartbeat,
    RankUpdate,
};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;

use crate::agent::Shared;
use crate::capture;
use rankline_proto::error_chain;
use rankline_proto::security::{refusal_advice, SecureChannel};
use rankline_storage::Backoff;

/// Heartbeat interval when the Welcome names none.
const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(1000);
/// Messages the outgoing stream may hold before the session counts as stuck.
const OUTBOX_DEPTH: usize = 256;
/// HTTP/2 pings find a coordinator that vanished without closing the connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// On shutdown, how long the last updates get to reach the coordinator.
const FAREWELL_GRACE: Duration = Duration::from_millis(500);

/// Why a session ended.
enum SessionEnd {
    ShutDown,
    /// Discovery changed who this agent is: say hello again at once.
    IdentityChanged,
    Broken {
        welcomed: bool,
        reason: String,
    },
}

/// Runs the link until shutdown.
pub(crate) async fn run(shared: Arc<Shared>, mut updates: mpsc::UnboundedReceiver<RankUpdate>) {
    let timing = &shared.config.timing;
    let mut backoff = Backoff::new(timing.reconnect_initial, timing.reconnect_max);
    let mut identity = shared.identity.subscribe();
    let mut failures: u32 = 0;
    loop {
        match session(&shared, &mut updates, &mut identity).await {
            SessionEnd::ShutDown => return,
            SessionEnd::IdentityChanged => backoff.reset(),
            SessionEnd::Broken { welcomed, reason } => {
                if welcomed {
                    backoff.reset();
                    failures = 0;
                }
                failures += 1;
                let delay = backoff.next_delay();
                // Say it loudly once, then quietly while the outage lasts;
                // a refusal (credentials, a taken rank) needs a person.
                if reason.starts_with("Join refused") && (failures == 1 || failures % 20 == 0) {
                    tracing::error!(
                        coordinator = %shared.config.coordinator_url,
                        attempt = failures,
                        "the coordinator refused this agent: {reason}; retrying in {delay:?}"
                    );
                } else if failures == 1 || failures % 20 == 0 {
                    tracing::warn!(
                        coordinator = %shared.config.coordinator_url,
                        attempt = failures,
                        "coordinator link down: {reason}; retrying in {delay:?} (captures in progress go on)"
                    );
                } else {
                    tracing::debug!(attempt = failures, "coordinator link down: {reason}");
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shared.stop_link.cancelled() => return,
                }
            }
        }
    }
}

async fn connect(shared: &Shared) -> Result<SecureChannel, String> {
    let timing = &shared.config.timing;
    let security = &shared.config.coordinator_security;
    let endpoint = security
        .endpoint(&shared.config.coordinator_url)
        .map_err(|e| format!("bad coordinator URL: {e}"))?
        .connect_timeout(timing.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    let channel = tokio::time::timeout(timing.connect_timeout, endpoint.connect())
        .await
        .map_err(|_| format!("no connection within {:?}", timing.connect_timeout))?
        .map_err(|e| error_chain(&e))?;
    Ok(security.wrap(channel))
}

/// Why the coordinator refused the join, with what to do when it is about
/// credentials.
fn refused(what: &str, status: &tonic::Status) -> String {
    match refusal_advice(status) {
        Some(advice) => format!("{what}: {advice}"),
        None => format!("{what}: {}", status.message()),
    }
}

async fn session(
    shared: &Arc<Shared>,
    updates: &mut mpsc::UnboundedReceiver<RankUpdate>,
    identity: &mut watch::Receiver<rankline_proto::AgentIdentity>,
) -> SessionEnd {
    let broken = |reason: String| SessionEnd::Broken {
        welcomed: false,
        reason,
    };
    let channel = tokio::select! {
        connected = connect(shared) => match connected {
            Ok(channel) => channel,
            Err(reason) => return broken(reason),
        },
        _ = shared.stop_link.cancelled() => return SessionEnd::ShutDown,
    };
    let mut client = AgentLinkClient::new(channel);

    // Updates queued during the outage are older than what the hello says.
    while updates.try_recv().is_ok() {}
    let hello = AgentHello {
        identity: Some(identity.borrow_and_update().clone()),
        in_flight: shared.book.in_flight(),
    };
    let (outbox, outgoing) = mpsc::channel(OUTBOX_DEPTH);
    let _ = outbox.try_send(message(agent_message::Kind::Hello(hello)));

    let welcome_timeout = shared.config.timing.welcome_timeout;
    let joined = tokio::time::timeout(welcome_timeout, async {
        let mut inbound = client
            .join(ReceiverStream::new(outgoing))
            .await
            .map_err(|status| refused("Join refused", &status))?
            .into_inner();
        match inbound.message().await {
            Ok(Some(first)) => match first.kind {
                Some(coordinator_message::Kind::Welcome(welcome)) => Ok((inbound, welcome)),
                _ => Err("the coordinator's first message was not a Welcome".to_string()),
            },
            Ok(None) => Err("the coordinator closed the stream before its Welcome".to_string()),
            Err(status) => Err(refused("Join refused", &status)),
        }
    });
    let (mut inbound, welcome) = tokio::select! {
        joined = joined => match joined {
            Ok(Ok(joined)) => joined,
            Ok(Err(reason)) => return broken(reason),
            Err(_) => return broken(format!("no Welcome within {welcome_timeout:?}")),
        },
        _ = shared.stop_link.cancelled() => return SessionEnd::ShutDown,
    };
    let mut heartbeat_every = heartbeat_interval(welcome.heartbeat_interval_ms);
    tracing::info!(
        coordinator = %shared.config.coordinator_url,
        coordinator_id = %welcome.coordinator_id,
        "joined the coordinator"
    );

    shared.clock.set_client(Some(client.clone()));
    let connect_burst = tokio::spawn({
        let shared = Arc::clone(shared);
        async move { shared.clock.burst(None).await }
    });

    let idle_every = shared.config.timing.idle_clock_interval;
    let mut heartbeats = tokio::time::interval(heartbeat_every);
    heartbeats.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut idle_bursts = tokio::time::interval_at(Instant::now() + idle_every, idle_every);
    idle_bursts.set_missed_tick_behavior(MissedTickBehavior::Delay);

    let end = loop {
        let sent = tokio::select! {
            _ = shared.stop_link.cancelled() => break SessionEnd::ShutDown,
            changed = identity.changed() => {
                if changed.is_err() {
                    break SessionEnd::ShutDown;
                }
                tracing::info!("identity changed: joining again with the new one");
                break SessionEnd::IdentityChanged;
            }
            received = inbound.message() => match received {
                Ok(Some(command)) => {
                    if let Some(interval) = handle(shared, command) {
                        heartbeat_every = interval;
                        heartbeats = tokio::time::interval(heartbeat_every);
                        heartbeats.set_missed_tick_behavior(MissedTickBehavior::Delay);
                    }
                    Ok(())
                }
                Ok(None) => break SessionEnd::Broken {
                    welcomed: true,
                    reason: "the coordinator closed the stream".to_string(),
                },
                Err(status) => break SessionEnd::Broken {
                    welcomed: true,
                    reason: refused("stream broke", &status),
                },
            },
            Some(update) = updates.recv() => {
                outbox.try_send(message(agent_message::Kind::Update(update)))
            }
            _ = heartbeats.tick() => {
                outbox.try_send(message(agent_message::Kind::Heartbeat(Heartbeat {
                    sent_at_unix_ns: unix_now_ns(),
                    clock: shared.clock.estimate(),
                    active_profile_id: shared.book.active_id(),
                })))
            }
            _ = idle_bursts.tick() => {
                // A capture takes its own bursts around start and stop.
                if shared.book.active_id().is_empty() {
                    let shared = Arc::clone(shared);
                    tokio::spawn(async move { shared.clock.burst(None).await });
                }
                Ok(())
            }
        };
        if sent.is_err() {
            break SessionEnd::Broken {
                welcomed: true,
                reason: "the coordinator stopped reading this agent's messages".to_string(),
            };
        }
    };
    shared.clock.set_client(None);
    connect_burst.abort();
    if matches!(end, SessionEnd::ShutDown) {
        farewell(updates, outbox, &mut inbound).await;
    }
    end
}

/// Sends what is still queued, closes the stream and gives the coordinator
/// a moment to take it all.
async fn farewell(
    updates: &mut mpsc::UnboundedReceiver<RankUpdate>,
    outbox: mpsc::Sender<AgentMessage>,
    inbound: &mut tonic::Streaming<rankline_proto::CoordinatorMessage>,
) {
    while let Ok(update) = updates.try_recv() {
        let _ = outbox.try_send(message(agent_message::Kind::Update(update)));
    }
    drop(outbox);
    let _ = tokio::time::timeout(FAREWELL_GRACE, async {
        while let Ok(Some(_)) = inbound.message().await {}
    })
    .await;
}

/// Acts on one coordinator message; returns a new heartbeat interval when
/// the coordinator sent another Welcome.
fn handle(shared: &Arc<Shared>, command: rankline_proto::CoordinatorMessage) -> Option<Duration> {
    match command.kind? {
        coordinator_message::Kind::Welcome(welcome) => {
            Some(heartbeat_interval(welcome.heartbeat_interval_ms))
        }
        coordinator_message::Kind::Start(start) => {
            tracing::info!(profile_id = %start.profile_id, "start command");
            capture::start(shared, start);
            None
        }
        coordinator_message::Kind::Stop(stop) => {
            if !shared.book.stop(&stop.profile_id) {
                tracing::debug!(profile_id = %stop.profile_id, "stop for a capture that is not running here");
            }
            None
        }
    }
}

fn heartbeat_interval(ms: u32) -> Duration {
    if ms == 0 {
        DEFAULT_HEARTBEAT
    } else {
        Duration::from_millis(u64::from(ms))
    }
}

fn message(kind: agent_message::Kind) -> AgentMessage {
    AgentMessage { kind: Some(kind) }
}
