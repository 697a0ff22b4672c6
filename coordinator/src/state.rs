//! Capture records: what lets captures survive a coordinator restart.
//!
//! Every capture has one JSON record, `<state>/captures/<profile_id>.json`,
//! with everything needed to carry on: the start instant, the settings, each
//! rank's identity, state, objects and deadline, and whether the manifest was
//! written. It is replaced in one PUT (atomic on every backend: a local
//! folder writes a temp file and renames it) whenever something in it
//! changes, coalesced (see `Shared::save_records`).
//! By default `<state>` is `.rankline-coordinator/` inside the capture
//! storage, so a coordinator started on another machine with the same
//! `--storage` finds its predecessor's captures.
//!
//! On start the coordinator reads every record back. A record it cannot read
//! is copied to `<state>/set-aside/` and replaced by a short note that points
//! at the copy (the profile id stays taken); the coordinator starts without
//! that capture and says so.

use std::time::{Duration, Instant};

use futures::future::join_all;
use rankline_layout::{ProfileId, RankIdentity, SettingsRecord};
use rankline_proto::{
    unix_now_ns, CaptureSettings, RankState, RankUpdate, StartCapture, StoredObject,
};
use rankline_storage::{Storage, StorageError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::capture::{Capture, Phase, Rank};
use rankline_proto::convert::{agent_identity, audit_entry, audit_record, rank_identity};
use rankline_storage::object_location;

/// The `format` of a capture record this version writes.
pub const RECORD_FORMAT: &str = "rankline.coordinator.capture/v1";
/// What every version's record format starts with.
const RECORD_FAMILY: &str = "rankline.coordinator.capture/";
/// Where records live inside the capture storage unless `--state` says
/// otherwise. A profile id never starts with a dot, so no capture folder
/// can be named like this.
const PREFIX_IN_CAPTURE_STORAGE: &str = ".rankline-coordinator/";
const RECORDS_FOLDER: &str = "captures";
const SET_ASIDE_FOLDER: &str = "set-aside";
/// Records read at once while restoring.
const PARALLEL_READS: usize = 16;

/// One capture, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CaptureRecord {
    pub format: String,
    pub profile_id: ProfileId,
    /// `running`, `finishing` (every rank final, manifest not yet written)
    /// or `finished`.
    pub phase: String,
    pub storage_url: String,
    /// Coordinator-clock instants.
    pub created_unix_ns: i64,
    pub start_at_unix_ns: i64,
    #[serde(default)]
    pub finished_unix_ns: i64,
    /// As sent to the agents, `timeout_ms` included (the manifest's form).
    #[serde(default)]
    pub settings: SettingsRecord,
    /// Set once the manifest is written.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub manifest_key: String,
    /// In timeline order.
    pub ranks: Vec<RankRecord>,
    /// Who started and stopped the capture.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit: Vec<rankline_layout::AuditEntry>,
    /// Why it failed although its ranks may be ok.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub failure: String,
}

/// One rank of a stored capture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RankRecord {
    pub identity: RankIdentity,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent_version: String,
    /// A rank state word: `pending` ... `ok`, `failed`, `lost`.
    pub state: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<ObjectRecord>,
    /// Coordinator clock.
    pub deadline_unix_ns: i64,
    #[serde(default)]
    pub decided_by_coordinator: bool,
    #[serde(default)]
    pub storage_checked: bool,
    /// The last update's instant and progress; absent while `pending`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update: Option<UpdateRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ObjectRecord {
    pub key: String,
    pub size: u64,
    #[serde(default)]
    pub sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UpdateRecord {
    pub at_unix_ns: i64,
    #[serde(default)]
    pub bytes_done: u64,
    #[serde(default)]
    pub bytes_total: u64,
}

/// What stands in place of a record that could not be read.
#[derive(Debug, Serialize, Deserialize)]
struct SetAsideNote {
    format: String,
    profile_id: String,
    /// The key of the copy of the unreadable record.
    set_aside_as: String,
    reason: String,
}

/// What `Coordinator::restore` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Captures that were running and resume now.
    pub running: Vec<String>,
    /// Finished captures listed again.
    pub finished: usize,
    /// One line per record that was not used, for a person (also logged as
    /// a warning).
    pub problems: Vec<String>,
}

/// A capture record as found in storage.
enum Found {
    Capture(Box<CaptureRecord>),
    /// A note left in place of an unreadable record.
    SetAside,
    /// Written by another version of rankline.
    OtherFormat(String),
}

/// Where capture records live.
#[derive(Debug, Clone)]
pub(crate) struct RecordStore {
    storage: Storage,
    /// Key prefix, empty or ending in `/`.
    prefix: String,
    /// True when the records live inside the capture storage.
    inside_capture_storage: bool,
}

impl RecordStore {
    /// Records in `state_url` when given, else inside `capture_storage`.
    pub fn open(state_url: Option<&str>, capture_storage: &Storage) -> Result<Self, StorageError> {
        Ok(match state_url {
            Some(url) => RecordStore {
                storage: Storage::open(url)?,
                prefix: String::new(),
                inside_capture_storage: false,
            },
            None => RecordStore {
                storage: capture_storage.clone(),
                prefix: PREFIX_IN_CAPTURE_STORAGE.to_string(),
                inside_capture_storage: true,
            },
        })
    }

    /// Where the records are, for a person.
    pub fn location(&self) -> String {
        object_location(
            self.storage.url(),
            &format!("{}{RECORDS_FOLDER}", self.prefix),
        )
    }

    fn record_key(&self, profile_id: &str) -> String {
        format!("{}{RECORDS_FOLDER}/{profile_id}.json", self.prefix)
    }

    /// True when a record (or a note about one) exists for this id.
    pub async fn holds(&self, profile_id: &str) -> Result<bool, StorageError> {
        Ok(self
            .storage
            .head(&self.record_key(profile_id))
            .await?
            .is_some())
    }

    /// Replaces a capture's record.
    pub async fn save(&self, record: &CaptureRecord) -> Result<(), String> {
        let key = self.record_key(&record.profile_id);
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| e.to_string())?;
        self.storage
            .put_bytes(&key, bytes)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// Reads every record and hands the usable ones to `adopt` (`Ok(true)`
    /// for a capture that is still running; `Err` with a reason when the
    /// record makes no sense after all). `capture_storage_url` is where this
    /// coordinator stores captures. Fails only when storage cannot be read:
    /// starting without the records would silently drop running captures.
    pub async fn load(
        &self,
        capture_storage_url: &str,
        mut adopt: impl FnMut(CaptureRecord) -> Result<bool, String>,
    ) -> Result<RestoreReport, StorageError> {
        let folder = format!("{}{RECORDS_FOLDER}/", self.prefix);
        let keys: Vec<String> = self
            .storage
            .list(&folder)
            .await?
            .into_iter()
            .map(|object| object.key)
            .filter(|key| key.ends_with(".json"))
            .collect();
        let mut report = RestoreReport::default();
        for chunk in keys.chunks(PARALLEL_READS) {
            let reads = join_all(chunk.iter().map(|key| self.storage.get_bytes(key))).await;
            for (key, read) in chunk.iter().zip(reads) {
                let bytes = match read {
                    Ok(bytes) => bytes.to_vec(),
                    // Gone between the listing and the read: nothing to restore.
                    Err(error) if error.is_not_found() => continue,
                    Err(error) => return Err(error),
                };
                let problem = self
                    .restore_one(key, bytes, capture_storage_url, &mut adopt, &mut report)
                    .await;
                if let Some(problem) = problem {
                    tracing::warn!("{problem}");
                    report.problems.push(problem);
                }
            }
        }
        Ok(report)
    }

    /// Restores one record through `adopt` and counts it; returns the
    /// warning to show when it was not used.
    async fn restore_one(
        &self,
        key: &str,
        bytes: Vec<u8>,
        capture_storage_url: &str,
        adopt: &mut impl FnMut(CaptureRecord) -> Result<bool, String>,
        report: &mut RestoreReport,
    ) -> Option<String> {
        let record = match parse(&bytes) {
            Ok(Found::Capture(record)) => *record,
            Ok(Found::SetAside) => return None,
            Ok(Found::OtherFormat(format)) => {
                return Some(format!(
                    "capture record {} was written by another rankline version (format \
                     {format:?}, this one reads {RECORD_FORMAT}); ignored and left as it is",
                    self.describe(key)
                ))
            }
            Err(reason) => return Some(self.set_aside(key, bytes, &reason).await),
        };
        if record.profile_id != profile_id_of(key) {
            let reason = format!("it names capture {:?}", record.profile_id);
            return Some(self.set_aside(key, bytes, &reason).await);
        }
        let record = match self.admit(record, key, capture_storage_url) {
            Ok(record) => record,
            Err(ignored) => return Some(ignored),
        };
        let profile_id = record.profile_id.to_string();
        match adopt(record) {
            Ok(true) => report.running.push(profile_id),
            Ok(false) => report.finished += 1,
            Err(reason) => return Some(self.set_aside(key, bytes, &reason).await),
        }
        None
    }

    /// Checks that a record belongs where it was found and to this
    /// coordinator's storage; says why not otherwise.
    fn admit(
        &self,
        mut record: CaptureRecord,
        key: &str,
        capture_storage_url: &str,
    ) -> Result<CaptureRecord, String> {
        if record.storage_url != capture_storage_url {
            if !self.inside_capture_storage {
                return Err(format!(
                    "capture record {} is for captures in {}, but this coordinator stores into \
                     {capture_storage_url}; ignored (start a coordinator with --storage {} to \
                     finish capture {})",
                    self.describe(key),
                    record.storage_url,
                    record.storage_url,
                    record.profile_id
                ));
            }
            // The storage itself moved (a renamed folder): the records came
            // with it, so the captures are where they are now.
            record.storage_url = capture_storage_url.to_string();
        }
        Ok(record)
    }

    /// Copies an unreadable record to `set-aside/` and leaves a note in its
    /// place, so the next start neither trips over it again nor reuses its
    /// profile id. Returns the warning to show.
    async fn set_aside(&self, key: &str, bytes: Vec<u8>, reason: &str) -> String {
        let profile_id = profile_id_of(key);
        let copy = format!(
            "{}{SET_ASIDE_FOLDER}/{profile_id}.json.{}",
            self.prefix,
            unix_now_ns()
        );
        let note = SetAsideNote {
            format: RECORD_FORMAT.to_string(),
            profile_id: profile_id.to_string(),
            set_aside_as: copy.clone(),
            reason: reason.to_string(),
        };
        let moved = async {
            self.storage.put_bytes(&copy, bytes).await?;
            let note = serde_json::to_vec_pretty(&note).unwrap_or_default();
            self.storage.put_bytes(key, note).await
        }
        .await;
        let what = format!(
            "capture record {} is unreadable ({reason})",
            self.describe(key)
        );
        match moved {
            Ok(_) => format!(
                "{what}; the coordinator starts without capture {profile_id} (its agents' reports \
                 are ignored). The record was moved to {} and a note left in its place; look at \
                 it, then delete both",
                self.describe(&copy)
            ),
            Err(error) => format!(
                "{what}; the coordinator starts without capture {profile_id}. Could not move the \
                 record aside ({error}), so it stays where it is"
            ),
        }
    }

    fn describe(&self, key: &str) -> String {
        object_location(self.storage.url(), key)
    }
}

/// `captures/<id>.json` → `<id>`.
fn profile_id_of(key: &str) -> &str {
    let name = key.rsplit('/').next().unwrap_or(key);
    name.strip_suffix(".json").unwrap_or(name)
}

fn parse(bytes: &[u8]) -> Result<Found, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    let format = value
        .get("format")
        .and_then(Value::as_str)
        .ok_or("it has no \"format\" field")?;
    if format != RECORD_FORMAT {
        if format.starts_with(RECORD_FAMILY) {
            return Ok(Found::OtherFormat(format.to_string()));
        }
        return Err(format!("its format {format:?} is not {RECORD_FORMAT}"));
    }
    if value.get("set_aside_as").is_some() {
        return Ok(Found::SetAside);
    }
    serde_json::from_value(value)
        .map(|record| Found::Capture(Box::new(record)))
        .map_err(|e| format!("not a capture record: {e}"))
}

/// The coordinator-clock instant of a monotonic instant.
fn unix_of(instant: Instant, now: Instant, now_unix_ns: i64) -> i64 {
    let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX / 2);
    match instant.checked_duration_since(now) {
        Some(ahead) => now_unix_ns.saturating_add(nanos(ahead)),
        None => now_unix_ns.saturating_sub(nanos(now - instant)),
    }
}

/// The monotonic instant of a coordinator-clock instant.
fn instant_of(unix_ns: i64, now: Instant, now_unix_ns: i64) -> Instant {
    let delta = Duration::from_nanos(unix_ns.abs_diff(now_unix_ns));
    if unix_ns >= now_unix_ns {
        now + delta
    } else {
        now.checked_sub(delta).unwrap_or(now)
    }
}

impl CaptureRecord {
    /// The record of a capture as it is now.
    pub fn of(capture: &Capture) -> CaptureRecord {
        let now = Instant::now();
        let now_unix_ns = unix_now_ns();
        CaptureRecord {
            format: RECORD_FORMAT.to_string(),
            profile_id: capture.profile_id.clone(),
            phase: capture.phase.word().to_string(),
            storage_url: capture.storage_url.clone(),
            created_unix_ns: capture.created_unix_ns,
            start_at_unix_ns: capture.start_at_unix_ns,
            finished_unix_ns: capture.finished_unix_ns,
            settings: SettingsRecord::from(&capture.settings),
            manifest_key: capture.manifest_key.clone(),
            ranks: capture
                .ranks
                .iter()
                .map(|rank| RankRecord {
                    identity: rank_identity(&rank.identity),
                    agent_version: rank.identity.agent_version.clone(),
                    state: rank.state.word().to_string(),
                    detail: rank.detail.clone(),
                    objects: rank
                        .objects
                        .iter()
                        .map(|object| ObjectRecord {
                            key: object.key.clone(),
                            size: object.size,
                            sha256: object.sha256.clone(),
                        })
                        .collect(),
                    deadline_unix_ns: unix_of(rank.deadline, now, now_unix_ns),
                    decided_by_coordinator: rank.decided_by_coordinator,
                    storage_checked: rank.storage_checked,
                    last_update: rank.latest.as_ref().map(|update| UpdateRecord {
                        at_unix_ns: update.at_unix_ns,
                        bytes_done: update.bytes_done,
                        bytes_total: update.bytes_total,
                    }),
                })
                .collect(),
            audit: capture.audit.iter().map(audit_record).collect(),
            failure: capture.failure.clone(),
        }
    }

    /// The capture this record describes. Unfinished ranks get at least
    /// until `earliest_deadline`, so their agents can report after a restart
    /// even when the deadline passed while the coordinator was away.
    pub fn into_capture(
        self,
        changes: std::sync::Arc<tokio::sync::Notify>,
        earliest_deadline: Instant,
    ) -> Result<Capture, String> {
        let phase = Phase::from_word(&self.phase)
            .ok_or_else(|| format!("unknown capture phase {:?}", self.phase))?;
        let now = Instant::now();
        let now_unix_ns = unix_now_ns();
        let mut ranks = Vec::with_capacity(self.ranks.len());
        for record in self.ranks {
            let state = RankState::from_word(&record.state).ok_or_else(|| {
                format!(
                    "rank {} has an unknown state {:?}",
                    record.identity.agent_id, record.state
                )
            })?;
            if phase != Phase::Running && !state.is_final() {
                return Err(format!(
                    "the capture is {} but rank {} is still {}",
                    phase.word(),
                    record.identity.agent_id,
                    state.word()
                ));
            }
            let mut identity = agent_identity(&record.identity);
            identity.agent_version = record.agent_version;
            let objects: Vec<StoredObject> = record
                .objects
                .into_iter()
                .map(|object| StoredObject {
                    key: object.key,
                    size: object.size,
                    sha256: object.sha256,
                })
                .collect();
            let latest = record.last_update.map(|progress| {
                let mut update = RankUpdate {
                    profile_id: self.profile_id.to_string(),
                    detail: record.detail.clone(),
                    objects: objects.clone(),
                    at_unix_ns: progress.at_unix_ns,
                    bytes_done: progress.bytes_done,
                    bytes_total: progress.bytes_total,
                    ..Default::default()
                };
                update.set_state(state);
                update
            });
            ranks.push(Rank {
                identity,
                state,
                detail: record.detail,
                objects,
                latest,
                deadline: instant_of(record.deadline_unix_ns, now, now_unix_ns)
                    .max(earliest_deadline),
                decided_by_coordinator: record.decided_by_coordinator,
                storage_checked: record.storage_checked,
            });
        }
        if ranks.is_empty() {
            return Err("it has no ranks".to_string());
        }
        let start = StartCapture {
            profile_id: self.profile_id.to_string(),
            start_at_unix_ns: self.start_at_unix_ns,
            settings: Some(CaptureSettings::from(&self.settings)),
            storage_url: self.storage_url,
        };
        let mut capture = Capture::with_ranks(self.profile_id, &start, ranks, changes);
        capture.created_unix_ns = self.created_unix_ns;
        capture.phase = phase;
        capture.finished_unix_ns = self.finished_unix_ns;
        capture.manifest_key = self.manifest_key;
        capture.audit = self.audit.iter().map(audit_entry).collect();
        capture.failure = self.failure;
        Ok(capture)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rankline_proto::{
        AgentIdentity, CaptureSettings, CaptureStatus, RankState, Role, ServerKind,
    };
    use tokio::sync::Notify;

    use super::*;

    fn identity(tp: u32) -> AgentIdentity {
        let mut identity = AgentIdentity {
            agent_id: format!("h{tp}/prefill-0/TP-{tp}-EP-0"),
            host: format!("h{tp}"),
            tp_rank: tp,
            server_url: "http://127.0.0.1:30000".into(),
            trigger: tp == 0,
            agent_version: "1.2.3".into(),
            ..Default::default()
        };
        identity.set_role(Role::Prefill);
        identity.set_server_kind(ServerKind::SglangJax);
        identity
    }

    fn running_capture() -> Capture {
        let start = StartCapture {
            profile_id: "c1".into(),
            start_at_unix_ns: 1_700_000_000_000_000_000,
            settings: Some(CaptureSettings {
                num_steps: Some(5),
                timeout_ms: 60_000,
                ..Default::default()
            }),
            storage_url: "file:///data".into(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut capture = Capture::new(
            ProfileId::parse("c1").unwrap(),
            &start,
            vec![identity(1), identity(0)],
            deadline,
            Arc::default(),
        );
        let mut uploading = RankUpdate {
            profile_id: "c1".into(),
            detail: "2 files".into(),
            at_unix_ns: 42,
            bytes_done: 10,
            bytes_total: 20,
            ..Default::default()
        };
        uploading.set_state(RankState::Uploading);
        capture.apply_agent_update(0, uploading);
        capture.end_rank(1, RankState::Lost, "agent went silent".into());
        capture.fail("workload failed: HTTP 400".into(), "token ops".into());
        capture
    }

    #[test]
    fn a_capture_survives_its_record() {
        let capture = running_capture();
        let record = CaptureRecord::of(&capture);
        let json = serde_json::to_vec(&record).unwrap();
        let Ok(Found::Capture(back)) = parse(&json) else {
            panic!("the record parses");
        };
        assert_eq!(*back, record);
        let restored = back
            .into_capture(Arc::new(Notify::new()), Instant::now())
            .unwrap();
        assert_eq!(restored.summary(), capture.summary());
        assert_eq!(restored.start_at_unix_ns, capture.start_at_unix_ns);
        assert_eq!(restored.rank_events(), capture.rank_events());
        assert!(restored.ranks[1].decided_by_coordinator);
        assert_eq!(restored.failure, "workload failed: HTTP 400");
        let drift = restored.ranks[0]
            .deadline
            .max(capture.ranks[0].deadline)
            .duration_since(restored.ranks[0].deadline.min(capture.ranks[0].deadline));
        assert!(drift < Duration::from_secs(1), "deadline kept: {drift:?}");
        assert_eq!(
            restored.unsaved_version(),
            None,
            "a restored record is saved"
        );
    }

    #[test]
    fn a_failure_fails_the_capture_once_its_ranks_end_even_if_they_are_ok() {
        let mut capture = running_capture();
        assert_eq!(capture.summary().status(), CaptureStatus::Running);
        for index in 0..capture.ranks.len() {
            capture.end_rank(index, RankState::Ok, String::new());
        }
        let summary = capture.summary();
        assert_eq!(summary.status(), CaptureStatus::Failed);
        assert_eq!(summary.failure, "workload failed: HTTP 400");
        assert_eq!(summary.audit.last().unwrap().action, "failed");
        assert!(summary.ranks.iter().all(|r| r.state() == RankState::Ok));
    }

    #[test]
    fn a_passed_deadline_leaves_room_for_the_agents() {
        let mut record = CaptureRecord::of(&running_capture());
        record.ranks[0].deadline_unix_ns = unix_now_ns() - 1_000_000_000;
        let room = Instant::now() + Duration::from_secs(5);
        let restored = record.into_capture(Arc::default(), room).unwrap();
        assert!(restored.ranks[0].deadline >= room);
    }

    #[test]
    fn nonsense_is_refused_with_a_reason() {
        assert!(parse(b"{\"format\": ")
            .err()
            .unwrap()
            .contains("not valid JSON"));
        assert!(parse(b"{}").err().unwrap().contains("format"));
        assert!(matches!(
            parse(br#"{"format": "rankline.coordinator.capture/v9"}"#),
            Ok(Found::OtherFormat(_))
        ));
        let mut record = CaptureRecord::of(&running_capture());
        record.ranks[0].state = "sleeping".into();
        let error = record
            .into_capture(Arc::default(), Instant::now())
            .err()
            .unwrap();
        assert!(error.contains("sleeping"), "{error}");
    }
}
