//! The agent's local spool: where servers write a capture's files, and a
//! small per-capture journal that says how far the capture got, so that a
//! later version (durable spool, issue 5) can resume an interrupted upload.
//!
//! ```text
//! <spool>/captures/<profile_id>/<role>-<worker>/        the server's output_dir
//! <spool>/agents/<agent id>/captures/<profile_id>.json  this agent's journal
//! ```

use std::io;
use std::path::{Path, PathBuf};

use rankline_layout::{FileKind, RankCoords, Sidecar};
use serde::{Deserialize, Serialize};

/// The `format` of a journal this version writes.
pub const JOURNAL_FORMAT: &str = "rankline.agent-capture/v1";

/// `<spool>/captures/<profile_id>/<role>-<worker>`: every agent of one
/// server derives the same string, which is what the trigger sends as
/// `output_dir` and where each host's files land.
pub fn output_dir(spool: &Path, profile_id: &str, coords: &RankCoords) -> PathBuf {
    spool
        .join("captures")
        .join(profile_id)
        .join(format!("{}-{}", coords.role, coords.worker))
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
    #[serde(default)]
    pub uploaded: bool,
}

/// `<profile_id>.json` in the agent's journal folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptureRecord {
    pub format: String,
    pub profile_id: String,
    pub agent_id: String,
    pub storage_url: String,
    pub output_dir: PathBuf,
    /// The rank's state word (`armed`, ..., `ok`, `failed`).
    pub state: String,
    pub detail: String,
    pub files: Vec<JournalFile>,
    /// The sidecar once built; stored last.
    #[serde(default)]
    pub sidecar: Option<Sidecar>,
    pub sidecar_key: String,
    #[serde(default)]
    pub sidecar_written: bool,
    pub updated_unix_ns: i64,
}

/// A capture's journal file, rewritten atomically on every change.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    pub record: CaptureRecord,
}

impl Journal {
    pub fn new(spool: &Path, record: CaptureRecord) -> Journal {
        let path = spool
            .join("agents")
            .join(file_safe(&record.agent_id))
            .join("captures")
            .join(format!("{}.json", record.profile_id));
        Journal { path, record }
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
        std::fs::write(&temp, text)?;
        std::fs::rename(&temp, &self.path)
    }
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

    #[test]
    fn output_dir_is_per_server_and_capture() {
        let coords = RankCoords {
            role: "prefill".into(),
            worker: 1,
            ..RankCoords::unified(3, 0)
        };
        assert_eq!(
            output_dir(Path::new("/spool"), "cap1", &coords),
            Path::new("/spool/captures/cap1/prefill-1")
        );
    }

    #[test]
    fn journal_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::new(
            dir.path(),
            CaptureRecord {
                format: JOURNAL_FORMAT.into(),
                profile_id: "cap1".into(),
                agent_id: "h/unified-0/TP-0-EP-0".into(),
                storage_url: "file:///s".into(),
                output_dir: "/o".into(),
                state: "armed".into(),
                detail: String::new(),
                files: vec![],
                sidecar: None,
                sidecar_key: "cap1/cap1-TP-0-EP-0.meta.json".into(),
                sidecar_written: false,
                updated_unix_ns: 0,
            },
        );
        journal.save().unwrap();
        assert!(journal
            .path()
            .ends_with("agents/h_unified-0_TP-0-EP-0/captures/cap1.json"));
        let back: CaptureRecord =
            serde_json::from_slice(&std::fs::read(journal.path()).unwrap()).unwrap();
        assert_eq!(back, journal.record);
    }
}
