//! What the coordinator accepts from an agent. An agent is a process on
//! some host, possibly a rogue one: its identity ends up in file names,
//! tables and manifests, and the object keys it reports end up in manifests
//! that `rankline merge` and `export-xprof` read. So identity fields are
//! bounded and file-safe, and every reported key must lie under the rank's
//! own prefix (`<profile_id>/[<role>-<worker>/]<profile_id>-<rank label>`).

use rankline_layout::RankKey;
use rankline_proto::{AgentIdentity, RankUpdate};

/// Longest agent id (it is a map key, a log field and a table column).
pub const MAX_AGENT_ID: usize = 200;
/// Longest host name (DNS allows 253).
pub const MAX_HOST: usize = 253;
const MAX_SERVER_URL: usize = 2048;
const MAX_LABELS: usize = 32;
const MAX_LABEL_KEY: usize = 63;
const MAX_LABEL_VALUE: usize = 256;
const MAX_VERSION: usize = 64;
/// Ranks, workers and node ranks above this are not a real deployment.
const MAX_RANK: u32 = 65_535;
/// A rank stores a trace, an xplane, a sidecar and maybe stage traces.
const MAX_OBJECTS: usize = 16;
/// Longer details are cut (they are shown in tables and manifests).
pub const MAX_DETAIL: usize = 4096;

/// Checks an agent's hello identity; the error says which field is wrong.
pub fn check_identity(identity: &AgentIdentity) -> Result<(), String> {
    check_agent_id(&identity.agent_id)?;
    check_host(&identity.host)?;
    if identity.server_url.len() > MAX_SERVER_URL || has_control(&identity.server_url) {
        return Err(format!(
            "server_url must be at most {MAX_SERVER_URL} characters without control characters"
        ));
    }
    if identity.agent_version.len() > MAX_VERSION || has_control(&identity.agent_version) {
        return Err(format!(
            "agent_version must be at most {MAX_VERSION} printable characters"
        ));
    }
    if identity.labels.len() > MAX_LABELS {
        return Err(format!("at most {MAX_LABELS} labels"));
    }
    for (key, value) in &identity.labels {
        if key.is_empty() || key.len() > MAX_LABEL_KEY || !key.chars().all(is_name_char) {
            return Err(format!(
                "label key {key:?} must be 1 to {MAX_LABEL_KEY} letters, digits, '.', '_' or '-'"
            ));
        }
        if value.len() > MAX_LABEL_VALUE || has_control(value) {
            return Err(format!(
                "label {key}'s value must be at most {MAX_LABEL_VALUE} printable characters"
            ));
        }
    }
    let ranks = [
        ("worker", Some(identity.worker)),
        ("tp_rank", Some(identity.tp_rank)),
        ("ep_rank", Some(identity.ep_rank)),
        ("dp_rank", identity.dp_rank),
        ("pp_rank", identity.pp_rank),
        ("node_rank", identity.node_rank),
    ];
    for (field, value) in ranks {
        if value.is_some_and(|value| value > MAX_RANK) {
            return Err(format!("{field} must be at most {MAX_RANK}"));
        }
    }
    Ok(())
}

fn check_agent_id(agent_id: &str) -> Result<(), String> {
    let safe = agent_id
        .chars()
        .all(|c| is_name_char(c) || c == '/' || c == ':' || c == '@');
    if agent_id.is_empty()
        || agent_id.len() > MAX_AGENT_ID
        || !safe
        || agent_id.starts_with('/')
        || agent_id
            .split('/')
            .any(|part| part.is_empty() || part == "..")
    {
        return Err(format!(
            "agent id {:?} must be 1 to {MAX_AGENT_ID} letters, digits, '.', '_', '-', ':', '@' \
             and '/' between non-empty parts (no `..`)",
            shorten(agent_id)
        ));
    }
    Ok(())
}

fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty()
        || host.len() > MAX_HOST
        || !host.chars().all(is_name_char)
        || host.starts_with('.')
        || host.starts_with('-')
        || host.contains("..")
    {
        return Err(format!(
            "host {:?} must be a host name: 1 to {MAX_HOST} letters, digits, '.', '_' or '-', \
             not starting with '.' or '-' (pass the agent --host)",
            shorten(host)
        ));
    }
    Ok(())
}

/// Checks a rank report against the rank it is for (`identity` as the
/// capture recorded it) and cuts an overlong detail. The error names the
/// first key that is refused.
pub fn check_update(
    update: &mut RankUpdate,
    identity: &AgentIdentity,
    profile_id: &str,
) -> Result<(), String> {
    if update.detail.len() > MAX_DETAIL {
        let mut end = MAX_DETAIL;
        while !update.detail.is_char_boundary(end) {
            end -= 1;
        }
        update.detail.truncate(end);
    }
    if update.objects.len() > MAX_OBJECTS {
        return Err(format!(
            "{} objects reported for one rank (at most {MAX_OBJECTS})",
            update.objects.len()
        ));
    }
    let stem = RankKey::new(profile_id, &identity.rank_coords()).stem;
    for object in &update.objects {
        if !key_within(&object.key, &stem) {
            return Err(format!(
                "object key {:?} lies outside the rank's prefix {stem}",
                shorten(&object.key)
            ));
        }
        let sha_ok = object.sha256.is_empty()
            || (object.sha256.len() == 64 && object.sha256.bytes().all(|b| b.is_ascii_hexdigit()));
        if !sha_ok {
            return Err(format!(
                "object {}: sha256 must be 64 hex digits",
                shorten(&object.key)
            ));
        }
    }
    Ok(())
}

/// True when `key` is one of the rank's own objects: the stem, then an
/// optional `-STAGE`, then a dotted extension; no other folder, no `..`,
/// nothing absolute.
pub fn key_within(key: &str, stem: &str) -> bool {
    let Some(rest) = key.strip_prefix(stem) else {
        return false;
    };
    if key.starts_with('/') || key.contains('\\') || has_control(key) {
        return false;
    }
    let extension = match rest.strip_prefix('-') {
        Some(staged) => {
            let Some((stage, extension)) = staged.split_once('.') else {
                return false;
            };
            let stage_ok = stage
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
                && stage.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !stage_ok {
                return false;
            }
            extension
        }
        None => match rest.strip_prefix('.') {
            Some(extension) => extension,
            None => return false,
        },
    };
    !extension.is_empty()
        && extension
            .split('.')
            .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric()))
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-'
}

fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

/// At most 80 characters of something refused, for the error message.
fn shorten(text: &str) -> String {
    let mut short: String = text.chars().take(80).collect();
    if short.len() < text.len() {
        short.push_str("...");
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;
    use rankline_proto::StoredObject;

    fn identity() -> AgentIdentity {
        AgentIdentity {
            agent_id: "h0/unified-0/TP-0-EP-0".into(),
            host: "h0".into(),
            ..Default::default()
        }
    }

    #[test]
    fn keys_must_stay_under_the_rank_prefix() {
        let stem = "p/p-TP-0-EP-0";
        for good in [
            "p/p-TP-0-EP-0.trace.json.gz",
            "p/p-TP-0-EP-0.xplane.pb",
            "p/p-TP-0-EP-0.meta.json",
            "p/p-TP-0-EP-0-EXTEND.trace.json.gz",
        ] {
            assert!(key_within(good, stem), "{good}");
        }
        for bad in [
            "../p/p-TP-0-EP-0.trace.json.gz",
            "p/p-TP-0-EP-0.trace.json.gz/../../../etc/passwd",
            "p/p-TP-0-EP-0/../../x.trace.json.gz",
            "p/p-TP-0-EP-0..",
            "p/p-TP-0-EP-0",
            "/p/p-TP-0-EP-0.trace.json.gz",
            "p/p-TP-1-EP-0.trace.json.gz",
            "p/manifest.json",
            "p/p-TP-0-EP-0-../x.pb",
            "p/p-TP-0-EP-0.trace\\..\\x",
        ] {
            assert!(!key_within(bad, stem), "{bad}");
        }
    }

    #[test]
    fn updates_with_foreign_keys_are_refused_and_details_cut() {
        let mut update = RankUpdate {
            detail: "é".repeat(MAX_DETAIL),
            objects: vec![StoredObject {
                key: "p/p-TP-0-EP-0.trace.json.gz".into(),
                size: 1,
                sha256: "ab".repeat(32),
            }],
            ..Default::default()
        };
        check_update(&mut update, &identity(), "p").unwrap();
        assert!(update.detail.len() <= MAX_DETAIL);
        update.objects[0].key = "p/../../outside.trace.json.gz".into();
        let error = check_update(&mut update, &identity(), "p").unwrap_err();
        assert!(
            error.contains("outside the rank's prefix p/p-TP-0-EP-0"),
            "{error}"
        );
    }

    #[test]
    fn identities_are_bounded_and_file_safe() {
        assert!(check_identity(&identity()).is_ok());
        let with = |change: fn(&mut AgentIdentity)| {
            let mut identity = identity();
            change(&mut identity);
            check_identity(&identity)
        };
        assert!(with(|i| i.host = "../etc".into()).is_err());
        assert!(with(|i| i.host = "a/b".into()).is_err());
        assert!(with(|i| i.host = "h".repeat(300)).is_err());
        assert!(with(|i| i.agent_id = "a/../b".into()).is_err());
        assert!(with(|i| i.agent_id = "/abs".into()).is_err());
        assert!(with(|i| i.agent_id = "a\nb".into()).is_err());
        assert!(with(|i| i.tp_rank = 1 << 20).is_err());
        assert!(with(|i| {
            i.labels.insert("zone".into(), "x\u{1b}[31m".into());
        })
        .is_err());
    }
}
