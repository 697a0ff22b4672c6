//! One capture on one rank, from `StartCapture` to `ok` or `failed`, as
//! ARCHITECTURE.md "A capture, rank by rank" lays out: armed → start at the
//! common instant → stop (duration, num_steps or a StopCapture) → wait for
//! complete files. Then the journal holds the files and the sidecar, and
//! [`crate::upload`] stores them in the background, past the capture's
//! deadline if storage is down, while the agent takes the next capture.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rankline_layout::{
    FileKind, ObjectKind, ProfileId, RankCoords, RankIdentity, RankKey, Sidecar, SIDECAR_FORMAT,
};
use rankline_proto::{
    unix_now_ns, AgentIdentity, CaptureSettings, RankState, RankUpdate, ServerKind, StartCapture,
};
use thiserror::Error;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::agent::Shared;
use crate::book::Refusal;
use crate::clock::BurstEstimate;
use crate::files::{ForeignFilesCheck, FoundFile, RankFilesSpec, Scan, StabilityCheck};
use crate::server::{start_body, ProfileStatus, ServerError, StopOutcome};
use crate::spool::{self, CaptureInstants, CaptureRecord, Journal, JournalFile, JOURNAL_FORMAT};
use crate::time_base::{self, TraceTimes};
use crate::upload;

/// The last stretch before the start instant is slept on a blocking thread,
/// whose wake-up is far more precise than the async timer's millisecond.
const PRECISE_SLEEP_WINDOW: Duration = Duration::from_millis(2);
/// Clock probing stops this long before the start instant.
const PROBE_MARGIN: Duration = Duration::from_millis(50);
/// uvicorn drops an idle keep-alive connection after 5 s; warm it closer than that.
const WARM_BEFORE_START: Duration = Duration::from_secs(2);
/// Consecutive failed `/profile_status` polls that mean the server is gone.
const STATUS_FAILURES_TOLERATED: u32 = 3;
/// With less free space than this in the spool, files that stop short of
/// complete mean the server could not write them.
const SPOOL_FULL_BELOW: u64 = 1 << 20;
/// Polls the spool must stay full, with the files unchanged, before the
/// rank fails for it.
const FULL_POLLS: u32 = 3;

/// Why a capture failed; each message tells the user what to do.
#[derive(Debug, Error)]
pub enum CaptureError {
    #[error(
        "cannot use the spool folder {path}: {source}; check --spool (the agent must be able to write there)"
    )]
    Spool { path: PathBuf, source: io::Error },
    #[error(
        "the spool's file system is full: {what}; {available} free on the file system of {spool}. Free space there (the agent deletes captures whose upload it verified beyond --keep-captures / --keep-bytes; files of failed captures stay until you delete them) or give the agent a --spool on a bigger disk, then capture again"
    )]
    SpoolFull {
        what: String,
        available: String,
        spool: PathBuf,
    },
    #[error(
        "the server wrote only files that are not this rank's into {dir}: found {found}; this rank expects {expected}; {advice}"
    )]
    ForeignFiles {
        dir: PathBuf,
        found: String,
        expected: String,
        advice: String,
    },
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(
        "the server at {url} answered POST /start_profile with 500: a profile is probably already running on that server: call {url}/stop_profile or wait for it to end, then capture again (the server's log has the reason)"
    )]
    StartRefused { url: String },
    #[error(
        "the server at {url} has no /start_profile (404): this is a node >= 1 of a multi-host server (run its agent with --mode collect) or --server points at something else"
    )]
    StartMissing { url: String },
    #[error(
        "storing {what} in {url} failed: {reason}; the files stay in {kept}; check the storage URL, its credentials and free space"
    )]
    Storage {
        what: String,
        url: String,
        reason: String,
        kept: PathBuf,
    },
}

/// Takes a `StartCapture`: refuses it (busy, bad id), re-sends the state of
/// one already known, or runs it in its own task.
pub(crate) fn start(shared: &Arc<Shared>, command: StartCapture) {
    let profile_id = match ProfileId::parse(command.profile_id.as_str()) {
        Ok(profile_id) => profile_id,
        Err(error) => {
            shared.book.publish(rank_update(
                &command.profile_id,
                RankState::Failed,
                format!("refused: {error}"),
            ));
            return;
        }
    };
    if let Some(reason) = shared.claim_problem() {
        if !shared.book.knows(&profile_id) {
            shared
                .book
                .publish(rank_update(&profile_id, RankState::Failed, reason));
        }
        return;
    }
    let stop = match shared.book.claim(&profile_id) {
        Ok(stop) => stop,
        Err(Refusal::Busy(running)) => {
            shared.book.publish(rank_update(
                &profile_id,
                RankState::Failed,
                format!(
                    "busy with {running}: this agent runs one capture at a time; wait for it to end or stop it (`rankline stop {running}`)"
                ),
            ));
            return;
        }
        Err(Refusal::Known(latest)) => {
            shared.book.resend(*latest);
            return;
        }
    };
    let run = CaptureRun::new(Arc::clone(shared), profile_id, command, stop);
    tokio::spawn(run.run());
}

/// A journal a restarted agent cannot go on from, and why.
pub(crate) type Unresumable = (Box<Journal>, String);

/// Goes on with a capture a killed predecessor left in `journal`, from the
/// state it records; `Err` gives the journal back with the reason it
/// cannot (the caller fails the rank with it).
pub(crate) fn resume(shared: &Arc<Shared>, journal: Journal) -> Result<(), Unresumable> {
    let profile_id = journal.record.profile_id.clone();
    let stop = match shared.book.claim(&profile_id) {
        Ok(stop) => stop,
        Err(Refusal::Busy(running)) => {
            return Err((
                Box::new(journal),
                format!("the agent was busy with {running} when it restarted"),
            ))
        }
        Err(Refusal::Known(_)) => return Ok(()),
    };
    match CaptureRun::resume(Arc::clone(shared), journal, stop) {
        Ok(run) => {
            tracing::info!(%profile_id, state = run.state.word(), "resuming the capture from its journal");
            tokio::spawn(run.run());
            Ok(())
        }
        Err(refused) => {
            shared.book.release(&profile_id);
            Err(refused)
        }
    }
}

pub(crate) fn rank_update(profile_id: &str, state: RankState, detail: String) -> RankUpdate {
    RankUpdate {
        profile_id: profile_id.to_string(),
        state: state as i32,
        detail,
        objects: Vec::new(),
        at_unix_ns: unix_now_ns(),
        bytes_done: 0,
        bytes_total: 0,
    }
}

/// How the capture's part on this host ended.
enum End {
    /// The files are complete and journaled: the upload takes over.
    Collected,
    Failed(CaptureError),
    TimedOut,
    ShutDown,
}

struct CaptureRun {
    shared: Arc<Shared>,
    profile_id: ProfileId,
    start_at_coordinator_ns: i64,
    settings: CaptureSettings,
    identity: AgentIdentity,
    coords: RankCoords,
    output_dir: PathBuf,
    key: RankKey,
    stop: watch::Receiver<bool>,
    journal: Journal,
    state: RankState,
    /// What the capture waits for right now, for a timeout's message.
    waiting_for: String,
    /// A start reached (or may have reached) the server and no stop was sent:
    /// a failure must not leave the server profiling.
    server_may_profile: bool,
    clock_before: Option<BurstEstimate>,
}

impl CaptureRun {
    /// A run of `command`, whose id was checked as `profile_id`.
    fn new(
        shared: Arc<Shared>,
        profile_id: ProfileId,
        command: StartCapture,
        stop: watch::Receiver<bool>,
    ) -> CaptureRun {
        let start_command = hex::encode(prost::Message::encode_to_vec(&command));
        let identity = shared.identity.borrow().clone();
        let coords = identity.rank_coords();
        // vLLM writes into its own fixed dir, whatever the start says.
        let output_dir = match (identity.server_kind(), &shared.config.profiler_dir) {
            (ServerKind::Vllm, Some(dir)) => dir.clone(),
            _ => spool::output_dir(&shared.config.spool, &profile_id, &coords),
        };
        let key = RankKey::new(&profile_id, &coords);
        let journal = Journal::new(
            &shared.config.spool,
            CaptureRecord {
                format: JOURNAL_FORMAT.to_string(),
                profile_id: profile_id.clone(),
                agent_id: identity.agent_id.clone(),
                storage_url: command.storage_url.clone(),
                output_dir: output_dir.clone(),
                state: RankState::Pending.word().to_string(),
                detail: String::new(),
                files: Vec::new(),
                sidecar: None,
                sidecar_key: key.sidecar(),
                sidecar_written: false,
                sidecar_size: None,
                sidecar_sha256: None,
                updated_unix_ns: 0,
                start_command: Some(start_command),
                instants: CaptureInstants::default(),
            },
        );
        CaptureRun {
            shared,
            profile_id,
            start_at_coordinator_ns: command.start_at_unix_ns,
            settings: command.settings.unwrap_or_default(),
            identity,
            coords,
            output_dir,
            key,
            stop,
            journal,
            state: RankState::Pending,
            waiting_for: "the start instant".to_string(),
            server_may_profile: false,
            clock_before: None,
        }
    }

    /// Rebuilds a capture a killed predecessor left in `journal`, to go on
    /// from the state it records. `Err` says why it cannot go on.
    fn resume(
        shared: Arc<Shared>,
        journal: Journal,
        stop: watch::Receiver<bool>,
    ) -> Result<CaptureRun, Unresumable> {
        let command = journal
            .record
            .start_command
            .as_deref()
            .and_then(|text| hex::decode(text).ok())
            .and_then(|bytes| <StartCapture as prost::Message>::decode(bytes.as_slice()).ok());
        let Some(command) = command else {
            let reason =
                "its journal, written by an older agent, does not hold the capture's settings";
            return Err((Box::new(journal), reason.to_string()));
        };
        // Checked when the journal was read.
        let profile_id = journal.record.profile_id.clone();
        let Some(state) = RankState::from_word(&journal.record.state) else {
            let reason = format!(
                "its journal names an unknown state {:?}",
                journal.record.state
            );
            return Err((Box::new(journal), reason));
        };
        let mut run = CaptureRun::new(shared, profile_id, command, stop);
        if run.output_dir != journal.record.output_dir {
            let reason = format!(
                "its journal's output folder {} is not where this agent's flags put it ({}): were --spool or the rank flags changed?",
                journal.record.output_dir.display(),
                run.output_dir.display()
            );
            return Err((Box::new(journal), reason));
        }
        let before_start = matches!(state, RankState::Pending | RankState::Armed);
        if before_start && run.identity.trigger && nanos_until(run.local_start_ns()).is_zero() {
            let reason = "the start instant passed while it was down, so the server was never started; capture again";
            return Err((Box::new(journal), reason.to_string()));
        }
        run.journal = journal;
        run.state = state;
        run.server_may_profile = run.identity.trigger && state == RankState::Profiling;
        Ok(run)
    }

    /// From the start instant to complete files in the spool: the capture's
    /// `timeout_ms`, else the profiling window (or the default budget) plus
    /// the budget for files and upload. The upload itself has no deadline:
    /// it goes on until storage holds the files.
    fn budget(&self) -> Duration {
        let timing = &self.shared.config.timing;
        if self.settings.timeout_ms > 0 {
            return Duration::from_millis(self.settings.timeout_ms);
        }
        let profiling = self
            .settings
            .duration_ms
            .filter(|ms| *ms > 0)
            .map_or(timing.default_profiling_budget, Duration::from_millis);
        profiling + timing.files_and_upload_budget
    }

    /// The start instant on this host's clock.
    fn local_start_ns(&self) -> i64 {
        let now = unix_now_ns();
        self.start_at_coordinator_ns + self.shared.clock.with_tracker(|t| t.offset_at(now))
    }

    async fn run(mut self) {
        let budget = self.budget();
        let budget_ns = i64::try_from(budget.as_nanos()).unwrap_or(i64::MAX);
        // From the start instant, so a resumed capture keeps its deadline.
        let deadline =
            Instant::now() + nanos_until(self.local_start_ns().saturating_add(budget_ns));
        let shutdown = self.shared.stop_captures.clone();
        let end = tokio::select! {
            result = tokio::time::timeout_at(deadline, self.pipeline()) => match result {
                Ok(Ok(())) => End::Collected,
                Ok(Err(error)) => End::Failed(error),
                Err(_) => End::TimedOut,
            },
            _ = shutdown.cancelled() => End::ShutDown,
        };
        let mut detail = match end {
            End::Collected => {
                // The server is done with; the journal drives the rest.
                self.shared.book.release(&self.profile_id);
                upload::start(self.shared, self.journal, false);
                return;
            }
            End::Failed(error) => error.to_string(),
            End::TimedOut => format!(
                "timed out after {budget:?} in {}, waiting for {}",
                self.state.word(),
                self.waiting_for
            ),
            End::ShutDown => format!(
                "the agent was shut down during the capture (in {}); files written so far are in {}",
                self.state.word(),
                self.output_dir.display()
            ),
        };
        if self.server_may_profile {
            // Best effort, in the background: a hung server must not hold up the report.
            let server = self.shared.server.clone();
            tokio::spawn(async move { server.stop_profile().await });
            detail.push_str("; rankline sent /stop_profile so the server is not left profiling");
        }
        self.fail(detail);
    }

    /// The capture's steps from the state it is in: a new capture starts
    /// at `pending`, a resumed one where its predecessor was killed.
    async fn pipeline(&mut self) -> Result<(), CaptureError> {
        match (self.state, self.identity.trigger) {
            (RankState::Pending | RankState::Armed, _) => self.arm_and_start().await?,
            (RankState::Profiling, true) => {
                self.enter(
                    RankState::Profiling,
                    "resumed after the agent restarted: the server is still profiling".to_string(),
                );
                self.wait_for_stop().await?;
            }
            // A stop that may not have reached the server is sent again
            // (a 500 then means it had stopped).
            (RankState::Stopping, true) => {
                self.request_stop("resumed after the agent restarted")
                    .await?
            }
            (state, _) => self.enter(
                state,
                format!(
                    "resumed after the agent restarted: waiting for this rank's files in {}",
                    self.output_dir.display()
                ),
            ),
        }
        let files = self.collect().await?;
        let clock_after = self.shared.clock.burst(None).await;
        self.prepare_upload(files, clock_after).await;
        Ok(())
    }

    async fn arm_and_start(&mut self) -> Result<(), CaptureError> {
        self.arm().await?;
        if self.identity.trigger {
            self.profile().await?;
        } else {
            self.journal.record.instants.start_requested_unix_ns = Some(self.local_start_ns());
            let detail = format!(
                "collect-only: waiting for host '{}' to write its files into {}",
                self.identity.host,
                self.output_dir.display()
            );
            self.enter(RankState::Profiling, detail);
        }
        Ok(())
    }

    /// Prepares the output folder, measures the clock, then sleeps until
    /// the start instant (keeping the server connection warm).
    async fn arm(&mut self) -> Result<(), CaptureError> {
        std::fs::create_dir_all(&self.output_dir)
            .map_err(|source| self.spool_error("cannot create", &self.output_dir, source))?;
        // Without a journal a restart could not tell what became of the
        // capture: a spool that cannot take one fails the capture here.
        self.journal
            .save()
            .map_err(|source| self.spool_error("cannot write", self.journal.path(), source))?;
        let lead = nanos_until(self.local_start_ns());
        let role = if self.identity.trigger {
            "triggers the server"
        } else {
            "collect-only"
        };
        let detail = if lead.is_zero() {
            format!("{role}; the start instant has passed already: starting now")
        } else {
            format!("{role}; starts in {} ms", lead.as_millis())
        };
        self.enter(RankState::Armed, detail);

        if lead > PROBE_MARGIN {
            self.clock_before = self
                .shared
                .clock
                .burst(Some(Instant::now() + lead - PROBE_MARGIN))
                .await;
        }
        if self.clock_before.is_none() && self.shared.clock.estimate().is_none() {
            tracing::warn!(
                profile_id = %self.profile_id,
                "no clock estimate yet: the start instant is taken on this host's clock as is"
            );
        }
        let start_ns = self.local_start_ns();
        if self.identity.trigger {
            let lead = nanos_until(start_ns);
            if lead > WARM_BEFORE_START {
                tokio::time::sleep(lead - WARM_BEFORE_START).await;
            }
            let warm_by =
                Instant::now() + nanos_until(start_ns).saturating_sub(PRECISE_SLEEP_WINDOW);
            if let Ok(Err(error)) =
                tokio::time::timeout_at(warm_by, self.shared.server.health()).await
            {
                tracing::debug!(%error, "warming the server connection failed");
            }
        }
        sleep_until_unix(start_ns).await;
        Ok(())
    }

    /// Sends `/start_profile` and waits until profiling is over.
    async fn profile(&mut self) -> Result<(), CaptureError> {
        let server = self.shared.server.clone();
        let url = server.base_url().to_string();
        self.waiting_for = format!(
            "an answer to POST {url}/start_profile (the server may be hung: check its log, restart it)"
        );
        let body = start_body(&self.settings, &self.output_dir);
        let scheduled_ns = self.local_start_ns();
        let sent_ns = unix_now_ns();
        self.journal.record.instants.start_requested_unix_ns = Some(sent_ns);
        match server.start_profile(&body).await {
            Ok(()) => self.server_may_profile = true,
            Err(error) if error.status() == Some(500) => {
                return Err(CaptureError::StartRefused { url })
            }
            Err(error) if error.status() == Some(404) => {
                return Err(CaptureError::StartMissing { url })
            }
            Err(error @ ServerError::Timeout { .. }) => {
                self.server_may_profile = true;
                return Err(error.into());
            }
            Err(error) => return Err(error.into()),
        }
        let late_us = (sent_ns - scheduled_ns) / 1000;
        self.enter(
            RankState::Profiling,
            format!("the server is profiling (start sent {late_us} us after the instant)"),
        );
        self.wait_for_stop().await
    }

    /// Waits for the end of the profiling window, the server's own stop
    /// after `num_steps`, or a StopCapture, whichever comes first.
    async fn wait_for_stop(&mut self) -> Result<(), CaptureError> {
        let poll = self.shared.config.timing.poll_interval;
        // From when the start was sent, so a resumed capture keeps its window.
        let started_ns = self
            .journal
            .record
            .instants
            .start_requested_unix_ns
            .unwrap_or_else(unix_now_ns);
        let window_end = self.settings.duration_ms.filter(|ms| *ms > 0).map(|ms| {
            let end_ns = started_ns.saturating_add(
                i64::try_from(ms)
                    .unwrap_or(i64::MAX / 2)
                    .saturating_mul(1_000_000),
            );
            Instant::now() + nanos_until(end_ns)
        });
        let num_steps = self.settings.num_steps;
        self.waiting_for = match (window_end, num_steps) {
            (Some(_), _) => "the end of the profiling window".to_string(),
            (None, Some(steps)) => format!(
                "the server to finish num_steps={steps} (it counts forward steps, so it needs requests: send traffic, or `rankline stop {}`)",
                self.profile_id
            ),
            (None, None) => format!("a stop (`rankline stop {}`)", self.profile_id),
        };
        let mut status_route = true;
        let mut status_failures = 0;
        loop {
            tokio::select! {
                _ = sleep_until_opt(window_end), if window_end.is_some() => {
                    return self.request_stop("the duration elapsed").await;
                }
                _ = stop_requested(&mut self.stop) => {
                    return self.request_stop("a stop was requested").await;
                }
                _ = tokio::time::sleep(poll), if num_steps.is_some() => {
                    if self.stopped_by_itself(&mut status_route, &mut status_failures).await? {
                        self.server_may_profile = false;
                        self.journal.record.instants.stop_observed_unix_ns = Some(unix_now_ns());
                        let detail = format!(
                            "the server stopped by itself after num_steps={}",
                            num_steps.unwrap_or_default()
                        );
                        self.enter(RankState::Stopping, detail);
                        return Ok(());
                    }
                }
            }
        }
    }

    /// One poll of a `num_steps` capture: `/profile_status`, or where the
    /// server has none (404), whether the files are all there.
    async fn stopped_by_itself(
        &mut self,
        status_route: &mut bool,
        failures: &mut u32,
    ) -> Result<bool, CaptureError> {
        if !*status_route {
            return Ok(self.scan_files()?.all_present);
        }
        match self.shared.server.profile_status().await {
            Ok(ProfileStatus::Idle) => Ok(true),
            Ok(ProfileStatus::InProgress) => {
                *failures = 0;
                Ok(false)
            }
            Ok(ProfileStatus::Unsupported) => {
                tracing::info!(
                    profile_id = %self.profile_id,
                    "the server has no /profile_status: watching for its files instead"
                );
                *status_route = false;
                Ok(false)
            }
            Err(error) => {
                *failures += 1;
                if *failures >= STATUS_FAILURES_TOLERATED {
                    Err(error.into())
                } else {
                    Ok(false)
                }
            }
        }
    }

    async fn request_stop(&mut self, reason: &str) -> Result<(), CaptureError> {
        let server = self.shared.server.clone();
        self.enter(
            RankState::Stopping,
            format!("{reason}: sent /stop_profile; the server answers once its files are written"),
        );
        self.waiting_for = format!(
            "the answer to POST {}/stop_profile (the server writes its files before answering)",
            server.base_url()
        );
        self.journal.record.instants.stop_requested_unix_ns = Some(unix_now_ns());
        self.server_may_profile = false;
        if server.stop_profile().await? == StopOutcome::WasNotProfiling {
            // The bare 500 a stop gets after num_steps stopped the profile: expected.
            tracing::info!(
                profile_id = %self.profile_id,
                "the server was no longer profiling when asked to stop (500): it had stopped by itself"
            );
        }
        self.journal.record.instants.stop_observed_unix_ns = Some(unix_now_ns());
        Ok(())
    }

    fn files_spec(&self) -> RankFilesSpec {
        RankFilesSpec {
            kind: self.identity.server_kind(),
            host: self.identity.host.clone(),
            coords: self.coords.clone(),
            since_unix_ms: self.local_start_ns() / 1_000_000,
        }
    }

    fn scan_files(&self) -> Result<Scan, CaptureError> {
        self.files_spec()
            .scan(&self.output_dir)
            .map_err(|source| CaptureError::Spool {
                path: self.output_dir.clone(),
                source,
            })
    }

    /// Waits until the rank's files are all there, no `.tmp` is pending and
    /// their sizes held still over two polls.
    async fn collect(&mut self) -> Result<Vec<FoundFile>, CaptureError> {
        if self.identity.trigger {
            let detail = format!(
                "waiting for complete files in {}",
                self.output_dir.display()
            );
            self.enter(RankState::Collecting, detail);
        }
        let poll = self.shared.config.timing.poll_interval;
        let mut stability = StabilityCheck::default();
        let mut full = FullSpoolCheck::default();
        let mut foreign = ForeignFilesCheck::default();
        let grace = self.shared.config.timing.foreign_files_grace;
        loop {
            let scan = self.scan_files()?;
            // A trigger's server has written its files once it is collecting;
            // a collector sees them come at any time.
            if self.state == RankState::Collecting || !self.identity.trigger {
                if let Some(names) = foreign.observe(&self.output_dir, &scan, grace) {
                    return Err(self.foreign_files(names));
                }
            }
            if self.state == RankState::Profiling && !scan.files.is_empty() {
                self.journal.record.instants.stop_observed_unix_ns = Some(unix_now_ns());
                let detail = format!("files appear in {}", self.output_dir.display());
                self.enter(RankState::Collecting, detail);
            }
            self.waiting_for = self.missing_files_hint(&scan.others);
            // On a full spool even files that look complete may be cut short.
            let available = spool::available_bytes(&self.output_dir).ok();
            if self.state == RankState::Collecting
                && available.is_some_and(|free| free < SPOOL_FULL_BELOW)
            {
                if full.observe(&scan.files) >= FULL_POLLS {
                    return Err(self.server_could_not_write(&scan.files, available));
                }
            } else {
                full = FullSpoolCheck::default();
                if let Some(files) = stability.observe(scan) {
                    return Ok(files);
                }
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Only other hosts' or ranks' files came: say which, what was
    /// expected, and the flag that makes them match.
    fn foreign_files(&self, names: Vec<String>) -> CaptureError {
        let (expected, advice) = match self.identity.server_kind() {
            ServerKind::Sglang => (
                format!("*-{}.trace.json.gz", self.coords.rank_label()),
                "set --tp-rank / --ep-rank / --dp-rank / --pp-rank (or --ranks) to the ranks this host's server writes, or let the agent read them from /get_server_info by leaving them out".to_string(),
            ),
            ServerKind::Vllm => (
                format!(
                    "dp{}_pp{}_tp{}_dcp0_ep{}_rank<n>.<ms>.pt.trace.json.gz",
                    self.coords.dp_rank.unwrap_or(0),
                    self.coords.pp_rank.unwrap_or(0),
                    self.coords.tp_rank,
                    self.coords.ep_rank
                ),
                "set --tp-rank / --ep-rank / --dp-rank / --pp-rank to this worker's ranks".to_string(),
            ),
            ServerKind::SglangJax | ServerKind::Unspecified => {
                let mut hosts: Vec<String> = names
                    .iter()
                    .filter_map(|name| {
                        let file = name.rsplit('/').next()?;
                        match ObjectKind::split(file)? {
                            (_, ObjectKind::Sidecar) => None,
                            (host, _) => Some(host.to_string()),
                        }
                    })
                    .collect();
                hosts.dedup();
                let host = &self.identity.host;
                (
                    format!("{host}.trace.json.gz and {host}.xplane.pb (named after host '{host}')"),
                    format!(
                        "the server names its files after the host name it sees; if that is {}, run this agent with --host {} (or RANKLINE_HOST)",
                        hosts.iter().map(|h| format!("'{h}'")).collect::<Vec<_>>().join(" or "),
                        hosts.first().map_or("<name>", String::as_str)
                    ),
                )
            }
        };
        CaptureError::ForeignFiles {
            dir: self.output_dir.clone(),
            found: names.join(", "),
            expected,
            advice,
        }
    }

    /// The rank's files stopped short on a full spool.
    fn server_could_not_write(&self, files: &[FoundFile], available: Option<u64>) -> CaptureError {
        let found = if files.is_empty() {
            "none of its files is there".to_string()
        } else {
            files
                .iter()
                .map(|file| {
                    format!(
                        "{} ({})",
                        file.source_name(),
                        rankline_units::bytes(file.size)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        CaptureError::SpoolFull {
            what: format!(
                "the server could not finish writing this rank's files into {} (found: {found}; they may be cut short and are left there)",
                self.output_dir.display()
            ),
            available: available.map_or_else(|| "nothing".to_string(), rankline_units::bytes),
            spool: self.shared.config.spool.clone(),
        }
    }

    /// A spool write failed: a full file system says so and what to do.
    fn spool_error(&self, what: &str, path: &Path, source: io::Error) -> CaptureError {
        if !spool::is_disk_full(&source) {
            return CaptureError::Spool {
                path: path.to_path_buf(),
                source,
            };
        }
        let spool = &self.shared.config.spool;
        CaptureError::SpoolFull {
            what: format!("{what} {}: {source}", path.display()),
            available: spool::available_bytes(spool)
                .map_or_else(|_| "nothing".to_string(), rankline_units::bytes),
            spool: spool.clone(),
        }
    }

    /// What files the rank waits for, and what it saw instead.
    fn missing_files_hint(&self, others: &[String]) -> String {
        let dir = self.output_dir.display();
        let wanted = match self.identity.server_kind() {
            ServerKind::Sglang => format!(
                "a complete *-{}.trace.json.gz (no .tmp) in {dir}",
                self.coords.rank_label()
            ),
            ServerKind::Vllm => format!(
                "a *_tp{}_*.pt.trace.json.gz exported after the start in {dir} (vLLM's profiler dir; --profiler-dir must be the server's VLLM_TORCH_PROFILER_DIR)",
                self.coords.tp_rank
            ),
            ServerKind::SglangJax | ServerKind::Unspecified => format!(
                "both {host}.trace.json.gz and {host}.xplane.pb under {dir}/plugins/profile/",
                host = self.identity.host
            ),
        };
        if others.is_empty() {
            format!(
                "{wanted}; nothing of the kind was written there: does the server write to this machine (same --spool on every agent of a server)?"
            )
        } else {
            format!(
                "{wanted}; seen only: {}; do --host / the rank flags match what the server writes?",
                others.join(", ")
            )
        }
    }

    /// The object key a file of this rank is stored under.
    fn key_for(&self, file: &FoundFile) -> String {
        match (file.kind, &file.stage) {
            (FileKind::Xplane, _) => self.key.xplane(),
            (FileKind::Trace, None) => self.key.trace(),
            // Per-stage Kineto files keep their stage after the rank label.
            (FileKind::Trace, Some(stage)) => format!("{}-{stage}.trace.json.gz", self.key.stem),
        }
    }

    /// Writes the files and the sidecar (its file records come with the
    /// upload) into the journal, so the upload can run, or resume after a
    /// restart, from the journal alone.
    async fn prepare_upload(&mut self, files: Vec<FoundFile>, clock_after: Option<BurstEstimate>) {
        let times_of = files.clone();
        let times = tokio::task::spawn_blocking(move || time_base::for_rank(&times_of))
            .await
            .map_err(io::Error::other)
            .and_then(|read| read)
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "cannot read the trace's time base; the sidecar says none");
                TraceTimes::unknown()
            });
        self.journal.record.files = files
            .iter()
            .map(|file| JournalFile {
                kind: file.kind,
                local_path: file.path.clone(),
                key: self.key_for(file),
                size: file.size,
                sha256: None,
                uploaded: false,
            })
            .collect();
        self.journal.record.sidecar = Some(self.sidecar(times, clock_after.as_ref()));
    }

    /// The rank's sidecar, without its file records: those are added as the
    /// files are verified in storage.
    fn sidecar(&self, times: TraceTimes, clock_after: Option<&BurstEstimate>) -> Sidecar {
        let identity = &self.identity;
        Sidecar {
            format: SIDECAR_FORMAT.to_string(),
            profile_id: self.profile_id.clone(),
            identity: RankIdentity {
                agent_id: identity.agent_id.clone(),
                host: identity.host.clone(),
                coords: self.coords.clone(),
                server_url: identity.server_url.clone(),
                server_kind: identity.server_kind().into(),
                trigger: identity.trigger,
                node_rank: identity.node_rank,
                labels: identity.labels.clone().into_iter().collect(),
            },
            start_requested_unix_ns: self
                .journal
                .record
                .instants
                .start_requested_unix_ns
                .unwrap_or_default(),
            stop_requested_unix_ns: self.journal.record.instants.stop_requested_unix_ns,
            stop_observed_unix_ns: self.journal.record.instants.stop_observed_unix_ns,
            time_base: times.time_base,
            profile_stop_unix_ns: times.profile_stop_unix_ns,
            clock: self
                .shared
                .clock
                .with_tracker(|t| t.fit(self.clock_before.as_ref(), clock_after)),
            files: Vec::new(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    fn update(&self, state: RankState, detail: String) -> RankUpdate {
        rank_update(&self.profile_id, state, detail)
    }

    fn save_journal(&mut self) {
        if let Err(error) = self.journal.save() {
            tracing::warn!(path = %self.journal.path().display(), %error, "cannot write the capture journal");
        }
    }

    /// Moves to a new state: journal, log, and an update for the coordinator.
    fn enter(&mut self, state: RankState, detail: String) {
        self.state = state;
        tracing::info!(profile_id = %self.profile_id, state = state.word(), "{detail}");
        self.journal.record.state = state.word().to_string();
        self.journal.record.detail = detail.clone();
        self.save_journal();
        self.shared.book.publish(self.update(state, detail));
    }

    fn fail(mut self, detail: String) {
        tracing::warn!(profile_id = %self.profile_id, "capture failed: {detail}");
        let update = self.update(RankState::Failed, detail.clone());
        self.journal.record.state = RankState::Failed.word().to_string();
        self.journal.record.detail = detail;
        self.save_journal();
        self.shared.book.publish(update);
    }
}

/// Counts the polls that found a full spool and the rank's files unchanged.
#[derive(Debug, Default)]
struct FullSpoolCheck {
    files: Option<Vec<FoundFile>>,
    polls: u32,
}

impl FullSpoolCheck {
    /// Feeds one poll of a full spool; returns how many polls in a row saw
    /// these same files.
    fn observe(&mut self, files: &[FoundFile]) -> u32 {
        if self.files.as_deref() == Some(files) {
            self.polls += 1;
        } else {
            self.files = Some(files.to_vec());
            self.polls = 1;
        }
        self.polls
    }
}

/// Resolves once the coordinator asked this capture to stop. The book drops
/// the sender only after the capture ended, so an error never comes early.
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|requested| *requested).await;
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Time from now until a wall-clock instant (zero when it has passed).
fn nanos_until(unix_ns: i64) -> Duration {
    Duration::from_nanos(u64::try_from(unix_ns - unix_now_ns()).unwrap_or(0))
}

/// Sleeps until a wall-clock instant: the async timer for all but the last
/// couple of milliseconds, then one precise `thread::sleep` on a blocking
/// thread. Nothing spins: many agents may share few cores.
pub(crate) async fn sleep_until_unix(target_unix_ns: i64) {
    let coarse = nanos_until(target_unix_ns).saturating_sub(PRECISE_SLEEP_WINDOW);
    if !coarse.is_zero() {
        tokio::time::sleep(coarse).await;
    }
    let precise = tokio::task::spawn_blocking(move || {
        let left = nanos_until(target_unix_ns);
        if !left.is_zero() {
            std::thread::sleep(left);
        }
    });
    if precise.await.is_err() {
        // The blocking pool is shutting down; the async timer is close enough.
        tokio::time::sleep(nanos_until(target_unix_ns)).await;
    }
}
