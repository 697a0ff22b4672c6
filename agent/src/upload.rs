//! Storing a capture's files from its journal, until storage holds them.
//!
//! A capture hands its journal (files, keys, the sidecar) over once its
//! files are complete; an agent that starts finds the journals a killed
//! predecessor left and takes them over the same way. Each file is
//! streamed up, read back and checked against the size and sha256 the
//! sidecar will say; the sidecar goes last. Failures that may pass (storage
//! unreachable, overloaded, a read-back that differs) are retried with
//! backoff and jitter for as long as it takes, past the capture's deadline:
//! the coordinator takes a late final update and rewrites the manifest.
//! One upload runs at a time, so memory stays bounded however many
//! captures wait. The files stay in the spool; retention removes them
//! later, and only once verified.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rankline_layout::{write_document, FileRecord, ProfileId, Sidecar};
use rankline_proto::{unix_now_ns, AgentIdentity, RankState, RankUpdate, StoredObject};
use rankline_storage::{Storage, StorageError, StoredFile};
use tokio::time::Instant;

use crate::agent::Shared;
use crate::book::FINISHED_RETENTION;
use crate::capture::{self, rank_update, CaptureError};
use crate::spool::{self, Journal, JournalFile, JournalScan};
use rankline_storage::Backoff;

/// How often upload progress is reported.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// A retry is logged at warn level the first time and then every this many.
const WARN_EVERY: u32 = 10;

/// Starts storing a journaled capture in the background. The first
/// `uploading` update is published before this returns, so a hello sent
/// right after carries it.
pub(crate) fn start(shared: Arc<Shared>, journal: Journal, resumed: bool) {
    let Some(sidecar) = journal.record.sidecar.clone() else {
        // Only journals that have one are handed over; nothing to store without it.
        tracing::error!(path = %journal.path().display(), "a capture journal without a sidecar cannot be uploaded");
        return;
    };
    let mut upload = Upload {
        total: journal.record.files.iter().map(|file| file.size).sum(),
        profile_id: journal.record.profile_id.clone(),
        shared,
        journal,
        sidecar,
    };
    let mut detail = format!(
        "{} files, {} to {}",
        upload.journal.record.files.len(),
        rankline_units::bytes(upload.total),
        upload.journal.record.storage_url
    );
    if resumed {
        detail.push_str("; resumed from the spool journal after the agent restarted");
    }
    upload.journal.record.state = RankState::Uploading.word().to_string();
    upload.journal.record.detail = detail.clone();
    upload.save_journal();
    tracing::info!(profile_id = %upload.profile_id, state = "uploading", "{detail}");
    upload.publish(detail, upload.bytes_verified());
    let uploads = upload.shared.uploads.clone();
    uploads.spawn(upload.run());
}

/// Takes over what a previous run of this agent left in its journals:
/// uploads are resumed, a capture cut off before its upload goes on from
/// the state it was in (or fails with the reason it cannot), and captures that ended in the last minutes are reported
/// again (their final update may never have reached the coordinator).
/// Captures this run already knows are left alone, so calling it again
/// (after discovery changed the agent's id) is harmless.
pub(crate) fn resume(shared: &Arc<Shared>) {
    let identity = shared.identity.borrow().clone();
    let spool = &shared.config.spool;
    let JournalScan {
        journals,
        unreadable,
    } = match Journal::all_of(spool, &identity.agent_id) {
        Ok(found) => found,
        Err(error) => {
            tracing::warn!(spool = %spool.display(), %error, "cannot read the capture journals; unfinished uploads of an earlier run are not resumed");
            return;
        }
    };
    for (path, error) in unreadable {
        tracing::warn!(path = %path.display(), %error, "cannot read a capture journal; it and the files it names are left alone");
    }
    for journal in journals {
        let record = &journal.record;
        if shared.book.knows(&record.profile_id) {
            continue;
        }
        match record.state.as_str() {
            "ok" | "failed" => report_again(shared, &journal),
            "uploading" if record.sidecar.is_some() => start(Arc::clone(shared), journal, true),
            _ => {
                if let Err((journal, reason)) = capture::resume(shared, journal) {
                    fail_unresumable(shared, &identity, journal, &reason);
                }
            }
        }
    }
    prune(shared, &identity.agent_id);
}

/// A capture cut off by a restart that cannot go on: failed with the
/// reason, and the server not left profiling.
fn fail_unresumable(
    shared: &Shared,
    identity: &AgentIdentity,
    mut journal: Box<Journal>,
    reason: &str,
) {
    let record = &journal.record;
    let state = record.state.clone();
    let mut detail = format!(
        "the agent restarted (it was killed or crashed) while this capture was {state} and cannot go on: {reason}; files written so far stay in {}",
        record.output_dir.display()
    );
    if identity.trigger && matches!(state.as_str(), "armed" | "profiling" | "stopping") {
        let server = shared.server.clone();
        tokio::spawn(async move { server.stop_profile().await });
        detail.push_str("; rankline sent /stop_profile so the server is not left profiling");
    }
    tracing::warn!(profile_id = %record.profile_id, "capture failed: {detail}");
    let update = rank_update(&record.profile_id, RankState::Failed, detail.clone());
    journal.record.state = RankState::Failed.word().to_string();
    journal.record.detail = detail;
    if let Err(error) = journal.save() {
        tracing::warn!(path = %journal.path().display(), %error, "cannot write the capture journal");
    }
    shared.book.publish(update);
}

/// Reports a capture that ended shortly before the restart once more.
fn report_again(shared: &Shared, journal: &Journal) {
    let record = &journal.record;
    let age_ns = unix_now_ns().saturating_sub(record.updated_unix_ns);
    if u128::try_from(age_ns).unwrap_or(0) > FINISHED_RETENTION.as_nanos() {
        return;
    }
    let ok = record.state == "ok";
    let mut update = rank_update(
        &record.profile_id,
        if ok { RankState::Ok } else { RankState::Failed },
        record.detail.clone(),
    );
    if ok {
        update.objects = stored_objects(record);
        update.bytes_done = update.objects.iter().map(|o| o.size).sum();
        update.bytes_total = update.bytes_done;
    }
    shared.book.publish(update);
}

/// The objects of a stored capture: its files, then the sidecar.
fn stored_objects(record: &spool::CaptureRecord) -> Vec<StoredObject> {
    let mut objects: Vec<StoredObject> = record
        .files
        .iter()
        .map(|file| StoredObject {
            key: file.key.clone(),
            size: file.size,
            sha256: file.sha256.clone().unwrap_or_default(),
        })
        .collect();
    if let (Some(size), Some(sha256)) = (record.sidecar_size, &record.sidecar_sha256) {
        objects.push(StoredObject {
            key: record.sidecar_key.clone(),
            size,
            sha256: sha256.clone(),
        });
    }
    objects
}

/// Applies the retention policy to an agent's captures in the spool.
fn prune(shared: &Shared, agent_id: &str) {
    match spool::prune(&shared.config.spool, agent_id, shared.config.retention) {
        Ok(pruned) if !pruned.captures.is_empty() => tracing::info!(
            captures = ?pruned.captures,
            "retention: removed the spool files of {} captures ({}) whose upload was verified",
            pruned.captures.len(),
            rankline_units::bytes(pruned.bytes)
        ),
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(spool = %shared.config.spool.display(), %error, "retention: cannot prune the spool")
        }
    }
}

/// How an upload run ended.
enum End {
    Stored(Vec<StoredObject>),
    Failed(CaptureError),
    ShutDown,
}

struct Upload {
    shared: Arc<Shared>,
    journal: Journal,
    /// The sidecar as built at the end of the capture; its file records are
    /// filled in from the journal once every file is verified.
    sidecar: Sidecar,
    profile_id: ProfileId,
    total: u64,
}

impl Upload {
    async fn run(mut self) {
        let shutdown = self.shared.stop_captures.clone();
        let end = tokio::select! {
            stored = self.store_all() => stored.map_or_else(End::Failed, End::Stored),
            _ = shutdown.cancelled() => End::ShutDown,
        };
        match end {
            End::Stored(objects) => self.succeed(objects),
            End::Failed(error) => self.fail(error.to_string()),
            End::ShutDown => {
                // The journal still says `uploading`: the next start resumes.
                let detail = format!(
                    "the agent is shutting down; the upload resumes when it starts again (the files stay in {})",
                    self.journal.record.output_dir.display()
                );
                tracing::info!(profile_id = %self.profile_id, "{detail}");
                self.publish(detail, self.bytes_verified());
            }
        }
    }

    /// Every file not yet verified, then the sidecar.
    async fn store_all(&mut self) -> Result<Vec<StoredObject>, CaptureError> {
        let shared = Arc::clone(&self.shared);
        let _one_at_a_time = match shared.upload_slot.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                self.publish(
                    "waiting for another capture's upload to finish".to_string(),
                    self.bytes_verified(),
                );
                shared
                    .upload_slot
                    .acquire()
                    .await
                    .map_err(|_| self.storage_error("the capture", &"the agent is stopping"))?
            }
        };
        let url = self.journal.record.storage_url.clone();
        let storage = Storage::open(&url).map_err(|e| self.storage_error("the capture", &e))?;

        for index in 0..self.journal.record.files.len() {
            let file = self.journal.record.files[index].clone();
            if file.uploaded {
                continue;
            }
            let done_before = self.bytes_verified();
            let stored = self
                .with_retries(&file.key, || self.store_file(&storage, &file, done_before))
                .await
                .map_err(|e| self.storage_error(&file.key, &e))?;
            if stored.size != file.size {
                tracing::warn!(
                    file = %file.local_path.display(),
                    collected = file.size,
                    stored = stored.size,
                    "the file changed size after it was collected; the sidecar records what was stored"
                );
            }
            let journaled = &mut self.journal.record.files[index];
            journaled.size = stored.size;
            journaled.sha256 = Some(stored.sha256);
            journaled.uploaded = true;
            self.save_journal();
        }

        let mut sidecar = self.sidecar.clone();
        sidecar.files = self.journal.record.files.iter().map(file_record).collect();
        let key = self.journal.record.sidecar_key.clone();
        let text = write_document(&sidecar);
        let stored_sidecar = self
            .with_retries(&key, || async {
                let stored = storage.put_bytes(&key, text.clone()).await?;
                storage.verify(&key, stored.size, &stored.sha256).await?;
                Ok(stored)
            })
            .await
            .map_err(|e| self.storage_error(&key, &e))?;
        let record = &mut self.journal.record;
        record.sidecar = Some(sidecar);
        record.sidecar_written = true;
        record.sidecar_size = Some(stored_sidecar.size);
        record.sidecar_sha256 = Some(stored_sidecar.sha256);
        Ok(stored_objects(record))
    }

    /// One attempt at one file: stream it up, then read it back.
    async fn store_file(
        &self,
        storage: &Storage,
        file: &JournalFile,
        done_before: u64,
    ) -> Result<StoredFile, StorageError> {
        let stored = self
            .upload_with_progress(storage, file, done_before)
            .await?;
        storage
            .verify(&stored.key, stored.size, &stored.sha256)
            .await?;
        Ok(stored)
    }

    /// Streams one file to storage, reporting progress about once a second.
    async fn upload_with_progress(
        &self,
        storage: &Storage,
        file: &JournalFile,
        done_before: u64,
    ) -> Result<StoredFile, StorageError> {
        let done = Arc::new(AtomicU64::new(0));
        let progress = {
            let done = Arc::clone(&done);
            move |bytes: u64| done.store(bytes, Ordering::Relaxed)
        };
        let upload = storage.upload_file(&file.key, &file.local_path, &progress);
        tokio::pin!(upload);
        let mut ticks =
            tokio::time::interval_at(Instant::now() + PROGRESS_INTERVAL, PROGRESS_INTERVAL);
        loop {
            tokio::select! {
                stored = &mut upload => return stored,
                _ = ticks.tick() => self.publish(
                    format!("uploading {}", file.key),
                    done_before + done.load(Ordering::Relaxed),
                ),
            }
        }
    }

    /// Runs `attempt` until it succeeds or fails for good, waiting with
    /// backoff and jitter between tries and telling the coordinator why.
    async fn with_retries<T, F, Fut>(&self, key: &str, mut attempt: F) -> Result<T, StorageError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StorageError>>,
    {
        let timing = &self.shared.config.timing;
        let mut backoff = Backoff::new(timing.upload_retry_initial, timing.upload_retry_max);
        let mut failures: u32 = 0;
        loop {
            let error = match attempt().await {
                Ok(value) => {
                    if failures > 0 {
                        tracing::info!(profile_id = %self.profile_id, key, "stored after {failures} failed attempts");
                    }
                    return Ok(value);
                }
                Err(error) if error.is_transient() => error,
                Err(error) => return Err(error),
            };
            failures += 1;
            let delay = backoff.next_delay();
            let detail = format!(
                "storing {key} failed ({failures} attempts so far): {error}; retrying in {:.1} s, for as long as it takes (the files stay in {})",
                delay.as_secs_f64(),
                self.journal.record.output_dir.display()
            );
            if failures == 1 || failures % WARN_EVERY == 0 {
                tracing::warn!(profile_id = %self.profile_id, "{detail}");
            } else {
                tracing::debug!(profile_id = %self.profile_id, "{detail}");
            }
            self.publish(detail, self.bytes_verified());
            tokio::time::sleep(delay).await;
        }
    }

    fn succeed(mut self, objects: Vec<StoredObject>) {
        let bytes: u64 = objects.iter().map(|o| o.size).sum();
        let detail = format!(
            "stored {} objects ({}), each read back and checked by size and sha256",
            objects.len(),
            rankline_units::bytes(bytes)
        );
        tracing::info!(profile_id = %self.profile_id, "capture done: {detail}");
        let mut update = rank_update(&self.profile_id, RankState::Ok, detail.clone());
        update.bytes_done = bytes;
        update.bytes_total = bytes;
        update.objects = objects;
        self.journal.record.state = RankState::Ok.word().to_string();
        self.journal.record.detail = detail;
        self.save_journal();
        self.shared.book.publish(update);
        prune(&self.shared, &self.journal.record.agent_id);
    }

    fn fail(mut self, detail: String) {
        tracing::warn!(profile_id = %self.profile_id, "capture failed: {detail}");
        let update = rank_update(&self.profile_id, RankState::Failed, detail.clone());
        self.journal.record.state = RankState::Failed.word().to_string();
        self.journal.record.detail = detail;
        self.save_journal();
        self.shared.book.publish(update);
    }

    /// An `uploading` update with progress.
    fn publish(&self, detail: String, bytes_done: u64) {
        let mut update: RankUpdate = rank_update(&self.profile_id, RankState::Uploading, detail);
        update.bytes_done = bytes_done;
        update.bytes_total = self.total;
        self.shared.book.publish(update);
    }

    fn bytes_verified(&self) -> u64 {
        self.journal
            .record
            .files
            .iter()
            .filter(|file| file.uploaded)
            .map(|file| file.size)
            .sum()
    }

    /// A journal that cannot be written does not stop the upload: the trace
    /// matters more than resuming it after a restart.
    fn save_journal(&mut self) {
        if let Err(error) = self.journal.save() {
            let advice = if spool::is_disk_full(&error) {
                "the spool's file system is full: free space there"
            } else {
                "check the spool folder"
            };
            tracing::warn!(
                path = %self.journal.path().display(), %error,
                "cannot write the capture journal ({advice}); the upload goes on, but a restart before it ends would not resume it"
            );
        }
    }

    fn storage_error(&self, what: &str, error: &dyn std::fmt::Display) -> CaptureError {
        CaptureError::Storage {
            what: what.to_string(),
            url: self.journal.record.storage_url.clone(),
            reason: error.to_string(),
            kept: self.journal.record.output_dir.clone(),
        }
    }
}

/// The sidecar's record of a verified file.
fn file_record(file: &JournalFile) -> FileRecord {
    FileRecord {
        kind: file.kind,
        key: file.key.clone(),
        size: file.size,
        sha256: file.sha256.clone().unwrap_or_default(),
        source_name: file
            .local_path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
    }
}
