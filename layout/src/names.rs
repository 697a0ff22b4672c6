//! Canonical object names of a rank, and parsing of the names servers write.

use crate::{Role, SIDECAR_SUFFIX, TRACE_SUFFIX, XPLANE_SUFFIX};
use serde::{Deserialize, Serialize};

/// Where a rank sits in a deployment: which server (role, worker) and which
/// process of it (tp, ep, and dp/pp when the deployment has them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RankCoords {
    pub role: Role,
    pub worker: u32,
    pub tp_rank: u32,
    pub ep_rank: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp_rank: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pp_rank: Option<u32>,
}

impl RankCoords {
    /// A unified worker 0 rank with the given TP/EP numbers.
    pub fn unified(tp_rank: u32, ep_rank: u32) -> Self {
        RankCoords {
            role: Role::Unified,
            worker: 0,
            tp_rank,
            ep_rank,
            dp_rank: None,
            pp_rank: None,
        }
    }

    /// The folder level that keeps servers apart: `prefill-0/`. The single
    /// unified server (worker 0) keeps the RFC's flat layout.
    pub fn server_folder(&self) -> Option<String> {
        if self.role == Role::Unified && self.worker == 0 {
            None
        } else {
            Some(format!("{}-{}", self.role, self.worker))
        }
    }

    /// `TP-1-EP-0`, with `-DP-d` / `-PP-p` in SGLang's order when present.
    pub fn rank_label(&self) -> String {
        let mut label = format!("TP-{}", self.tp_rank);
        if let Some(dp) = self.dp_rank {
            label.push_str(&format!("-DP-{dp}"));
        }
        if let Some(pp) = self.pp_rank {
            label.push_str(&format!("-PP-{pp}"));
        }
        label.push_str(&format!("-EP-{}", self.ep_rank));
        label
    }

    /// A short name for people: `prefill-0 TP-1-EP-0`.
    pub fn display_name(&self) -> String {
        format!("{}-{} {}", self.role, self.worker, self.rank_label())
    }

    /// Order for the merged timeline: role, then dp, pp, ep, tp.
    pub fn sort_key(&self) -> (u8, u32, u32, u32, u32, u32) {
        let role = match self.role {
            Role::Unified => 0,
            Role::Prefill => 1,
            Role::Decode => 2,
        };
        (
            role,
            self.worker,
            self.dp_rank.unwrap_or(0),
            self.pp_rank.unwrap_or(0),
            self.ep_rank,
            self.tp_rank,
        )
    }
}

/// The object keys of one rank in one capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankKey {
    /// `<profile_id>/[<role>-<worker>/]<profile_id>-TP-<n>-EP-<m>`
    pub stem: String,
}

impl RankKey {
    pub fn new(profile_id: &str, coords: &RankCoords) -> Self {
        let folder = match coords.server_folder() {
            Some(folder) => format!("{profile_id}/{folder}/"),
            None => format!("{profile_id}/"),
        };
        RankKey {
            stem: format!("{folder}{profile_id}-{}", coords.rank_label()),
        }
    }

    pub fn trace(&self) -> String {
        format!("{}{TRACE_SUFFIX}", self.stem)
    }

    pub fn xplane(&self) -> String {
        format!("{}{XPLANE_SUFFIX}", self.stem)
    }

    pub fn sidecar(&self) -> String {
        format!("{}{SIDECAR_SUFFIX}", self.stem)
    }
}

/// What a trace file's name says about its rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRankName {
    /// The profile id part (SGLang: `str(time.time())`; rankline: the capture id).
    pub profile_id: String,
    /// SGLang's `profile_prefix`, when the name had one before the id.
    pub prefix: Option<String>,
    pub tp_rank: u32,
    pub ep_rank: Option<u32>,
    pub dp_rank: Option<u32>,
    pub pp_rank: Option<u32>,
    /// `EXTEND`, `DECODE`, `prefill` or `decode` when the file is one stage.
    pub stage: Option<String>,
}

/// SGLang's expert-parallel rank of a TP rank (`moe_ep_rank`): the TP
/// group is cut into `ep_size` equal runs of consecutive ranks.
pub fn sglang_ep_rank(tp_rank: u32, tp_size: u32, ep_size: u32) -> u32 {
    if ep_size <= 1 || tp_size < ep_size {
        return 0;
    }
    tp_rank / (tp_size / ep_size)
}

/// Reads the rank out of a trace file name: rankline's canonical
/// `<id>-TP-n-EP-m.trace.json.gz` and SGLang's
/// `[prefix-]<id>-TP-t[-DP-d][-PP-p][-EP-e][-STAGE].trace.json.gz`.
/// Returns `None` for names that carry no `-TP-<n>` part.
pub fn parse_rank_file_name(file_name: &str) -> Option<ParsedRankName> {
    let base = file_name
        .rsplit('/')
        .next()
        .unwrap_or(file_name)
        .strip_suffix(".gz")
        .unwrap_or(file_name);
    let base = base
        .strip_suffix(".trace.json")
        .or_else(|| base.strip_suffix(".json"))
        .or_else(|| base.strip_suffix(XPLANE_SUFFIX))
        .or_else(|| base.strip_suffix(".meta"))
        .unwrap_or(base);
    // The id may itself contain '-', so anchor on the last "-TP-<digits>".
    let tp_at = base.rfind("-TP-")?;
    let head = &base[..tp_at];
    let parts: Vec<&str> = base[tp_at + 1..].split('-').collect();

    let mut parsed = ParsedRankName {
        profile_id: String::new(),
        prefix: None,
        tp_rank: 0,
        ep_rank: None,
        dp_rank: None,
        pp_rank: None,
        stage: None,
    };
    let mut i = 0;
    let mut saw_tp = false;
    while i < parts.len() {
        let key = parts[i];
        let value = parts.get(i + 1).and_then(|v| v.parse::<u32>().ok());
        match (key, value) {
            ("TP", Some(v)) if !saw_tp => {
                parsed.tp_rank = v;
                saw_tp = true;
                i += 2;
            }
            ("DP", Some(v)) if parsed.dp_rank.is_none() => {
                parsed.dp_rank = Some(v);
                i += 2;
            }
            ("PP", Some(v)) if parsed.pp_rank.is_none() => {
                parsed.pp_rank = Some(v);
                i += 2;
            }
            ("EP", Some(v)) if parsed.ep_rank.is_none() => {
                parsed.ep_rank = Some(v);
                i += 2;
            }
            (stage, None)
                if i + 1 == parts.len()
                    && matches!(stage, "EXTEND" | "DECODE" | "prefill" | "decode") =>
            {
                parsed.stage = Some(stage.to_string());
                i += 1;
            }
            _ => return None,
        }
    }
    if !saw_tp || head.is_empty() {
        return None;
    }
    // SGLang's profile id is str(time.time()): digits and one dot. Anything
    // before it, joined by '-', is the user's prefix.
    match head.rsplit_once('-') {
        Some((prefix, id)) if looks_like_epoch_seconds(id) => {
            parsed.prefix = Some(prefix.to_string());
            parsed.profile_id = id.to_string();
        }
        _ => parsed.profile_id = head.to_string(),
    }
    Some(parsed)
}

fn looks_like_epoch_seconds(text: &str) -> bool {
    let mut parts = text.splitn(2, '.');
    let whole = parts.next().unwrap_or("");
    whole.len() >= 9
        && whole.bytes().all(|b| b.is_ascii_digit())
        && parts
            .next()
            .is_none_or(|frac| frac.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unified_worker_zero_is_flat() {
        let key = RankKey::new("cap1", &RankCoords::unified(3, 1));
        assert_eq!(key.trace(), "cap1/cap1-TP-3-EP-1.trace.json.gz");
        assert_eq!(key.xplane(), "cap1/cap1-TP-3-EP-1.xplane.pb");
        assert_eq!(key.sidecar(), "cap1/cap1-TP-3-EP-1.meta.json");
    }

    #[test]
    fn pd_workers_get_a_folder_and_keep_the_file_name() {
        let coords = RankCoords {
            role: Role::Prefill,
            worker: 1,
            ..RankCoords::unified(0, 0)
        };
        assert_eq!(
            RankKey::new("cap1", &coords).trace(),
            "cap1/prefill-1/cap1-TP-0-EP-0.trace.json.gz"
        );
    }

    #[test]
    fn dp_and_pp_extend_the_label_in_sglang_order() {
        let coords = RankCoords {
            dp_rank: Some(2),
            pp_rank: Some(1),
            ..RankCoords::unified(3, 0)
        };
        assert_eq!(coords.rank_label(), "TP-3-DP-2-PP-1-EP-0");
    }

    #[test]
    fn parses_canonical_names() {
        let p = parse_rank_file_name("dir/my-cap-TP-2-EP-1.trace.json.gz").unwrap();
        assert_eq!(p.profile_id, "my-cap");
        assert_eq!(p.prefix, None);
        assert_eq!((p.tp_rank, p.ep_rank), (2, Some(1)));
    }

    #[test]
    fn parses_sglang_names_with_prefix_and_stage() {
        let p = parse_rank_file_name("run-a-1763850000.1234-TP-1-DP-0-EP-3-DECODE.trace.json.gz")
            .unwrap();
        assert_eq!(p.prefix.as_deref(), Some("run-a"));
        assert_eq!(p.profile_id, "1763850000.1234");
        assert_eq!(p.tp_rank, 1);
        assert_eq!(p.dp_rank, Some(0));
        assert_eq!(p.ep_rank, Some(3));
        assert_eq!(p.stage.as_deref(), Some("DECODE"));
    }

    #[test]
    fn names_without_a_rank_are_not_parsed() {
        assert_eq!(parse_rank_file_name("vm.trace.json.gz"), None);
        assert_eq!(parse_rank_file_name("x-TP-a.trace.json.gz"), None);
        assert_eq!(parse_rank_file_name("-TP-1.trace.json.gz"), None);
    }
}
