//! State shared by both services and the background tasks: the config, the
//! storage, the registry behind its lock, the shutdown signal, the manifest
//! writer, and the capture records (saving them, restoring them).

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rankline_layout::{manifest_key, read_sidecar, write_document, RankCoords, RankKey};
use rankline_proto::StoredObject;
use rankline_storage::{Backoff, Storage, StorageError};
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::capture::Phase;
use crate::config::CoordinatorConfig;
use crate::registry::Registry;
use crate::state::{RecordStore, RestoreReport};
use rankline_proto::convert::manifest_from_summary;

/// How long a stopping coordinator waits for manifests still being written.
const MANIFEST_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping coordinator waits for its last capture records.
const RECORD_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest gap between two record writes: a burst of rank changes (64
/// agents arming at once) becomes one write of each capture's record.
pub(crate) const RECORD_WRITE_INTERVAL: Duration = Duration::from_millis(250);
/// How many restored captures are taken between two trims of the finished
/// ones kept in memory.
const RESTORE_TRIM_EVERY: usize = 256;
/// The first wait before writing a manifest again while storage fails.
const MANIFEST_RETRY_INITIAL: Duration = Duration::from_secs(1);
/// The longest wait before writing records or manifests again while storage fails.
const RECORD_RETRY_MAX: Duration = Duration::from_secs(30);

pub(crate) struct Shared {
    pub config: CoordinatorConfig,
    pub storage: Storage,
    pub records: RecordStore,
    registry: Mutex<Registry>,
    shutdown: watch::Sender<bool>,
    manifest_tasks: Mutex<JoinSet<()>>,
}

impl Shared {
    pub fn new(config: CoordinatorConfig, storage: Storage, records: RecordStore) -> Shared {
        Shared {
            config,
            storage,
            records,
            registry: Mutex::default(),
            shutdown: watch::Sender::new(false),
            manifest_tasks: Mutex::default(),
        }
    }

    /// The registry, locked. Never hold it across an await.
    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Resolves once the coordinator begins to shut down.
    pub async fn shutting_down(&self) {
        let mut signal = self.shutdown.subscribe();
        let _ = signal.wait_for(|stopping| *stopping).await;
    }

    /// Ends agent streams and followers; new work is refused.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
        self.registry().shut_down();
    }

    /// Writes the manifests of these captures in the background.
    pub fn settle_all(self: &Arc<Self>, profile_ids: Vec<String>) {
        if profile_ids.is_empty() {
            return;
        }
        for profile_id in profile_ids {
            self.spawn_manifest_task(Arc::clone(self).settle(profile_id));
        }
    }

    /// Writes a finished capture's manifest again from its newest state, in
    /// the background like `settle_all`; the receiver hears when the write
    /// landed or was given up (it goes on if the receiver is dropped).
    pub fn rewrite_manifest(self: &Arc<Self>, profile_id: String) -> oneshot::Receiver<()> {
        let (done, written) = oneshot::channel();
        let settle = Arc::clone(self).settle(profile_id);
        self.spawn_manifest_task(async move {
            settle.await;
            let _ = done.send(());
        });
        written
    }

    /// Runs a manifest write among those shutdown waits for.
    fn spawn_manifest_task(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = self
            .manifest_tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }

    /// Reads the records a previous coordinator left: finished captures are
    /// listed again, running ones resume (their agents get until the restart
    /// grace to come back), and manifests that were due are written.
    pub async fn restore(self: &Arc<Self>) -> Result<RestoreReport, StorageError> {
        let earliest_deadline = Instant::now() + self.config.lost_after_restart();
        let changes = self.registry().record_changes();
        let mut due = Vec::new();
        let mut adopted: usize = 0;
        let report = self
            .records
            .load(self.storage.url(), |record| {
                let capture = record.into_capture(Arc::clone(&changes), earliest_deadline)?;
                let profile_id = capture.profile_id.to_string();
                let running = capture.phase == Phase::Running;
                let mut registry = self.registry();
                if registry.adopt(capture) {
                    due.push(profile_id);
                }
                // Memory holds a bounded number of finished captures; trim
                // now and then rather than after every record.
                adopted += 1;
                if adopted % RESTORE_TRIM_EVERY == 0 {
                    registry.forget_old_captures();
                }
                Ok(running)
            })
            .await?;
        self.registry().forget_old_captures();
        if !report.running.is_empty() || report.finished > 0 {
            tracing::info!(
                running = report.running.len(), finished = report.finished,
                records = %self.records.location(),
                "restored the captures of the previous coordinator"
            );
        }
        self.settle_all(due);
        Ok(report)
    }

    /// Stores the record of every capture changed since its last one.
    /// Only the record writer calls this (and, once it stopped, the final
    /// save), so a capture's newest record is always the last one written.
    /// Returns how many were written, or what failed.
    pub async fn save_records(&self) -> Result<usize, String> {
        let unsaved = self.registry().unsaved_records();
        let mut saved = 0;
        let mut failure = None;
        for (version, record) in unsaved {
            match self.records.save(&record).await {
                Ok(()) => {
                    saved += 1;
                    if let Some(capture) = self.registry().capture_mut(&record.profile_id) {
                        capture.saved(version);
                    }
                }
                Err(error) => failure = Some(format!("capture {}: {error}", record.profile_id)),
            }
        }
        failure.map_or(Ok(saved), Err)
    }

    /// Writes capture records as captures change, at most every
    /// [`RECORD_WRITE_INTERVAL`], backing off while storage fails.
    pub async fn save_records_until_shutdown(self: Arc<Self>) {
        let changes = self.registry().record_changes();
        let mut failures: u32 = 0;
        loop {
            if failures == 0 {
                tokio::select! {
                    () = changes.notified() => {}
                    () = self.shutting_down() => return,
                }
            }
            match self.save_records().await {
                Ok(saved) => {
                    if failures > 0 {
                        tracing::info!(records = %self.records.location(), "capture records are written again");
                    }
                    tracing::debug!(saved, "capture records written");
                    failures = 0;
                }
                Err(error) => {
                    failures += 1;
                    // Loud once, then quiet while the outage lasts.
                    if failures == 1 {
                        tracing::warn!(records = %self.records.location(), "cannot write capture records ({error}); retrying. A coordinator restarted now would resume those captures from older records");
                    } else {
                        tracing::debug!(failures, "capture records still not written: {error}");
                    }
                }
            }
            let pause = if failures == 0 {
                RECORD_WRITE_INTERVAL
            } else {
                (RECORD_WRITE_INTERVAL * 2u32.saturating_pow(failures.min(8))).min(RECORD_RETRY_MAX)
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = self.shutting_down() => return,
            }
        }
    }

    /// At shutdown: waits (bounded) for manifests still being written, stops
    /// the record writer, and saves the records changed since.
    pub async fn finish_writes(&self, record_writer: JoinHandle<()>) {
        self.drain_manifest_writes().await;
        let stop_writer = record_writer.abort_handle();
        let saved = tokio::time::timeout(RECORD_DRAIN_TIMEOUT, async {
            let _ = record_writer.await;
            self.save_records().await
        })
        .await;
        match saved {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::error!(records = %self.records.location(), "could not write the last capture records ({error}); a restarted coordinator resumes those captures from older records")
            }
            Err(_) => {
                stop_writer.abort();
                tracing::error!(records = %self.records.location(), "stopped before the last capture records were written; a restarted coordinator resumes those captures from older records");
            }
        }
    }

    /// Waits (bounded) for manifest writes still in progress.
    async fn drain_manifest_writes(&self) {
        let mut tasks = std::mem::take(
            &mut *self
                .manifest_tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let drained = tokio::time::timeout(MANIFEST_DRAIN_TIMEOUT, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("stopped before every manifest was written; those captures' ranks are in storage without a manifest");
        }
    }

    /// Writes a capture's manifest from its newest state, and finishes the
    /// capture if it was waiting for that. Writes of one capture run one at
    /// a time, each from the state at its start, so the last write is the
    /// newest truth.
    async fn settle(self: Arc<Self>, profile_id: String) {
        let Some(writes) = self
            .registry()
            .capture_mut(&profile_id)
            .map(|capture| Arc::clone(&capture.manifest_writes))
        else {
            return;
        };
        let _one_at_a_time = writes.lock().await;
        self.recover_stored_ranks(&profile_id).await;

        let key = manifest_key(&profile_id);
        let mut backoff = Backoff::new(MANIFEST_RETRY_INITIAL, RECORD_RETRY_MAX);
        let written_key = loop {
            // Each try writes the newest state: late rank updates that came
            // in during a storage outage are in the manifest that lands.
            let Some(manifest) = self.registry().capture_mut(&profile_id).map(|capture| {
                manifest_from_summary(
                    &capture.profile_id,
                    &capture.summary(),
                    capture.start_at_unix_ns,
                )
            }) else {
                return;
            };
            match self
                .storage
                .put_bytes(&key, write_document(&manifest))
                .await
            {
                Ok(_) => {
                    tracing::info!(capture = %profile_id, status = %manifest.status, key = %key, "manifest written");
                    break Some(key);
                }
                Err(error) if error.is_transient() => {
                    // The capture ends now (its watchers are not kept
                    // waiting on storage); the manifest follows when it can.
                    if let Some(capture) = self.registry().capture_mut(&profile_id) {
                        capture.manifest_written(None);
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        capture = %profile_id, %error, retry_in = ?delay,
                        "could not write the manifest; retrying until storage answers"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        // The record keeps the write due: the next coordinator retries it.
                        () = self.shutting_down() => break None,
                    }
                }
                Err(error) => {
                    tracing::error!(capture = %profile_id, %error, "could not write the manifest; the rank files are in storage without one");
                    break None;
                }
            }
        };
        let mut registry = self.registry();
        if let Some(capture) = registry.capture_mut(&profile_id) {
            capture.manifest_written(written_key);
        }
        registry.forget_old_captures();
    }

    /// A rank the coordinator gave up on (lost, timed out) may still have
    /// finished: its sidecar, written last, proves it. Such ranks become
    /// `ok` with the sidecar's objects, so the manifest tells the truth.
    async fn recover_stored_ranks(&self, profile_id: &str) {
        let unchecked: Vec<(usize, RankCoords)> = {
            let mut registry = self.registry();
            let Some(capture) = registry.capture_mut(profile_id) else {
                return;
            };
            capture
                .ranks
                .iter_mut()
                .enumerate()
                .filter(|(_, rank)| rank.decided_by_coordinator && !rank.storage_checked)
                .map(|(index, rank)| {
                    rank.storage_checked = true;
                    (index, rank.identity.rank_coords())
                })
                .collect()
        };
        for (index, coords) in unchecked {
            let Some(objects) = self.stored_rank(profile_id, &coords).await else {
                continue;
            };
            let mut registry = self.registry();
            if let Some(capture) = registry.capture_mut(profile_id) {
                if capture.ranks[index].decided_by_coordinator {
                    tracing::info!(capture = %profile_id, rank = %coords.display_name(), "rank's sidecar is in storage; marking it ok");
                    capture.settle_from_storage(index, objects);
                }
            }
        }
    }

    /// The objects of a rank whose sidecar is in storage.
    async fn stored_rank(
        &self,
        profile_id: &str,
        coords: &RankCoords,
    ) -> Option<Vec<StoredObject>> {
        let sidecar_key = RankKey::new(profile_id, coords).sidecar();
        let bytes = match self.storage.get_bytes(&sidecar_key).await {
            Ok(bytes) => bytes,
            Err(error) if error.is_not_found() => return None,
            Err(error) => {
                tracing::warn!(key = %sidecar_key, %error, "could not check storage for a rank's sidecar");
                return None;
            }
        };
        let sidecar = match read_sidecar(&bytes) {
            Ok(sidecar) => sidecar,
            Err(error) => {
                tracing::warn!(key = %sidecar_key, %error, "a rank's sidecar is not valid; leaving the rank as it is");
                return None;
            }
        };
        let mut objects: Vec<StoredObject> = sidecar
            .files
            .iter()
            .map(|file| StoredObject {
                key: file.key.clone(),
                size: file.size,
                sha256: file.sha256.clone(),
            })
            .collect();
        objects.push(StoredObject {
            key: sidecar_key,
            size: bytes.len() as u64,
            sha256: String::new(),
        });
        Some(objects)
    }
}
