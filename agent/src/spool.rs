//! The agent's local spool: where servers write a capture's files, and a
//! small per-capture journal that says how far the capture got. The journal
//! is what makes the spool durable: an agent restarted mid-upload (even
//! after `kill -9`) reads it and finishes the upload, and the retention
//! policy deletes only files whose upload it records as verified.
//!
//! ```text
//! <spool>/captures/<profile_id>/<role>-<worker>/        the server's output_dir
//! <spool>/agents/<agent id>/captures/<profile_id>.json  this agent's journal
//! ```

use std::io;
use std::path::{Path, PathBuf};

use rankline_layout::{FileKind, ProfileId, RankCoords, Sidecar};
use serde::{Deserialize, Serialize};

/// The `format` of a journal this version writes.
pub const JOURNAL_FORMAT: &str = "rankline.agent-capture/v1";
/// Captures whose files stay in the spool after a verified upload.
pub const DEFAULT_KEEP_CAPTURES: usize = 10;
/// Bytes of capture files the spool keeps after verified uploads.
pub const DEFAULT_KEEP_BYTES: u64 = 10 << 30;

/// `<spool>/captures/<profile_id>/<role>-<worker>`: every agent of one
/// server derives the same string, which is what the trigger sends as
/// `output_dir` and where each host's files land.
pub fn output_dir(spool: &Path, profile_id: &str, coords: &RankCoords) -> PathBuf {
    captures_root(spool)
        .join(profile_id)
        .join(format!("{}-{}", coords.role, coords.worker))
}

fn captures_root(spool: &Path) -> PathBuf {
    spool.join("captures")
}

/// `<spool>/agents/<agent id>/captures`: one agent's journals.
pub fn journal_dir(spool: &Path, agent_id: &str) -> PathBuf {
    spool
        .join("agents")
        .join(file_safe(agent_id))
        .join("captures")
}

/// One file of the capture and whether it is stored yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalFile {
    pub kind: FileKind,
    pub local_path: PathBuf,
    pub key: String,
    pub size: u64,
    #[serde(default)]
    pub sha256: Option<String>,
    /// True once the stored object was read back with this size and sha256;
    /// only then may the local file be deleted.
    #[serde(default)]
    pub uploaded: bool,
}

/// `<profile_id>.json` in the agent's journal folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptureRecord {
    pub format: String,
    pub profile_id: ProfileId,
    pub agent_id: String,
    pub storage_url: String,
    pub output_dir: PathBuf,
    /// The rank's state word (`armed`, ..., `uploading`, `ok`, `failed`).
    pub state: String,
    pub detail: String,
    pub files: Vec<JournalFile>,
    /// The sidecar, built before the upload starts (its `files` are filled
    /// in once they are verified); stored last.
    #[serde(default)]
    pub sidecar: Option<Sidecar>,
    pub sidecar_key: String,
    #[serde(default)]
    pub sidecar_written: bool,
    /// Size and sha256 of the stored sidecar, once written.
    #[serde(default)]
    pub sidecar_size: Option<u64>,
    #[serde(default)]
    pub sidecar_sha256: Option<String>,
    pub updated_unix_ns: i64,
    /// The `StartCapture` as received (prost bytes, hex) and the instants
    /// the capture reached so far: what a restarted agent needs to go on
    /// from any state. Absent in journals of older agents.
    #[serde(default)]
    pub start_command: Option<String>,
    #[serde(default)]
    pub instants: CaptureInstants,
}

/// When the capture's steps happened, on this host's clock (epoch ns).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureInstants {
    pub start_requested_unix_ns: Option<i64>,
    pub stop_requested_unix_ns: Option<i64>,
    pub stop_observed_unix_ns: Option<i64>,
}

impl CaptureRecord {
    /// The capture ended (`ok` or `failed`).
    pub fn is_final(&self) -> bool {
        matches!(self.state.as_str(), "ok" | "failed")
    }

    /// Nothing in the spool still waits for storage: the capture ended and
    /// every file it found was verified in storage.
    pub fn nothing_unverified(&self) -> bool {
        self.is_final() && self.files.iter().all(|file| file.uploaded)
    }
}

/// A capture's journal file, rewritten atomically on every change.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    pub record: CaptureRecord,
}

impl Journal {
    pub fn new(spool: &Path, record: CaptureRecord) -> Journal {
        let path = journal_dir(spool, &record.agent_id).join(format!("{}.json", record.profile_id));
        Journal { path, record }
    }

    /// Reads a journal written by [`Journal::save`].
    pub fn load(path: &Path) -> io::Result<Journal> {
        let text = std::fs::read(path)?;
        let record: CaptureRecord = serde_json::from_slice(&text)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(Journal {
            path: path.to_path_buf(),
            record,
        })
    }

    /// Every journal of `agent_id` in the spool, by profile id.
    pub fn all_of(spool: &Path, agent_id: &str) -> io::Result<JournalScan> {
        let dir = journal_dir(spool, agent_id);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(JournalScan::default()),
            Err(e) => return Err(e),
        };
        let mut journals = Vec::new();
        let mut unreadable = Vec::new();
        for entry in entries {
            let path = entry?.path();
            // `.json.part` files are writes a crash cut short; the `.json` beside is whole.
            if path.extension().is_none_or(|ext| ext != "json") {
                continue;
            }
            match Journal::load(&path) {
                Ok(journal) => journals.push(journal),
                Err(error) => unreadable.push((path, error)),
            }
        }
        journals.sort_by(|a, b| a.record.profile_id.cmp(&b.record.profile_id));
        Ok(JournalScan {
            journals,
            unreadable,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the record (temp file + rename, so a crash never leaves half a journal).
    pub fn save(&mut self) -> io::Result<()> {
        self.record.updated_unix_ns = rankline_proto::unix_now_ns();
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let text = serde_json::to_vec_pretty(&self.record).map_err(io::Error::other)?;
        let temp = self.path.with_extension("json.part");
        let written = std::fs::write(&temp, text).and_then(|()| std::fs::rename(&temp, &self.path));
        if written.is_err() {
            // A full disk leaves a truncated temp file; it must not hold the last free bytes.
            std::fs::remove_file(&temp).ok();
        }
        written
    }

    /// Bytes the capture's files take in the spool now.
    fn bytes_on_disk(&self) -> u64 {
        self.record
            .files
            .iter()
            .filter_map(|file| std::fs::metadata(&file.local_path).ok())
            .map(|meta| meta.len())
            .sum()
    }
}

/// The journals found in an agent's journal folder.
#[derive(Debug, Default)]
pub struct JournalScan {
    pub journals: Vec<Journal>,
    /// Journals that cannot be read, and why.
    pub unreadable: Vec<(PathBuf, io::Error)>,
}

/// How much of its finished captures an agent keeps in its spool. Files
/// whose upload is not verified are kept whatever the policy says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The newest this many captures keep their files.
    pub keep_captures: usize,
    /// ... as long as they take no more than this many bytes together.
    pub keep_bytes: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep_captures: DEFAULT_KEEP_CAPTURES,
            keep_bytes: DEFAULT_KEEP_BYTES,
        }
    }
}

/// What [`prune`] removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub captures: Vec<String>,
    pub bytes: u64,
}

/// Applies `retention` to the captures of `agent_id`: newest first, a
/// capture keeps its files while it is within both limits; beyond them a
/// capture whose files are all verified in storage loses its files, its
/// emptied folders and its journal. A capture still uploading, or one with
/// a file that never reached storage, is always kept (and counted).
pub fn prune(spool: &Path, agent_id: &str, retention: Retention) -> io::Result<Pruned> {
    let mut journals = Journal::all_of(spool, agent_id)?.journals;
    journals.sort_by_key(|journal| std::cmp::Reverse(journal.record.updated_unix_ns));
    let captures_root = captures_root(spool);
    let mut pruned = Pruned::default();
    let mut kept_captures = 0usize;
    let mut kept_bytes = 0u64;
    for journal in journals {
        let bytes = journal.bytes_on_disk();
        let within = kept_captures < retention.keep_captures
            && kept_bytes.saturating_add(bytes) <= retention.keep_bytes;
        if within || !journal.record.nothing_unverified() {
            kept_captures += 1;
            kept_bytes = kept_bytes.saturating_add(bytes);
            continue;
        }
        for file in &journal.record.files {
            // Only ever below <spool>/captures, whatever a journal says.
            if !file.local_path.starts_with(&captures_root) {
                continue;
            }
            match std::fs::remove_file(&file.local_path) {
                Ok(()) => remove_empty_folders(&file.local_path, &captures_root),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        std::fs::remove_file(journal.path())?;
        pruned.captures.push(journal.record.profile_id.to_string());
        pruned.bytes += bytes;
    }
    Ok(pruned)
}

/// Removes the folders above `removed` that are now empty, up to `root`.
fn remove_empty_folders(removed: &Path, root: &Path) {
    let mut folder = removed.parent();
    while let Some(dir) = folder {
        if dir == root || !dir.starts_with(root) || std::fs::remove_dir(dir).is_err() {
            return;
        }
        folder = dir.parent();
    }
}

/// The write failed because the file system (or the user's quota) is full.
pub fn is_disk_full(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Bytes an unprivileged process may still write on the file system that
/// holds `path`.
pub fn available_bytes(path: &Path) -> io::Result<u64> {
    let stats = rustix::fs::statvfs(path)?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// An agent id as one path segment: `h/unified-0/TP-0-EP-0` → `h_unified-0_TP-0-EP-0`.
fn file_safe(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT: &str = "h/unified-0/TP-0-EP-0";

    fn record(profile_id: &str) -> CaptureRecord {
        CaptureRecord {
            format: JOURNAL_FORMAT.into(),
            profile_id: ProfileId::parse(profile_id).unwrap(),
            agent_id: AGENT.into(),
            storage_url: "file:///s".into(),
            output_dir: "/o".into(),
            state: "armed".into(),
            detail: String::new(),
            files: vec![],
            sidecar: None,
            sidecar_key: format!("{profile_id}/{profile_id}-TP-0-EP-0.meta.json"),
            sidecar_written: false,
            sidecar_size: None,
            sidecar_sha256: None,
            updated_unix_ns: 0,
            start_command: None,
            instants: CaptureInstants::default(),
        }
    }

    /// A capture in `state` with one file of `size` bytes in the spool.
    fn capture(
        spool: &Path,
        profile_id: &str,
        state: &str,
        size: usize,
        verified: bool,
    ) -> PathBuf {
        let dir = output_dir(spool, profile_id, &RankCoords::unified(0, 0));
        let file = dir.join("plugins/profile/2026_01_01_00_00_00/h.xplane.pb");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, vec![7u8; size]).unwrap();
        let mut journal = Journal::new(
            spool,
            CaptureRecord {
                state: state.into(),
                files: vec![JournalFile {
                    kind: FileKind::Xplane,
                    local_path: file.clone(),
                    key: format!("{profile_id}/x.xplane.pb"),
                    size: size as u64,
                    sha256: None,
                    uploaded: verified,
                }],
                ..record(profile_id)
            },
        );
        journal.save().unwrap();
        // Distinct update times, in creation order.
        std::thread::sleep(std::time::Duration::from_millis(2));
        file
    }

    #[test]
    fn output_dir_is_per_server_and_capture() {
        let coords = RankCoords {
            role: rankline_layout::Role::Prefill,
            worker: 1,
            ..RankCoords::unified(3, 0)
        };
        assert_eq!(
            output_dir(Path::new("/spool"), "cap1", &coords),
            Path::new("/spool/captures/cap1/prefill-1")
        );
    }

    #[test]
    fn journal_round_trips_and_is_listed() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::new(dir.path(), record("cap1"));
        journal.save().unwrap();
        assert!(journal
            .path()
            .ends_with("agents/h_unified-0_TP-0-EP-0/captures/cap1.json"));
        let back = Journal::load(journal.path()).unwrap();
        assert_eq!(back.record, journal.record);

        std::fs::write(journal.path().with_file_name("bad.json"), b"{").unwrap();
        std::fs::write(journal.path().with_file_name("cut.json.part"), b"{").unwrap();
        let JournalScan {
            journals,
            unreadable,
        } = Journal::all_of(dir.path(), AGENT).unwrap();
        assert_eq!(journals.len(), 1);
        assert_eq!(journals[0].record.profile_id, "cap1");
        assert_eq!(unreadable.len(), 1);
        assert!(unreadable[0].0.ends_with("bad.json"));
        let none = Journal::all_of(dir.path(), "other/agent").unwrap();
        assert!(none.journals.is_empty());
    }

    #[test]
    fn prune_keeps_the_newest_captures_and_every_unverified_file() {
        let spool = tempfile::tempdir().unwrap();
        let spool = spool.path();
        let old_unverified = capture(spool, "a", "failed", 10, false);
        let old = capture(spool, "b", "ok", 10, true);
        let uploading = capture(spool, "c", "uploading", 10, false);
        let newer = capture(spool, "d", "ok", 10, true);
        let newest = capture(spool, "e", "ok", 10, true);

        let keep_two = Retention {
            keep_captures: 2,
            keep_bytes: u64::MAX,
        };
        let pruned = prune(spool, AGENT, keep_two).unwrap();
        assert_eq!(pruned.captures, ["b"]);
        assert_eq!(pruned.bytes, 10);
        assert!(!old.exists());
        assert!(!spool.join("captures/b").exists(), "emptied folders go too");
        assert!(spool.join("captures").is_dir());
        for kept in [&old_unverified, &uploading, &newer, &newest] {
            assert!(kept.exists(), "{}", kept.display());
        }
        let left = Journal::all_of(spool, AGENT).unwrap().journals;
        let ids: Vec<_> = left.iter().map(|j| j.record.profile_id.as_str()).collect();
        assert_eq!(ids, ["a", "c", "d", "e"]);

        // A byte limit: the newest capture alone fills it.
        let by_bytes = Retention {
            keep_captures: 100,
            keep_bytes: 10,
        };
        let pruned = prune(spool, AGENT, by_bytes).unwrap();
        assert_eq!(pruned.captures, ["d"]);
        assert!(newest.exists() && !newer.exists());
        assert!(old_unverified.exists() && uploading.exists());
    }

    #[test]
    fn full_disks_and_sizes_are_told_apart() {
        assert!(is_disk_full(&io::Error::from_raw_os_error(28)));
        assert!(!is_disk_full(&io::Error::from_raw_os_error(13)));
        let dir = tempfile::tempdir().unwrap();
        assert!(available_bytes(dir.path()).unwrap() > 0);
    }
}
