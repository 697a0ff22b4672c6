//! How a coordinator is set up, and the defaults derived from it (lead time,
//! per-rank deadlines).

use std::time::Duration;

use rankline_proto::CaptureSettings;

use crate::auth::Security;

/// Everything a coordinator needs to run. `CoordinatorConfig::new(url)` gives
/// the documented defaults.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Where captures are stored (any URL `rankline_storage::Storage::open`
    /// takes). Agents get it in every `StartCapture`; the coordinator writes
    /// manifests there.
    pub storage_url: String,
    /// Sent to agents in `Welcome`: they send a heartbeat at least this often.
    pub heartbeat_interval: Duration,
    /// An agent silent for this many heartbeat intervals is disconnected and
    /// its unfinished ranks become `lost`.
    pub lost_after_intervals: u32,
    /// Lead time of a capture's common start instant: `lead_time_base +
    /// lead_time_per_agent × agents`, unless the request names one.
    pub lead_time_base: Duration,
    pub lead_time_per_agent: Duration,
    /// Default profiling window for a capture stopped by `num_steps` or by
    /// hand (`duration_ms` captures use their duration).
    pub default_profiling_window: Duration,
    /// Added to the profiling window for writing, collecting and uploading
    /// files, to make a rank's default deadline.
    pub files_allowance: Duration,
    /// Sent in `Welcome` so agents can tell coordinator restarts apart.
    pub coordinator_id: String,
    /// Where capture records live so captures survive a restart (any URL
    /// `Storage::open` takes). `None`: inside the capture storage, under
    /// `.rankline-coordinator/`, so a coordinator started on another machine
    /// with the same storage finds them too.
    pub state_url: Option<String>,
    /// After a restart, the agents of running captures get this much longer
    /// than `lost_after` to come back: an agent that lost the coordinator for
    /// a while retries only every 5 s plus up to 50% jitter.
    pub restart_grace: Duration,
    /// Tokens and TLS; `Security::default()` accepts anyone over plain gRPC.
    pub security: Security,
}

impl CoordinatorConfig {
    /// The documented defaults: heartbeats every 1 s, lost after 5 missed
    /// (7.5 s more right after a restart), lead time 300 ms + 2 ms per agent,
    /// deadline = window (duration, or 60 s) + 120 s, capture records inside
    /// the capture storage.
    pub fn new(storage_url: impl Into<String>) -> Self {
        CoordinatorConfig {
            storage_url: storage_url.into(),
            heartbeat_interval: Duration::from_secs(1),
            lost_after_intervals: 5,
            lead_time_base: Duration::from_millis(300),
            lead_time_per_agent: Duration::from_millis(2),
            default_profiling_window: Duration::from_secs(60),
            files_allowance: Duration::from_secs(120),
            coordinator_id: format!("coordinator-{:08x}", rand::random::<u32>()),
            state_url: None,
            restart_grace: Duration::from_millis(7_500),
            security: Security::default(),
        }
    }

    /// How long an agent may stay silent before it counts as gone.
    pub fn lost_after(&self) -> Duration {
        self.heartbeat_interval * self.lost_after_intervals.max(1)
    }

    /// How long an agent of a capture restored after a restart may take to
    /// come back before its ranks count as lost.
    pub fn lost_after_restart(&self) -> Duration {
        self.lost_after() + self.restart_grace
    }

    /// The lead time for a capture over `agents` agents when the request
    /// leaves it to the coordinator (`requested_ms == 0`).
    pub fn lead_time(&self, requested_ms: u64, agents: usize) -> Duration {
        if requested_ms > 0 {
            return Duration::from_millis(requested_ms);
        }
        let agents = u32::try_from(agents).unwrap_or(u32::MAX);
        self.lead_time_base + self.lead_time_per_agent.saturating_mul(agents)
    }

    /// A rank's time budget from the start instant to stored files:
    /// `timeout_ms` when set, else the profiling window plus the files
    /// allowance.
    pub fn rank_timeout(&self, settings: &CaptureSettings) -> Duration {
        if settings.timeout_ms > 0 {
            return Duration::from_millis(settings.timeout_ms);
        }
        let window = settings
            .duration_ms
            .map(Duration::from_millis)
            .unwrap_or(self.default_profiling_window);
        window + self.files_allowance
    }

    /// How often liveness and deadlines are checked: often enough that a
    /// short test configuration reacts quickly, rarely enough to cost nothing.
    pub(crate) fn sweep_interval(&self) -> Duration {
        (self.heartbeat_interval / 4).clamp(Duration::from_millis(10), Duration::from_millis(250))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lead_time_grows_with_agents_unless_requested() {
        let config = CoordinatorConfig::new("memory://");
        assert_eq!(config.lead_time(0, 10), Duration::from_millis(320));
        assert_eq!(config.lead_time(50, 10), Duration::from_millis(50));
    }

    #[test]
    fn rank_timeout_defaults_from_the_window() {
        let config = CoordinatorConfig::new("memory://");
        let by_duration = CaptureSettings {
            duration_ms: Some(2_000),
            ..Default::default()
        };
        assert_eq!(config.rank_timeout(&by_duration), Duration::from_secs(122));
        let by_steps = CaptureSettings {
            num_steps: Some(5),
            ..Default::default()
        };
        assert_eq!(config.rank_timeout(&by_steps), Duration::from_secs(180));
        let explicit = CaptureSettings {
            timeout_ms: 500,
            ..by_steps
        };
        assert_eq!(config.rank_timeout(&explicit), Duration::from_millis(500));
    }
}
