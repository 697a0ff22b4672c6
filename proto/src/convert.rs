//! Conversions between the wire types (`rankline-proto`) and the storage
//! types (`rankline-layout`): roles, identities, settings, summaries and
//! manifests.

use std::collections::BTreeMap;

use crate::{
    AgentIdentity, AuditEntry, CaptureSettings, CaptureStatus, CaptureSummary, RankResult,
    RankState, Role, ServerKind, StoredObject,
};
use rankline_layout::{self as layout, manifest_key, ObjectKind, SettingsRecord, MANIFEST_FORMAT};
use rankline_layout::{Manifest, ManifestRank, ProfileId, RankIdentity, RankObjects};

/// A short name for people: `prefill-0 TP-1-EP-0`.
pub fn rank_name(identity: &AgentIdentity) -> String {
    identity.rank_coords().display_name()
}

/// The id an agent gets when its hello leaves it empty:
/// `<host>/<role>-<worker>/TP-<n>-EP-<m>`, as the proto documents.
pub fn default_agent_id(identity: &AgentIdentity) -> String {
    let coords = identity.rank_coords();
    format!(
        "{}/{}-{}/{}",
        identity.host,
        coords.role,
        coords.worker,
        coords.rank_label()
    )
}

impl From<ServerKind> for layout::ServerKind {
    fn from(kind: ServerKind) -> Self {
        match kind {
            ServerKind::SglangJax => layout::ServerKind::SglangJax,
            ServerKind::Sglang => layout::ServerKind::Sglang,
            ServerKind::Vllm => layout::ServerKind::Vllm,
            ServerKind::Unspecified => layout::ServerKind::Unknown,
        }
    }
}

impl From<layout::ServerKind> for ServerKind {
    fn from(kind: layout::ServerKind) -> Self {
        match kind {
            layout::ServerKind::SglangJax => ServerKind::SglangJax,
            layout::ServerKind::Sglang => ServerKind::Sglang,
            layout::ServerKind::Vllm => ServerKind::Vllm,
            layout::ServerKind::Unknown => ServerKind::Unspecified,
        }
    }
}

impl ServerKind {
    /// The word sidecars, manifests and people use (`unknown` when unset).
    pub fn word(self) -> &'static str {
        layout::ServerKind::from(self).word()
    }
}

impl From<Role> for layout::Role {
    fn from(role: Role) -> Self {
        match role {
            Role::Unspecified | Role::Unified => layout::Role::Unified,
            Role::Prefill => layout::Role::Prefill,
            Role::Decode => layout::Role::Decode,
        }
    }
}

impl From<layout::Role> for Role {
    fn from(role: layout::Role) -> Self {
        match role {
            layout::Role::Unified => Role::Unified,
            layout::Role::Prefill => Role::Prefill,
            layout::Role::Decode => Role::Decode,
        }
    }
}

impl Role {
    /// The word used on the command line and in storage paths (`unified`
    /// when unset).
    pub fn word(self) -> &'static str {
        layout::Role::from(self).word()
    }

    /// Parses `unified`, `prefill` or `decode` (case-insensitive).
    pub fn from_word(word: &str) -> Option<Role> {
        word.parse::<layout::Role>().ok().map(Role::from)
    }
}

impl From<layout::RankStatus> for RankState {
    fn from(status: layout::RankStatus) -> Self {
        match status {
            layout::RankStatus::Ok => RankState::Ok,
            layout::RankStatus::Failed => RankState::Failed,
            layout::RankStatus::Lost => RankState::Lost,
        }
    }
}

impl RankState {
    /// How the manifest records a rank in this state: a manifest is written
    /// once every rank is final, so a rank still in flight can only have
    /// failed to finish.
    pub fn stored_status(self) -> layout::RankStatus {
        match self {
            RankState::Ok => layout::RankStatus::Ok,
            RankState::Lost => layout::RankStatus::Lost,
            _ => layout::RankStatus::Failed,
        }
    }
}

impl From<layout::CaptureStatus> for CaptureStatus {
    fn from(status: layout::CaptureStatus) -> Self {
        match status {
            layout::CaptureStatus::Complete => CaptureStatus::Complete,
            layout::CaptureStatus::Partial => CaptureStatus::Partial,
            layout::CaptureStatus::Failed => CaptureStatus::Failed,
        }
    }
}

impl CaptureStatus {
    /// How the manifest records a capture with this status (see
    /// [`RankState::stored_status`]).
    pub fn stored_status(self) -> layout::CaptureStatus {
        match self {
            CaptureStatus::Complete => layout::CaptureStatus::Complete,
            CaptureStatus::Partial => layout::CaptureStatus::Partial,
            _ => layout::CaptureStatus::Failed,
        }
    }
}

impl From<&CaptureSettings> for SettingsRecord {
    fn from(settings: &CaptureSettings) -> Self {
        SettingsRecord {
            duration_ms: settings.duration_ms,
            host_tracer_level: settings.host_tracer_level,
            num_steps: settings.num_steps,
            python_tracer_level: settings.python_tracer_level,
            server_args: settings
                .server_args
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            start_step: settings.start_step,
            timeout_ms: (settings.timeout_ms > 0).then_some(settings.timeout_ms),
        }
    }
}

impl From<&SettingsRecord> for CaptureSettings {
    fn from(record: &SettingsRecord) -> Self {
        CaptureSettings {
            num_steps: record.num_steps,
            duration_ms: record.duration_ms,
            start_step: record.start_step,
            host_tracer_level: record.host_tracer_level,
            python_tracer_level: record.python_tracer_level,
            server_args: record
                .server_args
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            timeout_ms: record.timeout_ms.unwrap_or(0),
        }
    }
}

/// The manifest's form of an agent identity.
pub fn rank_identity(identity: &AgentIdentity) -> RankIdentity {
    RankIdentity {
        agent_id: identity.agent_id.clone(),
        host: identity.host.clone(),
        coords: identity.rank_coords(),
        server_url: identity.server_url.clone(),
        server_kind: identity.server_kind().into(),
        trigger: identity.trigger,
        node_rank: identity.node_rank,
        labels: identity
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
    }
}

/// The wire form of a manifest's rank identity.
pub fn agent_identity(rank: &RankIdentity) -> AgentIdentity {
    let mut identity = AgentIdentity {
        agent_id: rank.agent_id.clone(),
        host: rank.host.clone(),
        worker: rank.coords.worker,
        tp_rank: rank.coords.tp_rank,
        ep_rank: rank.coords.ep_rank,
        dp_rank: rank.coords.dp_rank,
        pp_rank: rank.coords.pp_rank,
        server_url: rank.server_url.clone(),
        labels: rank
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        trigger: rank.trigger,
        node_rank: rank.node_rank,
        ..Default::default()
    };
    identity.set_role(rank.coords.role.into());
    identity.set_server_kind(rank.server_kind.into());
    identity
}

/// Sorts stored objects into the manifest's trace / xplane / sidecar slots
/// by their canonical suffixes.
pub fn rank_objects(objects: &[StoredObject]) -> RankObjects {
    let mut slots = RankObjects::default();
    for object in objects {
        let slot = match ObjectKind::of_key(&object.key) {
            Some(ObjectKind::Trace) => &mut slots.trace,
            Some(ObjectKind::Xplane) => &mut slots.xplane,
            Some(ObjectKind::Sidecar) => &mut slots.meta,
            None => continue,
        };
        *slot = Some(object.key.clone());
    }
    slots
}

fn objects_from_slots(slots: &RankObjects) -> Vec<StoredObject> {
    [&slots.trace, &slots.xplane, &slots.meta]
        .into_iter()
        .flatten()
        .map(|key| StoredObject {
            key: key.clone(),
            ..Default::default()
        })
        .collect()
}

/// A capture's status from its ranks: every rank ok → complete, some →
/// partial, none → failed; any rank unfinished → running.
pub fn capture_status(ranks: &[RankResult]) -> CaptureStatus {
    let states: Vec<RankState> = ranks.iter().map(RankResult::state).collect();
    if states.iter().any(|state| !state.is_final()) {
        CaptureStatus::Running
    } else if states.iter().all(|state| *state == RankState::Ok) {
        CaptureStatus::Complete
    } else if states.contains(&RankState::Ok) {
        CaptureStatus::Partial
    } else {
        CaptureStatus::Failed
    }
}

/// The manifest of a finished capture. `profile_id` is the capture's
/// checked id, which the summary carries only as wire text.
pub fn manifest_from_summary(
    profile_id: &ProfileId,
    summary: &CaptureSummary,
    start_at_unix_ns: i64,
) -> Manifest {
    Manifest {
        format: MANIFEST_FORMAT.to_string(),
        profile_id: profile_id.clone(),
        status: summary.status().stored_status(),
        reason: (!summary.failure.is_empty()).then(|| summary.failure.clone()),
        storage_url: summary.storage_url.clone(),
        created_unix_ns: summary.created_unix_ns,
        start_at_unix_ns,
        finished_unix_ns: summary.finished_unix_ns,
        settings: summary.settings.as_ref().map(SettingsRecord::from),
        ranks: summary
            .ranks
            .iter()
            .map(|rank| ManifestRank {
                identity: rank_identity(rank.agent.as_ref().unwrap_or(&AgentIdentity::default())),
                status: rank.state().stored_status(),
                reason: (!rank.detail.is_empty() && rank.state() != RankState::Ok)
                    .then(|| rank.detail.clone()),
                objects: rank_objects(&rank.objects),
            })
            .collect(),
        audit: summary.audit.iter().map(audit_record).collect(),
    }
}

/// An audit line as records and manifests keep it.
pub fn audit_record(entry: &AuditEntry) -> rankline_layout::AuditEntry {
    rankline_layout::AuditEntry {
        action: entry.action.clone(),
        who: entry.who.clone(),
        at_unix_ns: entry.at_unix_ns,
    }
}

/// A kept audit line on the wire.
pub fn audit_entry(record: &rankline_layout::AuditEntry) -> AuditEntry {
    AuditEntry {
        action: record.action.clone(),
        who: record.who.clone(),
        at_unix_ns: record.at_unix_ns,
    }
}

/// A stored manifest as a summary, for captures this coordinator no longer
/// (or never) had in memory. Object sizes and checksums are not in a
/// manifest, so they are left empty.
pub fn summary_from_manifest(manifest: &Manifest) -> CaptureSummary {
    let mut summary = CaptureSummary {
        profile_id: manifest.profile_id.to_string(),
        ranks: manifest
            .ranks
            .iter()
            .map(|rank| {
                let mut result = RankResult {
                    agent: Some(agent_identity(&rank.identity)),
                    detail: rank.reason.clone().unwrap_or_default(),
                    objects: objects_from_slots(&rank.objects),
                    ..Default::default()
                };
                result.set_state(rank.status.into());
                result
            })
            .collect(),
        storage_url: manifest.storage_url.clone(),
        manifest_key: manifest_key(&manifest.profile_id),
        created_unix_ns: manifest.created_unix_ns,
        finished_unix_ns: manifest.finished_unix_ns,
        settings: Some(
            manifest
                .settings
                .as_ref()
                .map(CaptureSettings::from)
                .unwrap_or_default(),
        ),
        audit: manifest.audit.iter().map(audit_entry).collect(),
        failure: manifest.reason.clone().unwrap_or_default(),
        ..Default::default()
    };
    summary.set_status(manifest.status.into());
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> AgentIdentity {
        let mut identity = AgentIdentity {
            agent_id: "h/prefill-1/TP-2-EP-0".into(),
            host: "h".into(),
            worker: 1,
            tp_rank: 2,
            dp_rank: Some(1),
            server_url: "http://127.0.0.1:30000".into(),
            trigger: true,
            node_rank: Some(0),
            ..Default::default()
        };
        identity.set_role(Role::Prefill);
        identity.set_server_kind(ServerKind::SglangJax);
        identity.labels.insert("zone".into(), "a".into());
        identity
    }

    #[test]
    fn identities_round_trip_through_the_manifest_form() {
        assert_eq!(agent_identity(&rank_identity(&identity())), identity());
        assert_eq!(default_agent_id(&identity()), "h/prefill-1/TP-2-DP-1-EP-0");
    }

    #[test]
    fn summaries_round_trip_through_manifests() {
        let mut ok = RankResult {
            agent: Some(identity()),
            objects: vec![
                StoredObject {
                    key: "c/prefill-1/c-TP-2-DP-1-EP-0.trace.json.gz".into(),
                    ..Default::default()
                },
                StoredObject {
                    key: "c/prefill-1/c-TP-2-DP-1-EP-0.meta.json".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        ok.set_state(RankState::Ok);
        let mut lost = RankResult {
            agent: Some(AgentIdentity {
                agent_id: "other".into(),
                ..identity()
            }),
            detail: "no heartbeat for 5s".into(),
            ..Default::default()
        };
        lost.set_state(RankState::Lost);
        let ranks = vec![ok, lost];
        let summary = CaptureSummary {
            profile_id: "c".into(),
            status: capture_status(&ranks) as i32,
            ranks,
            storage_url: "file:///tmp/x".into(),
            manifest_key: "c/manifest.json".into(),
            created_unix_ns: 1,
            finished_unix_ns: 3,
            settings: Some(CaptureSettings {
                num_steps: Some(5),
                timeout_ms: 9,
                ..Default::default()
            }),
            audit: vec![AuditEntry {
                action: "started".into(),
                who: "token ops from 127.0.0.1:5000".into(),
                at_unix_ns: 1,
            }],
            failure: "workload failed: HTTP 400".into(),
        };
        assert_eq!(summary.status(), CaptureStatus::Partial);
        let manifest = manifest_from_summary(&ProfileId::parse("c").unwrap(), &summary, 2);
        assert_eq!(
            manifest.reason.as_deref(),
            Some("workload failed: HTTP 400")
        );
        assert_eq!(manifest.ranks[1].status, layout::RankStatus::Lost);
        assert_eq!(
            manifest.ranks[1].reason.as_deref(),
            Some("no heartbeat for 5s")
        );
        assert_eq!(
            manifest.ranks[0].objects.meta.as_deref(),
            Some("c/prefill-1/c-TP-2-DP-1-EP-0.meta.json")
        );
        assert_eq!(
            serde_json::to_value(&manifest.settings).unwrap(),
            serde_json::json!({"num_steps": 5, "timeout_ms": 9})
        );
        assert_eq!(summary_from_manifest(&manifest), summary);
    }
}
