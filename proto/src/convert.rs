//! Conversions between the wire types (`rankline-proto`) and the storage
//! types (`rankline-layout`): identities, settings, summaries and manifests.

use std::collections::BTreeMap;

use crate::{
    AgentIdentity, AuditEntry, CaptureSettings, CaptureStatus, CaptureSummary, RankResult,
    RankState, Role, ServerKind, StoredObject,
};
use rankline_layout::{Manifest, ManifestRank, RankIdentity, RankObjects};
use rankline_layout::{MANIFEST_FORMAT, MANIFEST_NAME};
use serde_json::{json, Map, Value};

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

/// `sglang-jax` or `sglang`, as sidecars and manifests spell it.
pub fn server_kind_word(kind: ServerKind) -> &'static str {
    match kind {
        ServerKind::SglangJax => "sglang-jax",
        ServerKind::Sglang => "sglang",
        ServerKind::Vllm => "vllm",
        ServerKind::Unspecified => "unknown",
    }
}

fn server_kind_from_word(word: &str) -> ServerKind {
    match word {
        "sglang-jax" => ServerKind::SglangJax,
        "sglang" => ServerKind::Sglang,
        "vllm" => ServerKind::Vllm,
        _ => ServerKind::Unspecified,
    }
}

/// The manifest's form of an agent identity.
pub fn rank_identity(identity: &AgentIdentity) -> RankIdentity {
    RankIdentity {
        agent_id: identity.agent_id.clone(),
        host: identity.host.clone(),
        coords: identity.rank_coords(),
        server_url: identity.server_url.clone(),
        server_kind: server_kind_word(identity.server_kind()).to_string(),
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
    identity.set_role(Role::from_word(&rank.coords.role).unwrap_or(Role::Unspecified));
    identity.set_server_kind(server_kind_from_word(&rank.server_kind));
    identity
}

/// Sorts stored objects into the manifest's trace / xplane / sidecar slots
/// by their canonical suffixes.
pub fn rank_objects(objects: &[StoredObject]) -> RankObjects {
    let mut slots = RankObjects::default();
    for object in objects {
        let key = Some(object.key.clone());
        if object.key.ends_with(".trace.json.gz") {
            slots.trace = key;
        } else if object.key.ends_with(".xplane.pb") {
            slots.xplane = key;
        } else if object.key.ends_with(".meta.json") {
            slots.meta = key;
        }
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

/// The settings as the manifest records them (only the fields that were set).
pub fn settings_json(settings: &CaptureSettings) -> Value {
    let mut fields = Map::new();
    let mut put = |name: &str, value: Option<Value>| {
        if let Some(value) = value {
            fields.insert(name.to_string(), value);
        }
    };
    put("num_steps", settings.num_steps.map(Value::from));
    put("duration_ms", settings.duration_ms.map(Value::from));
    put("start_step", settings.start_step.map(Value::from));
    put(
        "host_tracer_level",
        settings.host_tracer_level.map(Value::from),
    );
    put(
        "python_tracer_level",
        settings.python_tracer_level.map(Value::from),
    );
    put(
        "server_args",
        (!settings.server_args.is_empty()).then(|| json!(settings.server_args)),
    );
    put(
        "timeout_ms",
        (settings.timeout_ms > 0).then_some(Value::from(settings.timeout_ms)),
    );
    Value::Object(fields)
}

/// The settings back from their manifest form.
pub fn settings_from_json(value: &Value) -> CaptureSettings {
    let number = |name: &str| value.get(name).and_then(Value::as_u64);
    let small = |name: &str| number(name).and_then(|n| u32::try_from(n).ok());
    CaptureSettings {
        num_steps: small("num_steps"),
        duration_ms: number("duration_ms"),
        start_step: small("start_step"),
        host_tracer_level: small("host_tracer_level"),
        python_tracer_level: small("python_tracer_level"),
        server_args: value
            .get("server_args")
            .and_then(Value::as_object)
            .map(|args| {
                args.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default(),
        timeout_ms: number("timeout_ms").unwrap_or(0),
    }
}

/// The key of a capture's manifest: `<profile_id>/manifest.json`.
pub fn manifest_key(profile_id: &str) -> String {
    format!("{profile_id}/{MANIFEST_NAME}")
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

/// The manifest of a finished capture.
pub fn manifest_from_summary(summary: &CaptureSummary, start_at_unix_ns: i64) -> Manifest {
    Manifest {
        format: MANIFEST_FORMAT.to_string(),
        profile_id: summary.profile_id.clone(),
        status: summary.status().word().to_string(),
        reason: (!summary.failure.is_empty()).then(|| summary.failure.clone()),
        storage_url: summary.storage_url.clone(),
        created_unix_ns: summary.created_unix_ns,
        start_at_unix_ns,
        finished_unix_ns: summary.finished_unix_ns,
        settings: summary
            .settings
            .as_ref()
            .map(settings_json)
            .unwrap_or_default(),
        ranks: summary
            .ranks
            .iter()
            .map(|rank| ManifestRank {
                identity: rank_identity(rank.agent.as_ref().unwrap_or(&AgentIdentity::default())),
                status: rank.state().word().to_string(),
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
        profile_id: manifest.profile_id.clone(),
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
                result.set_state(match rank.status.as_str() {
                    "ok" => RankState::Ok,
                    "lost" => RankState::Lost,
                    _ => RankState::Failed,
                });
                result
            })
            .collect(),
        storage_url: manifest.storage_url.clone(),
        manifest_key: manifest_key(&manifest.profile_id),
        created_unix_ns: manifest.created_unix_ns,
        finished_unix_ns: manifest.finished_unix_ns,
        settings: Some(settings_from_json(&manifest.settings)),
        audit: manifest.audit.iter().map(audit_entry).collect(),
        failure: manifest.reason.clone().unwrap_or_default(),
        ..Default::default()
    };
    summary.set_status(match manifest.status.as_str() {
        "complete" => CaptureStatus::Complete,
        "partial" => CaptureStatus::Partial,
        _ => CaptureStatus::Failed,
    });
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
        let manifest = manifest_from_summary(&summary, 2);
        assert_eq!(
            manifest.reason.as_deref(),
            Some("workload failed: HTTP 400")
        );
        assert_eq!(manifest.ranks[1].status, "lost");
        assert_eq!(
            manifest.ranks[1].reason.as_deref(),
            Some("no heartbeat for 5s")
        );
        assert_eq!(
            manifest.ranks[0].objects.meta.as_deref(),
            Some("c/prefill-1/c-TP-2-DP-1-EP-0.meta.json")
        );
        assert_eq!(manifest.settings, json!({"num_steps": 5, "timeout_ms": 9}));
        assert_eq!(summary_from_manifest(&manifest), summary);
    }
}
