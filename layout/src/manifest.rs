//! The capture manifest, `<profile_id>/manifest.json`, written by the
//! coordinator: every selected rank with its final status and object keys.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::RankIdentity;

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

/// One selected rank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRank {
    pub identity: RankIdentity,
    /// `ok`, `failed` or `lost`.
    pub status: String,
    /// Why a rank is not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub objects: RankObjects,
}

/// `<profile_id>/manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub profile_id: String,
    /// `complete`, `partial` or `failed`.
    pub status: String,
    /// Why the capture failed although its ranks may be ok (its workload
    /// failed: the server's message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub storage_url: String,
    /// Coordinator-clock instants.
    pub created_unix_ns: i64,
    pub start_at_unix_ns: i64,
    pub finished_unix_ns: i64,
    /// The capture settings as requested (num_steps, duration_ms, ...).
    #[serde(default)]
    pub settings: Value,
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
