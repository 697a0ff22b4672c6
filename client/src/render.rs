//! What the coordinator answers, rendered for people (aligned tables, one
//! line per rank state change) and for scripts (JSON values, stable field
//! names). Used by the CLI and the demo.

use std::time::{Duration, UNIX_EPOCH};

use rankline_proto::{
    capture_event, AgentIdentity, AgentInfo, CaptureEvent, CaptureStatus, CaptureSummary,
    ClockEstimate, RankProgress, RankResult, RankState, RankUpdate, StoredObject,
};
use serde_json::{json, Value};

use rankline_layout::{ObjectKind, SettingsRecord};
use rankline_proto::convert::rank_name;
use rankline_storage::object_location;

/// A table whose columns line up; the last column is never padded.
struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|row| row.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A capture's folder, for a person and for `rankline merge`.
pub fn capture_location(summary: &CaptureSummary) -> String {
    object_location(&summary.storage_url, &summary.profile_id)
}

/// `TP-0-EP-0.*` style: the rank's files relative to the capture folder.
fn rank_files(profile_id: &str, objects: &[StoredObject]) -> String {
    let Some(first) = objects.first() else {
        return String::new();
    };
    let relative = first
        .key
        .strip_prefix(&format!("{profile_id}/"))
        .unwrap_or(&first.key);
    let stem = ObjectKind::split(relative).map_or(relative, |(stem, _)| stem);
    format!("{stem}.*")
}

fn rank_bytes(objects: &[StoredObject]) -> u64 {
    objects.iter().map(|object| object.size).sum()
}

fn identity_of(agent: &Option<AgentIdentity>) -> AgentIdentity {
    agent.clone().unwrap_or_default()
}

/// One line for a rank that changed state: `prefill-0 TP-0-EP-0 (host-a)
/// uploading 12.3 MB`.
pub fn rank_change_line(progress: &RankProgress) -> String {
    let identity = identity_of(&progress.agent);
    let update = progress.update.clone().unwrap_or_default();
    let mut line = format!(
        "{} ({}): {}",
        rank_name(&identity),
        identity.host,
        update.state().word()
    );
    if update.state() == RankState::Uploading && update.bytes_total > 0 {
        line.push_str(&format!(" {}", rankline_units::bytes(update.bytes_total)));
    }
    if !update.detail.is_empty() {
        line.push_str(&format!(" ({})", update.detail));
    }
    line
}

fn ok_count(ranks: &[RankResult]) -> usize {
    ranks.iter().filter(|r| r.state() == RankState::Ok).count()
}

/// The per-rank table of a capture and where its files are.
pub fn summary_table(summary: &CaptureSummary) -> String {
    let mut table = Table::new(&["RANK", "HOST", "STATE", "BYTES", "FILES", "DETAIL"]);
    for rank in &summary.ranks {
        let identity = identity_of(&rank.agent);
        let bytes = rank_bytes(&rank.objects);
        table.push(vec![
            rank_name(&identity),
            identity.host.clone(),
            rank.state().word().to_string(),
            if bytes > 0 {
                rankline_units::bytes(bytes)
            } else {
                "-".into()
            },
            rank_files(&summary.profile_id, &rank.objects),
            rank.detail.clone(),
        ]);
    }
    let mut out = table.render();
    out.push_str(&format!(
        "\ncapture {} {}: {} of {} ranks ok\n",
        summary.profile_id,
        summary.status().word(),
        ok_count(&summary.ranks),
        summary.ranks.len()
    ));
    if !summary.failure.is_empty() {
        out.push_str(&format!("reason:   {}\n", summary.failure));
    }
    let folder = capture_location(summary);
    out.push_str(&format!("files:    {folder}/\n"));
    if !summary.manifest_key.is_empty() {
        out.push_str(&format!(
            "manifest: {}\n",
            object_location(&summary.storage_url, &summary.manifest_key)
        ));
        if ok_count(&summary.ranks) > 0 {
            out.push_str(&format!(
                "merge:    rankline merge {folder} -o {}.pftrace\n",
                summary.profile_id
            ));
        }
    } else if summary.status() != CaptureStatus::Running {
        out.push_str("manifest: not written (see the coordinator's log)\n");
    }
    for entry in &summary.audit {
        out.push_str(&format!(
            "{:<9} by {} at {}\n",
            format!("{}:", entry.action),
            entry.who,
            format_instant(entry.at_unix_ns)
        ));
    }
    out
}

/// `rankline captures`.
pub fn captures_table(captures: &[CaptureSummary]) -> String {
    let mut table = Table::new(&["PROFILE ID", "STATUS", "RANKS OK", "CREATED", "WHERE"]);
    for capture in captures {
        table.push(vec![
            capture.profile_id.clone(),
            capture.status().word().to_string(),
            format!("{}/{}", ok_count(&capture.ranks), capture.ranks.len()),
            format_instant(capture.created_unix_ns),
            capture_location(capture),
        ]);
    }
    table.render()
}

/// `rankline agents`; `now_unix_ns` makes "last seen" relative.
pub fn agents_table(agents: &[AgentInfo], now_unix_ns: i64) -> String {
    let offset_heading = rankline_units::OFFSET_HEADING.to_uppercase();
    let mut table = Table::new(&[
        "AGENT",
        "HOST",
        "RANK",
        "KIND",
        "CONNECTED",
        "LAST SEEN",
        &offset_heading,
        "RTT",
        "CAPTURE",
    ]);
    for agent in agents {
        let identity = identity_of(&agent.identity);
        let mut rank = rank_name(&identity);
        if !identity.trigger {
            rank.push_str(" (collect)");
        }
        let (offset, rtt) = match &agent.clock {
            Some(clock) => clock_cells(clock),
            None => ("-".into(), "-".into()),
        };
        table.push(vec![
            identity.agent_id.clone(),
            identity.host.clone(),
            rank,
            identity.server_kind().word().to_string(),
            if agent.connected { "yes" } else { "no" }.to_string(),
            ago(agent.last_seen_unix_ns, now_unix_ns),
            offset,
            rtt,
            if agent.active_profile_id.is_empty() {
                "-".into()
            } else {
                agent.active_profile_id.clone()
            },
        ]);
    }
    table.render()
}

fn clock_cells(clock: &ClockEstimate) -> (String, String) {
    (
        format!(
            "{} ± {}",
            rankline_units::offset(clock.offset_ns),
            rankline_units::duration(clock.error_bound_ns as i64)
        ),
        rankline_units::duration(clock.round_trip_ns as i64),
    )
}

fn ago(then_unix_ns: i64, now_unix_ns: i64) -> String {
    if then_unix_ns <= 0 {
        return "never".into();
    }
    let elapsed = u64::try_from(now_unix_ns - then_unix_ns).unwrap_or(0);
    format!("{:.1}s ago", elapsed as f64 / 1e9)
}

/// An instant as RFC 3339 UTC, seconds precision.
pub fn format_instant(unix_ns: i64) -> String {
    match u64::try_from(unix_ns) {
        Ok(ns) if ns > 0 => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_nanos(ns)).to_string()
        }
        _ => "-".into(),
    }
}

// ----------------------------------------------------------------------
// JSON for scripts
// ----------------------------------------------------------------------

/// An agent identity as JSON.
pub fn identity_json(identity: &AgentIdentity) -> Value {
    json!({
        "agent_id": identity.agent_id,
        "host": identity.host,
        "rank": rank_name(identity),
        "role": identity.role().word(),
        "worker": identity.worker,
        "tp_rank": identity.tp_rank,
        "ep_rank": identity.ep_rank,
        "dp_rank": identity.dp_rank,
        "pp_rank": identity.pp_rank,
        "node_rank": identity.node_rank,
        "server_url": identity.server_url,
        "server_kind": identity.server_kind().word(),
        "trigger": identity.trigger,
        "labels": identity.labels,
        "agent_version": identity.agent_version,
    })
}

fn objects_json(objects: &[StoredObject]) -> Value {
    objects
        .iter()
        .map(|o| json!({"key": o.key, "size": o.size, "sha256": o.sha256}))
        .collect()
}

fn update_json(update: &RankUpdate) -> Value {
    json!({
        "state": update.state().word(),
        "detail": update.detail,
        "at_unix_ns": update.at_unix_ns,
        "bytes_done": update.bytes_done,
        "bytes_total": update.bytes_total,
        "objects": objects_json(&update.objects),
    })
}

/// A capture summary as JSON (also what `--json` prints last).
pub fn summary_json(summary: &CaptureSummary) -> Value {
    json!({
        "profile_id": summary.profile_id,
        "status": summary.status().word(),
        "reason": (!summary.failure.is_empty()).then_some(&summary.failure),
        "storage_url": summary.storage_url,
        "location": capture_location(summary),
        "manifest_key": summary.manifest_key,
        "created_unix_ns": summary.created_unix_ns,
        "finished_unix_ns": summary.finished_unix_ns,
        "settings": summary.settings.as_ref().map(SettingsRecord::from),
        "audit": summary.audit.iter().map(|entry| json!({
            "action": entry.action,
            "who": entry.who,
            "at_unix_ns": entry.at_unix_ns,
        })).collect::<Vec<_>>(),
        "ranks": summary.ranks.iter().map(|rank| json!({
            "agent": identity_json(&identity_of(&rank.agent)),
            "state": rank.state().word(),
            "detail": rank.detail,
            "bytes": rank_bytes(&rank.objects),
            "objects": objects_json(&rank.objects),
        })).collect::<Vec<_>>(),
    })
}

/// One capture event as a JSON line: `{"event": "accepted" | "rank" |
/// "finished", ...}`.
pub fn event_json(event: &CaptureEvent) -> Value {
    match &event.kind {
        Some(capture_event::Kind::Accepted(accepted)) => json!({
            "event": "accepted",
            "profile_id": accepted.profile_id,
            "start_at_unix_ns": accepted.start_at_unix_ns,
            "storage_url": accepted.storage_url,
            "ranks": accepted.ranks.iter().map(identity_json).collect::<Vec<_>>(),
        }),
        Some(capture_event::Kind::Rank(progress)) => {
            let mut value = update_json(&progress.update.clone().unwrap_or_default());
            value["event"] = json!("rank");
            value["agent"] = identity_json(&identity_of(&progress.agent));
            value
        }
        Some(capture_event::Kind::Finished(summary)) => {
            let mut value = summary_json(summary);
            value["event"] = json!("finished");
            value
        }
        None => json!({"event": "unknown"}),
    }
}

/// An agent as JSON (`rankline agents --json`).
pub fn agent_json(agent: &AgentInfo) -> Value {
    json!({
        "identity": identity_json(&identity_of(&agent.identity)),
        "connected": agent.connected,
        "last_seen_unix_ns": agent.last_seen_unix_ns,
        "connected_since_unix_ns": agent.connected_since_unix_ns,
        "active_profile_id": agent.active_profile_id,
        "clock": agent.clock.as_ref().map(|clock| json!({
            "offset_ns": clock.offset_ns,
            "error_bound_ns": clock.error_bound_ns,
            "round_trip_ns": clock.round_trip_ns,
            "drift_ppm": clock.drift_ppm,
            "measured_at_unix_ns": clock.measured_at_unix_ns,
            "samples": clock.samples,
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_table_lists_ranks_and_where_the_files_are() {
        let mut rank = RankResult {
            agent: Some(AgentIdentity {
                agent_id: "a".into(),
                host: "h".into(),
                ..Default::default()
            }),
            objects: vec![StoredObject {
                key: "c/c-TP-0-EP-0.trace.json.gz".into(),
                size: 2_000_000,
                sha256: String::new(),
            }],
            ..Default::default()
        };
        rank.set_state(RankState::Ok);
        let mut summary = CaptureSummary {
            profile_id: "c".into(),
            ranks: vec![rank],
            storage_url: "file:///data".into(),
            manifest_key: "c/manifest.json".into(),
            ..Default::default()
        };
        summary.set_status(CaptureStatus::Complete);
        let text = summary_table(&summary);
        assert!(
            text.contains("unified-0 TP-0-EP-0  h     ok     2.0 MB  c-TP-0-EP-0.*"),
            "{text}"
        );
        assert!(text.contains("manifest: /data/c/manifest.json"), "{text}");
        assert!(
            text.contains("rankline merge /data/c -o c.pftrace"),
            "{text}"
        );
    }
}
