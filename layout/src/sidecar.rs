//! The per-rank metadata sidecar, `<stem>.meta.json`.
//!
//! The agent writes it after every file of the rank is stored and verified,
//! so its presence means the rank is complete.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::{ClockFit, ProfileId, RankCoords, ServerKind};

/// The `format` value of a sidecar this version writes.
pub const SIDECAR_FORMAT: &str = "rankline.rank/v1";

/// Who produced a rank's files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankIdentity {
    pub agent_id: String,
    pub host: String,
    #[serde(flatten)]
    pub coords: RankCoords,
    pub server_url: String,
    pub server_kind: ServerKind,
    pub trigger: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_rank: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Where a trace's absolute time base came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeBaseSource {
    /// The `Task Environment` plane's `profile_start_time` in the `.xplane.pb`.
    XplaneProfileStartTime,
    /// Kineto's top-level `baseTimeNanoseconds`.
    KinetoBaseTimeNanoseconds,
    /// Nothing found: `ts` is taken as given.
    None,
}

/// The instant a trace's relative `ts` = 0 stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeBase {
    pub source: TimeBaseSource,
    /// Epoch nanoseconds on the host's clock (0 when `source` is `none`).
    pub unix_ns: i64,
}

/// Which file of a rank a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    Trace,
    Xplane,
}

/// One stored file of a rank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub kind: FileKind,
    /// Object key relative to the storage root.
    pub key: String,
    pub size: u64,
    /// Lower-case hex sha256 of the stored bytes.
    pub sha256: String,
    /// The name the server gave the file (`vm.trace.json.gz`).
    pub source_name: String,
}

/// `<stem>.meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sidecar {
    /// Always [`SIDECAR_FORMAT`] for this version.
    pub format: String,
    pub profile_id: ProfileId,
    pub identity: RankIdentity,
    /// Host-clock instant the agent sent `/start_profile` (or, for a
    /// collect-only agent, the capture's start instant on its clock).
    pub start_requested_unix_ns: i64,
    /// Host-clock instant the agent sent `/stop_profile`; `None` when the
    /// server stopped by itself (`num_steps`).
    #[serde(default)]
    pub stop_requested_unix_ns: Option<i64>,
    /// Host-clock instant the agent saw profiling over.
    #[serde(default)]
    pub stop_observed_unix_ns: Option<i64>,
    pub time_base: TimeBase,
    /// The xplane's `profile_stop_time`, when there is one.
    #[serde(default)]
    pub profile_stop_unix_ns: Option<i64>,
    /// This host's clock against the coordinator's, when it was measured.
    #[serde(default)]
    pub clock: Option<ClockFit>,
    pub files: Vec<FileRecord>,
    pub agent_version: String,
}

impl Sidecar {
    /// The stored file of a kind, if the rank has one.
    pub fn file(&self, kind: FileKind) -> Option<&FileRecord> {
        self.files.iter().find(|f| f.kind == kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_round_trips_through_json() {
        let sidecar = Sidecar {
            format: SIDECAR_FORMAT.into(),
            profile_id: ProfileId::parse("cap").unwrap(),
            identity: RankIdentity {
                agent_id: "h/unified-0/TP-0-EP-0".into(),
                host: "h".into(),
                coords: RankCoords::unified(0, 0),
                server_url: "http://127.0.0.1:30000".into(),
                server_kind: ServerKind::SglangJax,
                trigger: true,
                node_rank: None,
                labels: BTreeMap::new(),
            },
            start_requested_unix_ns: 1,
            stop_requested_unix_ns: None,
            stop_observed_unix_ns: Some(3),
            time_base: TimeBase {
                source: TimeBaseSource::XplaneProfileStartTime,
                unix_ns: 2,
            },
            profile_stop_unix_ns: None,
            clock: None,
            files: vec![FileRecord {
                kind: FileKind::Trace,
                key: "cap/cap-TP-0-EP-0.trace.json.gz".into(),
                size: 10,
                sha256: "00".into(),
                source_name: "h.trace.json.gz".into(),
            }],
            agent_version: "0.1.0".into(),
        };
        let text = serde_json::to_string(&sidecar).unwrap();
        assert!(
            text.contains("\"role\":\"unified\""),
            "coords are flattened: {text}"
        );
        assert!(text.contains("\"source\":\"xplane_profile_start_time\""));
        let back: Sidecar = serde_json::from_str(&text).unwrap();
        assert_eq!(back, sidecar);
        assert_eq!(back.file(FileKind::Trace).unwrap().size, 10);
        assert!(back.file(FileKind::Xplane).is_none());
    }
}
