//! The words a stored capture uses for roles, server kinds, statuses and
//! settings, as types. Each serializes to the word earlier versions wrote, so old
//! captures read unchanged; the wire enums convert to and from these in
//! `rankline-proto`.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The word each variant is stored as (the serde names say the same; a
/// test checks they agree), shown by `Display`, and compared with text so
/// code that reads a capture can say `status == "ok"`.
macro_rules! stored_words {
    ($type:ident { $($variant:ident => $word:literal),+ $(,)? }) => {
        impl $type {
            /// The word stored captures use.
            pub fn word(self) -> &'static str {
                match self {
                    $($type::$variant => $word),+
                }
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.word())
            }
        }

        impl PartialEq<str> for $type {
            fn eq(&self, word: &str) -> bool {
                self.word() == word
            }
        }

        impl PartialEq<&str> for $type {
            fn eq(&self, word: &&str) -> bool {
                self.word() == *word
            }
        }
    };
}

/// Which kind of server a rank belongs to in a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Prefill,
    Decode,
    /// One server doing both prefill and decode. A stored word this
    /// version does not know reads as unified, as an unset wire role does,
    /// so an odd manifest or sidecar is still readable (serde wants this
    /// catch-all last).
    #[serde(other)]
    Unified,
}

stored_words!(Role {
    Unified => "unified",
    Prefill => "prefill",
    Decode => "decode",
});

impl Role {
    /// Every role, in the order people list them.
    pub const ALL: [Role; 3] = [Role::Unified, Role::Prefill, Role::Decode];
}

/// Roles sort by their word (`decode` < `prefill` < `unified`), the order
/// ranks and tables had when the role was stored as a string.
impl Ord for Role {
    fn cmp(&self, other: &Self) -> Ordering {
        self.word().cmp(other.word())
    }
}

impl PartialOrd for Role {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A word that names no role.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("unknown role {0:?}; use unified, prefill or decode")]
pub struct UnknownRole(pub String);

/// Reads `unified`, `prefill` or `decode`, in any case (`PREFILL`).
impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(word: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.word().eq_ignore_ascii_case(word))
            .ok_or_else(|| UnknownRole(word.to_string()))
    }
}

/// Which server family wrote a rank's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ServerKind {
    #[serde(rename = "sglang-jax")]
    SglangJax,
    #[serde(rename = "sglang")]
    Sglang,
    #[serde(rename = "vllm")]
    Vllm,
    /// Not reported (or a kind a newer version knows).
    #[serde(rename = "unknown", other)]
    Unknown,
}

stored_words!(ServerKind {
    SglangJax => "sglang-jax",
    Sglang => "sglang",
    Vllm => "vllm",
    Unknown => "unknown",
});

/// How a rank ended, as the manifest records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RankStatus {
    Ok,
    Failed,
    Lost,
}

stored_words!(RankStatus {
    Ok => "ok",
    Failed => "failed",
    Lost => "lost",
});

/// How a capture ended, as the manifest records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureStatus {
    /// Every rank is ok.
    Complete,
    /// Some ranks are ok.
    Partial,
    /// No rank is ok, or the capture's workload failed.
    Failed,
}

stored_words!(CaptureStatus {
    Complete => "complete",
    Partial => "partial",
    Failed => "failed",
});

/// A capture's settings as requested; only the ones that were set are
/// written (fields in the alphabetical order earlier versions wrote).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_tracer_level: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_steps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python_tracer_level: Option<u32>,
    /// Extra `/start_profile` fields, passed through.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub server_args: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_step: Option<u32>,
    /// The ranks' deadline; `None`: the coordinator's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_the_stored_ones() {
        let kinds = [
            ServerKind::SglangJax,
            ServerKind::Sglang,
            ServerKind::Vllm,
            ServerKind::Unknown,
        ];
        for kind in kinds {
            let text = serde_json::to_string(&kind).unwrap();
            assert_eq!(text, format!("\"{}\"", kind.word()));
            assert_eq!(serde_json::from_str::<ServerKind>(&text).unwrap(), kind);
        }
        assert_eq!(
            serde_json::from_str::<ServerKind>("\"tgi\"").unwrap(),
            ServerKind::Unknown
        );
        for status in [RankStatus::Ok, RankStatus::Failed, RankStatus::Lost] {
            let text = serde_json::to_string(&status).unwrap();
            assert_eq!(text, format!("\"{status}\""));
        }
        for status in [
            CaptureStatus::Complete,
            CaptureStatus::Partial,
            CaptureStatus::Failed,
        ] {
            let text = serde_json::to_string(&status).unwrap();
            assert_eq!(text, format!("\"{status}\""));
        }
        assert_eq!(RankStatus::Lost, "lost");
    }

    #[test]
    fn roles_are_stored_as_their_words_and_sort_by_them() {
        for role in Role::ALL {
            let text = serde_json::to_string(&role).unwrap();
            assert_eq!(text, format!("\"{role}\""));
            assert_eq!(serde_json::from_str::<Role>(&text).unwrap(), role);
            assert_eq!(role.word().to_ascii_uppercase().parse::<Role>(), Ok(role));
        }
        assert_eq!(
            serde_json::from_str::<Role>("\"../x\"").unwrap(),
            Role::Unified
        );
        assert!("both".parse::<Role>().is_err());
        let mut roles = Role::ALL;
        roles.sort();
        assert_eq!(roles, [Role::Decode, Role::Prefill, Role::Unified]);
    }

    #[test]
    fn settings_write_only_what_was_set() {
        let settings = SettingsRecord {
            num_steps: Some(5),
            timeout_ms: Some(9),
            ..Default::default()
        };
        let text = serde_json::to_string(&settings).unwrap();
        assert_eq!(text, r#"{"num_steps":5,"timeout_ms":9}"#);
        let old: SettingsRecord =
            serde_json::from_str(r#"{"duration_ms":2000,"server_args":{"a":"b"}}"#).unwrap();
        assert_eq!(old.duration_ms, Some(2000));
        assert_eq!(old.server_args["a"], "b");
    }
}
