//! The agent as a whole: checks its configuration, works out who it is
//! (flags, then what the server says), and runs the coordinator link, the
//! background discovery and the captures until shut down.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rankline_proto::AgentIdentity;
use thiserror::Error;
use tokio::sync::{oneshot, watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::book::CaptureBook;
use crate::claim::{self, FileClaim};
use crate::clock::ClockSync;

use crate::config::{AgentConfig, ModeChoice};
use crate::discovery::{resolve_identity, Discovered};
use crate::link;
use crate::server::ServerApi;
use crate::upload;

/// How long a shutdown waits for running captures to report their end.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long the first join waits for the server's first answer.
const FIRST_DISCOVERY_WAIT: Duration = Duration::from_secs(3);
/// First wait between discovery attempts while the server is down.
const DISCOVERY_RETRY_FIRST: Duration = Duration::from_millis(500);

/// Why an agent could not start.
#[derive(Debug, Error)]
pub enum AgentError {
    #[error("invalid --coordinator {url:?}: {reason}; expected e.g. http://10.0.0.1:7471")]
    CoordinatorUrl { url: String, reason: String },
    #[error("invalid --server {url:?}: {reason}; expected e.g. http://127.0.0.1:30000")]
    ServerUrl { url: String, reason: String },
    #[error("cannot create the spool folder {path}: {source}; pass a writable --spool")]
    Spool {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot tell this machine's host name ({0}); pass --host")]
    Host(String),
    #[error("refusing to start: {0}")]
    Claimed(String),
    #[error("cannot tell which ranks to serve: {0}")]
    Ranks(String),
}

/// What every part of a running agent shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: AgentConfig,
    /// The identity announced in hellos; discovery may change it.
    pub identity: watch::Sender<AgentIdentity>,
    pub server: ServerApi,
    pub clock: ClockSync,
    pub book: CaptureBook,
    /// Ends running captures (each reports `failed`) and uploads (their
    /// journals say `uploading`, so the next start resumes them).
    pub stop_captures: CancellationToken,
    /// The uploads in the background.
    pub uploads: TaskTracker,
    /// One upload at a time: memory stays bounded however many wait.
    pub upload_slot: Semaphore,
    /// Ends the link, after the captures' last updates are queued.
    pub stop_link: CancellationToken,
    /// This rank's claim on its server files, or why it has none (a
    /// capture then fails with that reason).
    pub claim: Mutex<Result<FileClaim, String>>,
}

impl Shared {
    /// Takes the claim of the current identity's files, keeping the one
    /// held when it is the same; returns why it could not.
    pub(crate) fn refresh_claim(&self) -> Result<(), String> {
        let identity = self.identity.borrow().clone();
        let wanted = claim::claim_path(&self.config.spool, &identity);
        let mut held = self.claim.lock().unwrap_or_else(|e| e.into_inner());
        if held.as_ref().is_ok_and(|claim| claim.path() == wanted) {
            return Ok(());
        }
        // The old claim goes first: the new one may be the same file.
        *held = Err(String::new());
        *held = claim::claim(&self.config.spool, &identity);
        held.as_ref().map(drop).map_err(Clone::clone)
    }

    /// Why this rank holds no claim on its files, if it holds none.
    pub(crate) fn claim_problem(&self) -> Option<String> {
        self.claim
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .err()
            .cloned()
    }
}

/// A rankline agent.
pub struct Agent;

impl Agent {
    /// Runs an agent until `shutdown` resolves. Returns an error only for a
    /// configuration it cannot work with; an absent server or coordinator is
    /// waited for, not an error.
    pub async fn run(
        config: AgentConfig,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), AgentError> {
        let (shared, updates) = prepare(config)?;
        let (first_answer, first_answered) = oneshot::channel();
        let discovery = tokio::spawn(discover_until_found(Arc::clone(&shared), first_answer));
        // The first hello should already say what the server told: a change
        // of identity later means joining again, and a command sent to the
        // old stream in that moment would be lost.
        let _ = tokio::time::timeout(FIRST_DISCOVERY_WAIT, first_answered).await;
        if let Err(reason) = shared.refresh_claim() {
            discovery.abort();
            return Err(AgentError::Claimed(reason));
        }
        // Before the first hello, so it reports what a killed predecessor left.
        upload::resume(&shared);
        let link = tokio::spawn(link::run(Arc::clone(&shared), updates));

        shutdown.await;
        tracing::info!("shutting down");
        discovery.abort();
        shared.stop_captures.cancel();
        // A capture's last update must be queued before the link says goodbye.
        shared.uploads.close();
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while !shared.book.active_id().is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            shared.uploads.wait().await;
        })
        .await;
        shared.stop_link.cancel();
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, link).await;
        // Tasks still holding `shared` must not keep the files claimed.
        *shared.claim.lock().unwrap_or_else(|e| e.into_inner()) =
            Err("the agent stopped".to_string());
        Ok(())
    }
}

fn prepare(
    mut config: AgentConfig,
) -> Result<
    (
        Arc<Shared>,
        tokio::sync::mpsc::UnboundedReceiver<rankline_proto::RankUpdate>,
    ),
    AgentError,
> {
    check_url(&config.coordinator_url).map_err(|reason| AgentError::CoordinatorUrl {
        url: config.coordinator_url.clone(),
        reason,
    })?;
    // Also refuses an http:// URL when TLS settings were given.
    config
        .coordinator_security
        .endpoint(&config.coordinator_url)
        .map_err(|e| AgentError::CoordinatorUrl {
            url: config.coordinator_url.clone(),
            reason: e.to_string(),
        })?;
    check_url(&config.server_url).map_err(|reason| AgentError::ServerUrl {
        url: config.server_url.clone(),
        reason,
    })?;
    // The output folder string must be the same on every host of a server,
    // so a relative --spool is made absolute here, once.
    if config.spool.is_relative() {
        let cwd = std::env::current_dir().map_err(|source| AgentError::Spool {
            path: config.spool.clone(),
            source,
        })?;
        config.spool = cwd.join(&config.spool);
    }
    let captures = config.spool.join("captures");
    std::fs::create_dir_all(&captures).map_err(|source| AgentError::Spool {
        path: captures,
        source,
    })?;
    let host = match config.host.clone() {
        Some(host) => host,
        None => gethostname::gethostname()
            .into_string()
            .map_err(|raw| AgentError::Host(format!("not UTF-8: {raw:?}")))?,
    };
    if host.is_empty() {
        return Err(AgentError::Host("it is empty".to_string()));
    }
    let timing = &config.timing;
    let server = server_api(&config)?;
    let clock = ClockSync::new(timing.clock_burst_probes, timing.clock_probe_timeout);
    let identity = resolve_identity(&config, &host, None);
    let (book, updates) = CaptureBook::new();
    let shared = Shared {
        config,
        identity: watch::Sender::new(identity),
        server,
        clock,
        book,
        stop_captures: CancellationToken::new(),
        uploads: TaskTracker::new(),
        upload_slot: Semaphore::new(1),
        stop_link: CancellationToken::new(),
        claim: Mutex::new(Err("the files are not claimed yet".to_string())),
    };
    log_identity(&shared.identity.borrow(), "starting");
    Ok((Arc::new(shared), updates))
}

/// The client of the server the config names.
pub(crate) fn server_api(config: &AgentConfig) -> Result<ServerApi, AgentError> {
    let timing = &config.timing;
    ServerApi::new(
        &config.server_url,
        timing.connect_timeout,
        timing.server_request_timeout,
        timing.stop_request_timeout,
        config.server_api_key.clone(),
    )
    .map_err(|e| AgentError::ServerUrl {
        url: config.server_url.clone(),
        reason: e.to_string(),
    })
}

fn check_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
    if parsed.scheme() != "http" && parsed.scheme() != "https" {
        return Err(format!("scheme {:?} is not http or https", parsed.scheme()));
    }
    if parsed.host_str().is_none() {
        return Err("no host".to_string());
    }
    Ok(())
}

fn log_identity(identity: &AgentIdentity, what: &str) {
    tracing::info!(
        agent_id = %identity.agent_id,
        host = %identity.host,
        role = identity.role().word(),
        worker = identity.worker,
        tp = identity.tp_rank,
        ep = identity.ep_rank,
        mode = if identity.trigger { "trigger" } else { "collect" },
        kind = identity.server_kind().word(),
        server = %identity.server_url,
        "{what}"
    );
}

/// Asks the server who it is until it answers, then updates the identity
/// (the link says hello again when it changes). A collect-only agent never
/// calls the server, so it skips this.
/// `first_answer` fires after the first attempt, whatever its outcome.
async fn discover_until_found(shared: Arc<Shared>, first_answer: oneshot::Sender<()>) {
    let mut first_answer = Some(first_answer);
    if shared.config.mode == ModeChoice::Collect {
        return;
    }
    let mut wait = DISCOVERY_RETRY_FIRST;
    let mut attempts: u32 = 0;
    loop {
        let outcome = shared.server.discover().await;
        if let Ok(discovered) = &outcome {
            // Before the first hello waits no more: it should carry this.
            apply_discovery(&shared, discovered);
        }
        if let Some(first) = first_answer.take() {
            let _ = first.send(());
        }
        match outcome {
            Ok(_) => return,
            Err(error) => {
                attempts += 1;
                if attempts == 1 {
                    tracing::warn!(
                        "the server is not answering yet ({error}); the agent keeps asking in the background"
                    );
                } else {
                    tracing::debug!(%error, "server discovery failed");
                }
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(shared.config.timing.discovery_retry_max);
    }
}

fn apply_discovery(shared: &Arc<Shared>, discovered: &Discovered) {
    tracing::info!(server = %shared.config.server_url, "discovered: {discovered}");
    let host = shared.identity.borrow().host.clone();
    let identity = resolve_identity(&shared.config, &host, Some(discovered));
    let changed = shared.identity.send_if_modified(|current| {
        if *current == identity {
            false
        } else {
            *current = identity;
            true
        }
    });
    if changed {
        log_identity(&shared.identity.borrow(), "identity after discovery");
        if let Err(reason) = shared.refresh_claim() {
            tracing::error!("{reason}; captures on this rank fail until that is fixed");
        }
        // The journals of a previous run live under the agent's id.
        upload::resume(shared);
    }
}
