//! A host clock's relation to the coordinator's, as recorded in a sidecar.

use serde::{Deserialize, Serialize};

/// One four-timestamp exchange (t1/t4 on the agent's clock, t2/t3 on the
/// coordinator's), kept in the sidecar so a later reader can refit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockSampleRecord {
    pub t1: i64,
    pub t2: i64,
    pub t3: i64,
    pub t4: i64,
}

impl ClockSampleRecord {
    /// Agent clock minus coordinator clock, NTP's ((t2-t1)+(t3-t4))/2.
    pub fn offset_ns(&self) -> i64 {
        let sum = i128::from(self.t2 - self.t1) + i128::from(self.t3 - self.t4);
        // The formula gives coordinator minus agent; flip it.
        -(sum / 2) as i64
    }

    /// Time on the wire: (t4-t1) - (t3-t2), never negative.
    pub fn round_trip_ns(&self) -> u64 {
        let rtt = (self.t4 - self.t1) - (self.t3 - self.t2);
        rtt.max(0) as u64
    }
}

/// A fitted clock relation: `agent = reference + offset_ns + drift * (agent - at)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClockFit {
    /// Agent clock minus reference clock at `at_unix_ns` (agent clock).
    pub offset_ns: i64,
    /// Half the round trip of the samples used.
    pub error_bound_ns: u64,
    /// Rate difference in parts per million; positive when the agent runs fast.
    #[serde(default)]
    pub drift_ppm: f64,
    /// Agent-clock instant the offset refers to.
    pub at_unix_ns: i64,
    /// The samples the fit came from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<ClockSampleRecord>,
}

impl ClockFit {
    /// The offset in force at an agent-clock instant.
    pub fn offset_at(&self, agent_unix_ns: i64) -> i64 {
        let elapsed = (agent_unix_ns - self.at_unix_ns) as f64;
        self.offset_ns + (elapsed * self.drift_ppm * 1e-6).round() as i64
    }

    /// Maps an agent-clock instant onto the reference (coordinator) clock.
    pub fn to_reference(&self, agent_unix_ns: i64) -> i64 {
        agent_unix_ns - self.offset_at(agent_unix_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_offset_and_round_trip() {
        // Agent is 1_000 ns ahead; 100 ns each way; 50 ns in the coordinator.
        let s = ClockSampleRecord {
            t1: 10_000,
            t2: 10_000 - 1_000 + 100,
            t3: 10_000 - 1_000 + 150,
            t4: 10_250,
        };
        assert_eq!(s.offset_ns(), 1_000);
        assert_eq!(s.round_trip_ns(), 200);
    }

    #[test]
    fn fit_applies_offset_and_drift() {
        let fit = ClockFit {
            offset_ns: 5_000,
            error_bound_ns: 10,
            drift_ppm: 100.0,
            at_unix_ns: 1_000_000_000,
            samples: vec![],
        };
        assert_eq!(fit.to_reference(1_000_000_000), 1_000_000_000 - 5_000);
        // One second later the agent has gained another 100 us.
        assert_eq!(fit.offset_at(2_000_000_000), 5_000 + 100_000);
    }
}
