//! The link between the processes of one deployment: a TCP barrier that
//! makes their collectives rendezvous for real, and, within a multi-host
//! server, the channel node 0 broadcasts profiling commands on.
//!
//! Rank 0 (the hub) listens; ranks >= 1 dial it, retrying until it is up,
//! and reconnect if it goes away. Each step every rank sends `arrive`; when
//! all `size` ranks have arrived the hub sends each member `release` with
//! the round number, then releases itself. Each process stamps the
//! collective's end on its own wall clock the moment the release reaches it,
//! so the ends coincide in real time whatever each clock says.
//!
//! Messages are JSON lines; the sockets are `TCP_NODELAY` to keep the
//! release skew at loopback/network latency.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Duration;

use crate::scheduler::StartParams;
use crate::unix_now_ns;

/// A profiling command node 0 broadcasts to the other nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Command {
    Start { params: StartParams },
    Stop,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Wire {
    Hello {
        rank: u32,
        size: u32,
    },
    Arrive,
    Release {
        round: u64,
        #[serde(default)]
        mono_ns: i64,
    },
    Command {
        command: Command,
    },
    Reject {
        reason: String,
    },
}

/// The end of one collective round, stamped on this process's clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Release {
    pub round: u64,
    pub unix_ns: i64,
}

/// What the scheduler holds to take part in the barrier.
pub(crate) struct LinkHandle {
    arrive: mpsc::UnboundedSender<oneshot::Sender<Release>>,
    broadcast: mpsc::UnboundedSender<Command>,
}

impl LinkHandle {
    /// Announces this process at the barrier; the receiver completes on release.
    pub(crate) fn arrive(&self) -> oneshot::Receiver<Release> {
        let (tx, rx) = oneshot::channel();
        let _ = self.arrive.send(tx);
        rx
    }

    /// Sends a command to every connected member (hub only; members ignore it).
    pub(crate) fn broadcast(&self, command: Command) {
        let _ = self.broadcast.send(command);
    }
}

/// Sends one JSON line.
async fn send(writer: &mut OwnedWriteHalf, message: &Wire) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    line.push(b'\n');
    writer.write_all(&line).await
}

enum HubEvent {
    Hello {
        connection: u64,
        rank: u32,
        size: u32,
        outbox: mpsc::UnboundedSender<Wire>,
    },
    Arrive {
        connection: u64,
        rank: u32,
    },
    Gone {
        connection: u64,
        rank: u32,
    },
}

/// Starts the hub on an already bound listener.
pub(crate) fn spawn_hub(
    listener: TcpListener,
    size: u32,
    shutdown: watch::Receiver<bool>,
) -> (LinkHandle, JoinHandle<()>) {
    let (arrive_tx, arrive_rx) = mpsc::unbounded_channel();
    let (broadcast_tx, broadcast_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(run_hub(listener, size, arrive_rx, broadcast_rx, shutdown));
    let handle = LinkHandle {
        arrive: arrive_tx,
        broadcast: broadcast_tx,
    };
    (handle, task)
}

struct Member {
    connection: u64,
    outbox: mpsc::UnboundedSender<Wire>,
}

async fn run_hub(
    listener: TcpListener,
    size: u32,
    mut arrive_rx: mpsc::UnboundedReceiver<oneshot::Sender<Release>>,
    mut broadcast_rx: mpsc::UnboundedReceiver<Command>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let mut members: HashMap<u32, Member> = HashMap::new();
    let mut arrived: HashSet<u32> = HashSet::new();
    let mut local: Option<oneshot::Sender<Release>> = None;
    let mut round = 0u64;
    let mut next_connection = 0u64;
    // Dropped (aborting every connection) when the hub stops.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = crate::stopped(&mut shutdown) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    next_connection += 1;
                    tracing::debug!(%peer, "link: peer connected");
                    connections.spawn(serve_member(stream, next_connection, events_tx.clone()));
                }
                Err(error) => tracing::warn!(%error, "link: accept failed"),
            },
            Some(event) = events_rx.recv() => match event {
                HubEvent::Hello { connection, rank, size: their_size, outbox } => {
                    let reason = if their_size != size || rank == 0 || rank >= size {
                        Some(format!(
                            "rank {rank} of {their_size} does not fit this group of {size} (ranks 1..{size} join rank 0)"
                        ))
                    } else if members.contains_key(&rank) {
                        // Two processes claiming one rank would starve one of
                        // them silently; the newcomer retries until the
                        // first one is gone.
                        Some(format!("rank {rank} is already connected; is a process left over?"))
                    } else {
                        None
                    };
                    if let Some(reason) = reason {
                        tracing::error!("link: rejected a peer: {reason}");
                        let _ = outbox.send(Wire::Reject { reason });
                        continue;
                    }
                    tracing::info!(rank, "link: rank joined");
                    arrived.remove(&rank);
                    members.insert(rank, Member { connection, outbox });
                }
                HubEvent::Arrive { connection, rank } => {
                    if members.get(&rank).is_some_and(|m| m.connection == connection) {
                        arrived.insert(rank);
                    }
                }
                HubEvent::Gone { connection, rank } => {
                    if members.get(&rank).is_some_and(|m| m.connection == connection) {
                        tracing::warn!(rank, "link: rank left; collectives wait for it");
                        members.remove(&rank);
                        arrived.remove(&rank);
                    }
                }
            },
            Some(waiter) = arrive_rx.recv() => local = Some(waiter),
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            Some(command) = broadcast_rx.recv() => {
                for member in members.values() {
                    let _ = member.outbox.send(Wire::Command { command: command.clone() });
                }
            }
        }
        if local.is_some() && arrived.len() as u32 + 1 == size {
            round += 1;
            let release_mono = mono_now_ns();
            for rank in arrived.drain() {
                if let Some(member) = members.get(&rank) {
                    let _ = member.outbox.send(Wire::Release {
                        round,
                        mono_ns: release_mono,
                    });
                }
            }
            let unix_ns = unix_now_ns() - (mono_now_ns() - release_mono);
            if let Some(waiter) = local.take() {
                let _ = waiter.send(Release { round, unix_ns });
            }
        }
    }
}

/// One member's connection, on the hub side.
async fn serve_member(stream: TcpStream, connection: u64, events: mpsc::UnboundedSender<HubEvent>) {
    let _ = stream.set_nodelay(true);
    let (reader, mut writer) = stream.into_split();
    let mut lines = BufReader::new(reader).lines();
    let (outbox, mut outbox_rx) = mpsc::unbounded_channel::<Wire>();
    let writer_task = tokio::spawn(async move {
        while let Some(message) = outbox_rx.recv().await {
            let reject = matches!(message, Wire::Reject { .. });
            if send(&mut writer, &message).await.is_err() || reject {
                break;
            }
        }
    });
    let mut rank = None;
    while let Ok(Some(line)) = lines.next_line().await {
        match serde_json::from_str::<Wire>(&line) {
            Ok(Wire::Hello { rank: r, size }) => {
                rank = Some(r);
                let outbox = outbox.clone();
                let _ = events.send(HubEvent::Hello {
                    connection,
                    rank: r,
                    size,
                    outbox,
                });
            }
            Ok(Wire::Arrive) => {
                if let Some(rank) = rank {
                    let _ = events.send(HubEvent::Arrive { connection, rank });
                }
            }
            Ok(other) => tracing::debug!(?other, "link: unexpected message from a member"),
            Err(error) => tracing::warn!(%error, "link: unreadable message from a member"),
        }
    }
    if let Some(rank) = rank {
        let _ = events.send(HubEvent::Gone { connection, rank });
    }
    drop(outbox);
    let _ = writer_task.await;
}

/// Starts a member that dials `addr`; commands from the hub go to `commands`.
pub(crate) fn spawn_member(
    addr: String,
    rank: u32,
    size: u32,
    commands: mpsc::UnboundedSender<Command>,
    shutdown: watch::Receiver<bool>,
) -> (LinkHandle, JoinHandle<()>) {
    let (arrive_tx, arrive_rx) = mpsc::unbounded_channel();
    let (broadcast_tx, _) = mpsc::unbounded_channel();
    let task = tokio::spawn(run_member(addr, rank, size, arrive_rx, commands, shutdown));
    let handle = LinkHandle {
        arrive: arrive_tx,
        broadcast: broadcast_tx,
    };
    (handle, task)
}

const FIRST_RETRY: Duration = Duration::from_millis(50);
const LAST_RETRY: Duration = Duration::from_secs(1);

async fn run_member(
    addr: String,
    rank: u32,
    size: u32,
    mut arrive_rx: mpsc::UnboundedReceiver<oneshot::Sender<Release>>,
    commands: mpsc::UnboundedSender<Command>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut waiter: Option<oneshot::Sender<Release>> = None;
    let mut retry = FIRST_RETRY;
    let mut warned = false;
    loop {
        let stream = tokio::select! {
            _ = crate::stopped(&mut shutdown) => return,
            connected = TcpStream::connect(&addr) => connected,
        };
        let stream = match stream {
            Ok(stream) => stream,
            Err(error) => {
                if !warned {
                    tracing::info!(%addr, %error, "link: rank 0 not reachable yet; retrying");
                    warned = true;
                }
                tokio::select! {
                    _ = crate::stopped(&mut shutdown) => return,
                    _ = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(LAST_RETRY);
                continue;
            }
        };
        tracing::info!(%addr, rank, "link: connected to rank 0");
        retry = FIRST_RETRY;
        warned = false;
        let _ = stream.set_nodelay(true);
        let (reader, mut writer) = stream.into_split();
        let mut lines = BufReader::new(reader).lines();
        let mut ok = send(&mut writer, &Wire::Hello { rank, size }).await.is_ok();
        if ok && waiter.is_some() {
            ok = send(&mut writer, &Wire::Arrive).await.is_ok();
        }
        while ok {
            tokio::select! {
                _ = crate::stopped(&mut shutdown) => return,
                next = arrive_rx.recv() => match next {
                    Some(next) => {
                        waiter = Some(next);
                        ok = send(&mut writer, &Wire::Arrive).await.is_ok();
                    }
                    None => return,
                },
                line = lines.next_line() => {
                    let released_at = unix_now_ns();
                    match line {
                        Ok(Some(line)) => match serde_json::from_str::<Wire>(&line) {
                            Ok(Wire::Release { round, mono_ns }) => {
                                if let Some(waiter) = waiter.take() {
                                    let unix_ns = released_at - (mono_now_ns() - mono_ns);
                                    let _ = waiter.send(Release { round, unix_ns });
                                }
                            }
                            Ok(Wire::Command { command }) => {
                                let _ = commands.send(command);
                            }
                            Ok(Wire::Reject { reason }) => {
                                tracing::error!("link: rank 0 rejected this process: {reason}");
                                retry = LAST_RETRY;
                                ok = false;
                            }
                            Ok(other) => tracing::debug!(?other, "link: unexpected message from rank 0"),
                            Err(error) => tracing::warn!(%error, "link: unreadable message from rank 0"),
                        },
                        _ => {
                            tracing::warn!(%addr, "link: lost rank 0; reconnecting");
                            ok = false;
                        }
                    }
                }
            }
        }
        tokio::select! {
            _ = crate::stopped(&mut shutdown) => return,
            _ = tokio::time::sleep(retry) => {}
        }
    }
}

/// `CLOCK_MONOTONIC` in ns. Every process on a machine shares it and
/// `faketime` leaves it alone (FAKETIME_DONT_FAKE_MONOTONIC), so the barrier
/// sends the release as one real instant and each member maps it onto its own
/// (possibly shifted) wall clock: the collective really ends at the same
/// instant everywhere, however late each member reads the message.
fn mono_now_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}
