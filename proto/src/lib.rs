//! The gRPC contract between rankline agents, the coordinator and the CLI.
//!
//! The schema is `proto/rankline/v1/rankline.proto`; this crate only compiles
//! it (with protox, no system `protoc`) and adds small conversions that every
//! side needs, and [`security`]: how clients send tokens and speak TLS.

#[allow(clippy::all, missing_docs)]
mod generated {
    tonic::include_proto!("rankline.v1");
}

pub use generated::*;

pub mod convert;
pub mod security;

/// Where agents and the CLI look for a coordinator unless told otherwise
/// (the coordinator's default listen address).
pub const DEFAULT_COORDINATOR_URL: &str = "http://127.0.0.1:7471";

use std::time::{SystemTime, UNIX_EPOCH};

/// Now on this process's wall clock, in Unix-epoch nanoseconds.
pub fn unix_now_ns() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_nanos()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

impl AgentIdentity {
    /// Where this agent's rank sits in the deployment, as the storage layout
    /// names it.
    pub fn rank_coords(&self) -> rankline_layout::RankCoords {
        rankline_layout::RankCoords {
            role: self.role().into(),
            worker: self.worker,
            tp_rank: self.tp_rank,
            ep_rank: self.ep_rank,
            dp_rank: self.dp_rank,
            pp_rank: self.pp_rank,
        }
    }
}

/// An error and its causes on one line. Transport errors (tonic, hyper,
/// reqwest) say little at the top ("transport error") and the useful part
/// ("Connection refused") below.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl RankState {
    /// True once the rank will not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, RankState::Ok | RankState::Failed | RankState::Lost)
    }

    /// The lower-case word shown to people and written to manifests.
    pub fn word(self) -> &'static str {
        match self {
            RankState::Unspecified => "unknown",
            RankState::Pending => "pending",
            RankState::Armed => "armed",
            RankState::Profiling => "profiling",
            RankState::Stopping => "stopping",
            RankState::Collecting => "collecting",
            RankState::Uploading => "uploading",
            RankState::Ok => "ok",
            RankState::Failed => "failed",
            RankState::Lost => "lost",
        }
    }

    /// A rank state from its word ([`RankState::word`]).
    pub fn from_word(word: &str) -> Option<RankState> {
        [
            RankState::Pending,
            RankState::Armed,
            RankState::Profiling,
            RankState::Stopping,
            RankState::Collecting,
            RankState::Uploading,
            RankState::Ok,
            RankState::Failed,
            RankState::Lost,
        ]
        .into_iter()
        .find(|state| state.word() == word)
    }
}

impl CaptureStatus {
    /// The lower-case word shown to people and written to manifests.
    pub fn word(self) -> &'static str {
        match self {
            CaptureStatus::Unspecified => "unknown",
            CaptureStatus::Running => "running",
            CaptureStatus::Complete => "complete",
            CaptureStatus::Partial => "partial",
            CaptureStatus::Failed => "failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_words_round_trip() {
        for role in [Role::Unified, Role::Prefill, Role::Decode] {
            assert_eq!(Role::from_word(role.word()), Some(role));
        }
        assert_eq!(Role::from_word("PREFILL"), Some(Role::Prefill));
        assert_eq!(Role::from_word("both"), None);
    }

    #[test]
    fn final_states() {
        assert!(RankState::Ok.is_final());
        assert!(RankState::Lost.is_final());
        assert!(!RankState::Uploading.is_final());
    }
}
