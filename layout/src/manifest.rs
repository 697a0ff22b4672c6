//! The capture manifest, `<profile_id>/manifest.json`, written by the
//! coordinator: every selected rank with its final status and object keys.

use crate::{CaptureStatus, ProfileId, RankIdentity, RankKey, RankStatus, SettingsRecord};
use serde::{Deserialize, Serialize};

/// The `format` value of a manifest this version writes.
pub const MANIFEST_FORMAT: &str = "rankline.capture/v1";
/// The manifest's file name inside the capture's folder.
pub const MANIFEST_NAME: &str = "manifest.json";

/// The object keys of one rank (relative to the storage root).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankObjects {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xplane: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<String>,
}

impl RankObjects {
    /// The canonical keys of a stored rank: its trace, its xplane when it
    /// has one, its sidecar.
    pub fn stored(key: &RankKey, with_xplane: bool) -> RankObjects {
        RankObjects {
            trace: Some(key.trace()),
            xplane: with_xplane.then(|| key.xplane()),
            meta: Some(key.sidecar()),
        }
    }
}

/// One selected rank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRank {
    pub identity: RankIdentity,
    pub status: RankStatus,
    /// Why a rank is not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub objects: RankObjects,
}

impl ManifestRank {
    /// A rank stored whole.
    pub fn ok(identity: RankIdentity, objects: RankObjects) -> ManifestRank {
        ManifestRank {
            identity,
            status: RankStatus::Ok,
            reason: None,
            objects,
        }
    }
}

/// `<profile_id>/manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub profile_id: ProfileId,
    pub status: CaptureStatus,
    /// Why the capture failed although its ranks may be ok (its workload
    /// failed: the server's message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub storage_url: String,
    /// Coordinator-clock instants.
    pub created_unix_ns: i64,
    pub start_at_unix_ns: i64,
    pub finished_unix_ns: i64,
    /// The capture settings as requested; `null` when the capture had none.
    #[serde(default)]
    pub settings: Option<SettingsRecord>,
    pub ranks: Vec<ManifestRank>,
    /// Who started, stopped or failed the capture, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit: Vec<AuditEntry>,
}

/// One control action on a capture and who took it (the coordinator's
/// record of the caller: token name, certificate subject or `anonymous`,
/// and the peer address).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// `started`, `stopped` or `failed`.
    pub action: String,
    pub who: String,
    /// Coordinator clock.
    pub at_unix_ns: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest as an earlier version wrote it (statuses, server kind and
    /// settings were plain strings and JSON then).
    const EARLIER: &str = r#"{
      "format": "rankline.capture/v1",
      "profile_id": "cap",
      "status": "partial",
      "storage_url": "file:///data",
      "created_unix_ns": 1,
      "start_at_unix_ns": 2,
      "finished_unix_ns": 3,
      "settings": {"duration_ms": 1000, "server_args": {"a": "b"}, "timeout_ms": 9},
      "ranks": [
        {"identity": {"agent_id": "h/unified-0/TP-0-EP-0", "host": "h", "role": "unified",
                      "worker": 0, "tp_rank": 0, "ep_rank": 0, "server_url": "http://h:30000",
                      "server_kind": "sglang-jax", "trigger": true},
         "status": "ok", "objects": {"trace": "cap/cap-TP-0-EP-0.trace.json.gz"}},
        {"identity": {"agent_id": "h/unified-0/TP-1-EP-0", "host": "h", "role": "unified",
                      "worker": 0, "tp_rank": 1, "ep_rank": 0, "server_url": "http://h:30000",
                      "server_kind": "unknown", "trigger": false},
         "status": "lost", "reason": "no heartbeat for 5s", "objects": {}}
      ]
    }"#;

    #[test]
    fn an_earlier_manifest_reads_and_writes_back_the_same_json() {
        let manifest = crate::read_manifest(EARLIER.as_bytes()).unwrap();
        assert_eq!(manifest.status, CaptureStatus::Partial);
        assert_eq!(manifest.ranks[1].status, RankStatus::Lost);
        assert_eq!(
            manifest.ranks[0].identity.server_kind,
            crate::ServerKind::SglangJax
        );
        let written: serde_json::Value =
            serde_json::from_slice(&crate::write_document(&manifest)).unwrap();
        let earlier: serde_json::Value = serde_json::from_str(EARLIER).unwrap();
        assert_eq!(written, earlier);
    }

    #[test]
    fn a_manifest_without_settings_keeps_null() {
        let text = EARLIER.replace(
            r#""settings": {"duration_ms": 1000, "server_args": {"a": "b"}, "timeout_ms": 9}"#,
            r#""settings": null"#,
        );
        let manifest = crate::read_manifest(text.as_bytes()).unwrap();
        assert_eq!(manifest.settings, None);
        let written: serde_json::Value =
            serde_json::from_slice(&crate::write_document(&manifest)).unwrap();
        assert_eq!(written["settings"], serde_json::Value::Null);
    }
}
