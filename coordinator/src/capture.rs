//! One capture as the coordinator tracks it: its ranks, their states, the
//! events watchers see, and its summary.
//!
//! Everything here is plain data changed under the registry lock; nothing
//! awaits. Every change worth keeping across a restart bumps the capture's
//! version and wakes the record writer (`Shared::save_records`); the summary
//! (`CaptureSummary`) is what the manifest is made from.

use std::sync::Arc;
use std::time::Instant;

use rankline_proto::{
    capture_event, unix_now_ns, AgentIdentity, AuditEntry, CaptureAccepted, CaptureEvent,
    CaptureSettings, CaptureStatus, CaptureSummary, RankProgress, RankResult, RankState,
    RankUpdate, StartCapture, StoredObject,
};
use tokio::sync::{broadcast, Notify};

use rankline_layout::{ObjectKind, ProfileId};
use rankline_proto::convert::{capture_status, rank_name};

/// Room for events a slow watcher has not read yet; past it the watcher gets
/// a fresh snapshot instead (see `control::forward_events`).
const EVENT_BACKLOG: usize = 1024;

/// Where a capture is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Some rank is not final yet.
    Running,
    /// Every rank is final; the manifest is being written.
    Finishing,
    /// The manifest was written (or could not be) and watchers were told.
    Finished,
}

impl Phase {
    /// How capture records spell the phase.
    pub fn word(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Finishing => "finishing",
            Phase::Finished => "finished",
        }
    }

    pub fn from_word(word: &str) -> Option<Phase> {
        [Phase::Running, Phase::Finishing, Phase::Finished]
            .into_iter()
            .find(|phase| phase.word() == word)
    }
}

/// One selected agent's rank in a capture.
#[derive(Debug)]
pub(crate) struct Rank {
    pub identity: AgentIdentity,
    pub state: RankState,
    pub detail: String,
    pub objects: Vec<StoredObject>,
    /// The last update (the agent's, or one the coordinator made).
    pub latest: Option<RankUpdate>,
    /// Past this, an unfinished rank fails.
    pub deadline: Instant,
    /// True when the coordinator, not the agent, ended this rank (lost, timed
    /// out, unreachable): the agent's own later word replaces it.
    pub decided_by_coordinator: bool,
    /// True once storage was checked for a sidecar of a rank the coordinator
    /// ended (see `Shared::settle`).
    pub storage_checked: bool,
}

impl Rank {
    fn result(&self) -> RankResult {
        let mut result = RankResult {
            agent: Some(self.identity.clone()),
            detail: self.detail.clone(),
            objects: self.objects.clone(),
            ..Default::default()
        };
        result.set_state(self.state);
        result
    }
}

/// A capture the coordinator started.
#[derive(Debug)]
pub(crate) struct Capture {
    pub profile_id: ProfileId,
    /// As sent to the agents (with the effective `timeout_ms`).
    pub settings: CaptureSettings,
    pub storage_url: String,
    pub created_unix_ns: i64,
    pub start_at_unix_ns: i64,
    /// Sorted as the merged timeline orders ranks.
    pub ranks: Vec<Rank>,
    pub phase: Phase,
    pub finished_unix_ns: i64,
    /// Set once a manifest write succeeded.
    pub manifest_key: String,
    /// Who started and stopped it, oldest first.
    pub audit: Vec<AuditEntry>,
    /// Why it failed although its ranks may be ok (see `fail`); empty if not.
    pub failure: String,
    /// Live events for watchers: made for the first one, dropped when the
    /// capture finishes (its buffer is large; a thousand finished captures
    /// stay in memory).
    events: Option<broadcast::Sender<CaptureEvent>>,
    /// Serializes manifest writes so the newest state is always the last one
    /// written.
    pub manifest_writes: Arc<tokio::sync::Mutex<()>>,
    /// Counts changes worth a new capture record.
    version: u64,
    /// The version the stored record has.
    saved_version: u64,
    /// Wakes the record writer.
    changes: Arc<Notify>,
}

impl Capture {
    /// A new capture whose ranks are all `pending`. `start` is the message
    /// its agents get; it carries `profile_id` as wire text.
    pub fn new(
        profile_id: ProfileId,
        start: &StartCapture,
        mut agents: Vec<AgentIdentity>,
        deadline: Instant,
        changes: Arc<Notify>,
    ) -> Capture {
        agents.sort_by_key(|identity| identity.rank_coords().sort_key());
        let ranks = agents
            .into_iter()
            .map(|identity| Rank {
                identity,
                state: RankState::Pending,
                detail: String::new(),
                objects: Vec::new(),
                latest: None,
                deadline,
                decided_by_coordinator: false,
                storage_checked: false,
            })
            .collect();
        let mut capture = Capture::with_ranks(profile_id, start, ranks, changes);
        capture.changed();
        capture
    }

    /// A running capture of these ranks (in timeline order), created now,
    /// whose record counts as saved.
    pub fn with_ranks(
        profile_id: ProfileId,
        start: &StartCapture,
        ranks: Vec<Rank>,
        changes: Arc<Notify>,
    ) -> Capture {
        Capture {
            profile_id,
            settings: start.settings.clone().unwrap_or_default(),
            storage_url: start.storage_url.clone(),
            created_unix_ns: unix_now_ns(),
            start_at_unix_ns: start.start_at_unix_ns,
            ranks,
            phase: Phase::Running,
            finished_unix_ns: 0,
            manifest_key: String::new(),
            audit: Vec::new(),
            failure: String::new(),
            events: None,
            manifest_writes: Arc::default(),
            version: 0,
            saved_version: 0,
            changes,
        }
    }

    /// Notes a change the capture record must get, and wakes its writer.
    fn changed(&mut self) {
        self.version += 1;
        self.changes.notify_one();
    }

    /// Notes who took a control action (`started`, `stopped`) now.
    pub fn audit(&mut self, action: &str, who: String) {
        self.audit.push(AuditEntry {
            action: action.to_string(),
            who,
            at_unix_ns: unix_now_ns(),
        });
        self.changed();
    }

    /// Marks the capture failed for a reason outside its ranks (its
    /// workload failed), on `who`'s word; the ranks keep their states.
    pub fn fail(&mut self, reason: String, who: String) {
        self.failure = reason;
        self.audit("failed", who);
    }

    /// The current version when the stored record is older.
    pub fn unsaved_version(&self) -> Option<u64> {
        (self.version != self.saved_version).then_some(self.version)
    }

    /// Notes that the record of `version` is stored.
    pub fn saved(&mut self, version: u64) {
        self.saved_version = self.saved_version.max(version);
    }

    pub fn subscribe(&mut self) -> broadcast::Receiver<CaptureEvent> {
        self.events
            .get_or_insert_with(|| broadcast::channel(EVENT_BACKLOG).0)
            .subscribe()
    }

    /// The index of an agent's rank, if the agent is part of this capture.
    pub fn rank_of(&self, agent_id: &str) -> Option<usize> {
        self.ranks
            .iter()
            .position(|rank| rank.identity.agent_id == agent_id)
    }

    /// True when the agent has an unfinished rank here.
    pub fn occupies(&self, agent_id: &str) -> bool {
        self.rank_of(agent_id)
            .is_some_and(|index| !self.ranks[index].state.is_final())
    }

    /// Applies an agent's update to its rank and tells watchers.
    pub fn apply_agent_update(&mut self, index: usize, update: RankUpdate) {
        let rank = &mut self.ranks[index];
        // Progress within a state (bytes uploaded) is not worth a record.
        let worth_saving = rank.state != update.state()
            || rank.detail != update.detail
            || rank.decided_by_coordinator
            || (!update.objects.is_empty() && rank.objects != update.objects);
        rank.state = update.state();
        rank.detail = update.detail.clone();
        if !update.objects.is_empty() {
            rank.objects = update.objects.clone();
        }
        rank.decided_by_coordinator = false;
        rank.latest = Some(update);
        if worth_saving {
            self.changed();
        }
        self.publish_rank(index);
        self.fail_duplicate_files(index);
    }

    /// An `ok` rank that stored a file byte for byte another rank's (same
    /// sha256): two servers wrote one file, or two agents took it. Neither
    /// copy can be trusted to be its rank's, so both ranks fail, for good:
    /// the verdict stands as the agent's own final word, so a repeated `ok`
    /// from the agent does not undo it.
    fn fail_duplicate_files(&mut self, index: usize) {
        if self.ranks[index].state != RankState::Ok {
            return;
        }
        let traces = |rank: &Rank| -> Vec<StoredObject> {
            rank.objects
                .iter()
                .filter(|o| {
                    !o.sha256.is_empty() && ObjectKind::of_key(&o.key) != Some(ObjectKind::Sidecar)
                })
                .cloned()
                .collect()
        };
        let ours = traces(&self.ranks[index]);
        let mut twins = Vec::new();
        for (other, rank) in self.ranks.iter().enumerate() {
            if other == index {
                continue;
            }
            let theirs = traces(rank);
            if let Some((mine, same)) = ours.iter().find_map(|o| {
                theirs
                    .iter()
                    .find(|t| t.sha256 == o.sha256)
                    .map(|t| (o.clone(), t.clone()))
            }) {
                twins.push((other, mine, same));
            }
        }
        for (other, mine, same) in twins {
            let (ours_name, theirs_name) = (
                rank_name(&self.ranks[index].identity),
                rank_name(&self.ranks[other].identity),
            );
            let sha = &mine.sha256[..mine.sha256.len().min(12)];
            for (rank, key, twin, twin_key) in [
                (index, &mine.key, &theirs_name, &same.key),
                (other, &same.key, &ours_name, &mine.key),
            ] {
                if self.ranks[rank].state == RankState::Failed {
                    continue;
                }
                let detail = format!(
                    "{key} is the same file as {twin}'s {twin_key} (sha256 {sha}...): two servers wrote one file or two agents took it (servers with the same host name sharing a --spool on one machine?); give each server's agent its own --spool (or the right --host / rank flags) and capture again"
                );
                tracing::warn!(capture = %self.profile_id, "{detail}");
                self.fail_for_good(rank, detail);
            }
        }
    }

    /// Ends a rank `failed` in a way later agent updates do not change.
    fn fail_for_good(&mut self, index: usize, detail: String) {
        self.end_rank(index, RankState::Failed, detail);
        // As if the agent had said it: its own later word does not replace it.
        self.ranks[index].decided_by_coordinator = false;
    }

    /// Ends a rank on the coordinator's authority (lost, timed out,
    /// unreachable) and tells watchers.
    pub fn end_rank(&mut self, index: usize, state: RankState, detail: String) {
        let rank = &mut self.ranks[index];
        let mut update = RankUpdate {
            profile_id: self.profile_id.to_string(),
            detail: detail.clone(),
            at_unix_ns: unix_now_ns(),
            ..Default::default()
        };
        update.set_state(state);
        rank.state = state;
        rank.detail = detail;
        rank.decided_by_coordinator = true;
        rank.latest = Some(update);
        self.changed();
        self.publish_rank(index);
    }

    /// Marks a rank `ok` because its files are in storage although the
    /// coordinator had given up on it.
    pub fn settle_from_storage(&mut self, index: usize, objects: Vec<StoredObject>) {
        let rank = &mut self.ranks[index];
        let detail = format!(
            "stored (its agent's report never arrived; storage holds its files and sidecar; earlier: {})",
            rank.detail
        );
        let mut update = RankUpdate {
            profile_id: self.profile_id.to_string(),
            detail: detail.clone(),
            objects: objects.clone(),
            at_unix_ns: unix_now_ns(),
            ..Default::default()
        };
        update.set_state(RankState::Ok);
        rank.state = RankState::Ok;
        rank.detail = detail;
        rank.objects = objects;
        rank.latest = Some(update);
        self.changed();
        self.publish_rank(index);
        self.fail_duplicate_files(index);
    }

    /// Moves a running capture whose ranks are all final to `Finishing`;
    /// true when it did (the caller then writes the manifest).
    pub fn begin_finishing_if_done(&mut self) -> bool {
        if self.phase != Phase::Running || self.ranks.iter().any(|r| !r.state.is_final()) {
            return false;
        }
        self.phase = Phase::Finishing;
        self.finished_unix_ns = unix_now_ns();
        self.changed();
        true
    }

    /// Records the outcome of a manifest write; the first one after the
    /// last rank ended finishes the capture and tells watchers.
    pub fn manifest_written(&mut self, manifest_key: Option<String>) {
        if let Some(key) = manifest_key {
            if self.manifest_key != key {
                self.manifest_key = key;
                self.changed();
            }
        }
        if self.phase == Phase::Finishing {
            self.phase = Phase::Finished;
            self.changed();
            // Watchers read what is buffered, then see the channel close.
            if let Some(events) = self.events.take() {
                let _ = events.send(self.finished_event());
            }
        }
    }

    pub fn summary(&self) -> CaptureSummary {
        let ranks: Vec<RankResult> = self.ranks.iter().map(Rank::result).collect();
        let mut summary = CaptureSummary {
            profile_id: self.profile_id.to_string(),
            storage_url: self.storage_url.clone(),
            manifest_key: self.manifest_key.clone(),
            created_unix_ns: self.created_unix_ns,
            finished_unix_ns: self.finished_unix_ns,
            settings: Some(self.settings.clone()),
            audit: self.audit.clone(),
            failure: self.failure.clone(),
            ..Default::default()
        };
        summary.set_status(match capture_status(&ranks) {
            CaptureStatus::Running => CaptureStatus::Running,
            _ if !self.failure.is_empty() => CaptureStatus::Failed,
            status => status,
        });
        summary.ranks = ranks;
        summary
    }

    pub fn accepted_event(&self) -> CaptureEvent {
        CaptureEvent {
            kind: Some(capture_event::Kind::Accepted(CaptureAccepted {
                profile_id: self.profile_id.to_string(),
                ranks: self.ranks.iter().map(|r| r.identity.clone()).collect(),
                start_at_unix_ns: self.start_at_unix_ns,
                storage_url: self.storage_url.clone(),
            })),
        }
    }

    /// Every rank's current state, as progress events (for a new watcher).
    pub fn rank_events(&self) -> Vec<CaptureEvent> {
        (0..self.ranks.len())
            .map(|index| self.rank_event(index))
            .collect()
    }

    pub fn finished_event(&self) -> CaptureEvent {
        CaptureEvent {
            kind: Some(capture_event::Kind::Finished(self.summary())),
        }
    }

    fn rank_event(&self, index: usize) -> CaptureEvent {
        let rank = &self.ranks[index];
        let update = rank.latest.clone().unwrap_or_else(|| {
            let mut pending = RankUpdate {
                profile_id: self.profile_id.to_string(),
                ..Default::default()
            };
            pending.set_state(rank.state);
            pending
        });
        CaptureEvent {
            kind: Some(capture_event::Kind::Rank(RankProgress {
                agent: Some(rank.identity.clone()),
                update: Some(update),
            })),
        }
    }

    fn publish_rank(&self, index: usize) {
        if let Some(events) = &self.events {
            // No receiver is normal: every watcher left.
            let _ = events.send(self.rank_event(index));
        }
    }
}
