//! This host's clock against the coordinator's (issue 4, item 1).
//!
//! A burst is a handful of NTP-style exchanges (`AgentLink.ClockProbe`).
//! Each sample says the true offset lies within half its round trip of the
//! sample's offset; the burst's estimate is the intersection of those
//! intervals over its lowest-round-trip samples, so the bound is never worse
//! than half the best round trip. Two bursts far enough apart give the drift.
//! offset = agent clock - coordinator clock.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use rankline_layout::{ClockFit, ClockSampleRecord};
use rankline_proto::agent_link_client::AgentLinkClient;
use rankline_proto::security::SecureChannel;
use rankline_proto::{unix_now_ns, ClockEstimate, ClockProbeRequest};
use tokio::time::Instant;

/// Drift is only trusted when the two bursts' bounds make it this certain.
const MAX_DRIFT_UNCERTAINTY_PPM: f64 = 20.0;
/// A larger apparent rate is a clock step (NTP slewed or set the clock), not drift.
const MAX_PLAUSIBLE_DRIFT_PPM: f64 = 1000.0;
/// Bursts kept for the idle drift estimate (about 15 minutes at 30 s).
const HISTORY_BURSTS: usize = 32;

/// What one burst says about the offset.
#[derive(Debug, Clone, PartialEq)]
pub struct BurstEstimate {
    /// Agent clock minus coordinator clock.
    pub offset_ns: i64,
    /// The true offset is within this of `offset_ns`.
    pub error_bound_ns: u64,
    /// Round trip of the burst's best sample.
    pub round_trip_ns: u64,
    /// Agent-clock instant of the best sample (midway between t1 and t4).
    pub at_unix_ns: i64,
    /// How many samples the intersection used.
    pub used: u32,
    /// Every valid sample of the burst, kept for sidecars.
    pub samples: Vec<ClockSampleRecord>,
}

/// A rate difference and how sure it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Drift {
    /// Positive when the agent runs fast.
    pub ppm: f64,
    /// Bounds of both bursts over their distance, in ppm.
    pub uncertainty_ppm: f64,
}

/// Estimates the offset from one burst's samples; `None` when no sample is
/// usable (timestamps out of order).
pub fn estimate_burst(samples: &[ClockSampleRecord]) -> Option<BurstEstimate> {
    let mut valid: Vec<ClockSampleRecord> = samples
        .iter()
        .copied()
        .filter(|s| s.t4 >= s.t1 && s.t3 >= s.t2)
        .collect();
    if valid.is_empty() {
        return None;
    }
    let mut by_round_trip = valid.clone();
    by_round_trip.sort_by_key(ClockSampleRecord::round_trip_ns);
    let best = by_round_trip[0];
    // The better half of the burst; slower samples carry queueing noise.
    let kept = by_round_trip.len().div_ceil(2);
    let interval = |s: &ClockSampleRecord| {
        let half = i128::from(s.round_trip_ns().div_ceil(2));
        let offset = i128::from(s.offset_ns());
        (offset - half, offset + half)
    };
    let (mut low, mut high) = interval(&best);
    let mut used = 1;
    for sample in &by_round_trip[1..kept] {
        let (l, h) = interval(sample);
        // A sample that contradicts the better ones saw an asymmetric path.
        if l <= high && h >= low {
            low = low.max(l);
            high = high.min(h);
            used += 1;
        }
    }
    valid.sort_by_key(|s| s.t1);
    Some(BurstEstimate {
        offset_ns: ((low + high) / 2) as i64,
        error_bound_ns: ((high - low + 1) / 2) as u64,
        round_trip_ns: best.round_trip_ns(),
        at_unix_ns: best.t1 + (best.t4 - best.t1) / 2,
        used,
        samples: valid,
    })
}

/// The rate difference between two bursts, `None` when they are at the
/// same instant or the apparent rate is a clock step.
pub fn drift_between(earlier: &BurstEstimate, later: &BurstEstimate) -> Option<Drift> {
    let span = (later.at_unix_ns - earlier.at_unix_ns) as f64;
    if span <= 0.0 {
        return None;
    }
    let ppm = (later.offset_ns - earlier.offset_ns) as f64 / span * 1e6;
    let uncertainty_ppm = (earlier.error_bound_ns + later.error_bound_ns) as f64 / span * 1e6;
    (ppm.abs() <= MAX_PLAUSIBLE_DRIFT_PPM).then_some(Drift {
        ppm,
        uncertainty_ppm,
    })
}

/// The surest of some drift candidates, if any is sure enough to use.
fn surest(candidates: impl IntoIterator<Item = Option<Drift>>) -> Option<Drift> {
    candidates
        .into_iter()
        .flatten()
        .filter(|d| d.uncertainty_ppm <= MAX_DRIFT_UNCERTAINTY_PPM)
        .min_by(|a, b| a.uncertainty_ppm.total_cmp(&b.uncertainty_ppm))
}

/// The bursts measured so far and what they say.
#[derive(Debug, Default)]
pub struct ClockTracker {
    history: VecDeque<BurstEstimate>,
}

impl ClockTracker {
    /// Records a burst. A jump no drift explains means the clock was set:
    /// the older bursts no longer describe it and are dropped.
    pub fn add(&mut self, burst: BurstEstimate) {
        if let Some(last) = self.history.back() {
            let stepped = drift_between(last, &burst).is_none()
                && last.offset_ns.abs_diff(burst.offset_ns)
                    > last.error_bound_ns + burst.error_bound_ns;
            if stepped {
                tracing::warn!(
                    from_ns = last.offset_ns,
                    to_ns = burst.offset_ns,
                    "this host's clock offset jumped (the clock was set?); starting the fit over"
                );
                self.history.clear();
            }
        }
        if self.history.len() == HISTORY_BURSTS {
            self.history.pop_front();
        }
        self.history.push_back(burst);
    }

    pub fn latest(&self) -> Option<&BurstEstimate> {
        self.history.back()
    }

    /// The surest drift between the latest burst and an older one.
    pub fn drift(&self) -> Option<Drift> {
        let latest = self.history.back()?;
        surest(
            self.history
                .iter()
                .rev()
                .skip(1)
                .map(|older| drift_between(older, latest)),
        )
    }

    /// The estimate heartbeats carry.
    pub fn estimate(&self) -> Option<ClockEstimate> {
        let latest = self.latest()?;
        Some(ClockEstimate {
            offset_ns: latest.offset_ns,
            error_bound_ns: latest.error_bound_ns,
            round_trip_ns: latest.round_trip_ns,
            drift_ppm: self.drift().map_or(0.0, |d| d.ppm),
            measured_at_unix_ns: latest.at_unix_ns,
            samples: latest.used,
        })
    }

    /// The offset in force at an agent-clock instant (0 before any burst).
    pub fn offset_at(&self, agent_unix_ns: i64) -> i64 {
        self.fit(None, None)
            .map_or(0, |fit| fit.offset_at(agent_unix_ns))
    }

    /// The fit a capture's sidecar records: anchored on the burst taken
    /// before the start (or the latest one), with the drift from the bursts
    /// around the capture when they are far enough apart, else from history.
    pub fn fit(
        &self,
        before: Option<&BurstEstimate>,
        after: Option<&BurstEstimate>,
    ) -> Option<ClockFit> {
        let base = before.or(self.latest())?;
        let around = after.and_then(|after| drift_between(base, after));
        let drift = surest([around, self.drift()]);
        let mut samples = base.samples.clone();
        if let Some(after) = after {
            samples.extend_from_slice(&after.samples);
        }
        Some(ClockFit {
            offset_ns: base.offset_ns,
            error_bound_ns: after.map_or(base.error_bound_ns, |a| {
                a.error_bound_ns.max(base.error_bound_ns)
            }),
            drift_ppm: drift.map_or(0.0, |d| d.ppm),
            at_unix_ns: base.at_unix_ns,
            samples,
        })
    }
}

/// Runs bursts against the coordinator the link is connected to.
#[derive(Debug)]
pub struct ClockSync {
    tracker: Mutex<ClockTracker>,
    client: Mutex<Option<AgentLinkClient<SecureChannel>>>,
    /// Bursts never overlap: concurrent probes would inflate each other's round trips.
    burst_lock: tokio::sync::Mutex<()>,
    probes: usize,
    probe_timeout: Duration,
}

impl ClockSync {
    pub fn new(probes: usize, probe_timeout: Duration) -> ClockSync {
        ClockSync {
            tracker: Mutex::new(ClockTracker::default()),
            client: Mutex::new(None),
            burst_lock: tokio::sync::Mutex::new(()),
            probes: probes.max(1),
            probe_timeout,
        }
    }

    /// Called by the link when a session starts (`Some`) or ends (`None`).
    pub fn set_client(&self, client: Option<AgentLinkClient<SecureChannel>>) {
        *self.client.lock().unwrap_or_else(|e| e.into_inner()) = client;
    }

    pub fn with_tracker<T>(&self, f: impl FnOnce(&ClockTracker) -> T) -> T {
        f(&self.tracker.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn estimate(&self) -> Option<ClockEstimate> {
        self.with_tracker(ClockTracker::estimate)
    }

    /// One burst, stopped early at `stop_by`. `None` when the coordinator is
    /// not connected or no probe came back.
    pub async fn burst(&self, stop_by: Option<Instant>) -> Option<BurstEstimate> {
        let _one_at_a_time = self.burst_lock.lock().await;
        let mut client = self
            .client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        let mut samples = Vec::with_capacity(self.probes);
        for _ in 0..self.probes {
            if stop_by.is_some_and(|at| Instant::now() >= at) {
                break;
            }
            let t1 = unix_now_ns();
            let answer = tokio::time::timeout(
                self.probe_timeout,
                client.clock_probe(ClockProbeRequest { t1_unix_ns: t1 }),
            )
            .await;
            let t4 = unix_now_ns();
            match answer {
                Ok(Ok(response)) => {
                    let response = response.into_inner();
                    if response.t1_unix_ns == t1 {
                        samples.push(ClockSampleRecord {
                            t1,
                            t2: response.t2_unix_ns,
                            t3: response.t3_unix_ns,
                            t4,
                        });
                    }
                }
                Ok(Err(status)) => {
                    tracing::debug!(%status, "clock probe failed");
                    break;
                }
                Err(_) => tracing::debug!("clock probe timed out"),
            }
        }
        let burst = estimate_burst(&samples)?;
        tracing::debug!(
            offset_ns = burst.offset_ns,
            bound_ns = burst.error_bound_ns,
            rtt_ns = burst.round_trip_ns,
            samples = samples.len(),
            "clock burst"
        );
        self.tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(burst.clone());
        Some(burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sample taken at agent time `t1` when the agent is `offset` ahead,
    /// with `out` and `back` ns on the wire and 100 ns in the coordinator.
    fn sample(t1: i64, offset: i64, out: i64, back: i64) -> ClockSampleRecord {
        let t2 = t1 - offset + out;
        let t3 = t2 + 100;
        ClockSampleRecord {
            t1,
            t2,
            t3,
            t4: t3 + offset + back,
        }
    }

    fn burst_at(t: i64, offset: i64, bound: u64) -> BurstEstimate {
        BurstEstimate {
            offset_ns: offset,
            error_bound_ns: bound,
            round_trip_ns: 2 * bound,
            at_unix_ns: t,
            used: 1,
            samples: vec![],
        }
    }

    #[test]
    fn symmetric_samples_give_the_exact_offset() {
        let burst = estimate_burst(&[sample(1_000_000, 37_000, 500, 500)]).unwrap();
        assert_eq!(burst.offset_ns, 37_000);
        assert_eq!(burst.round_trip_ns, 1_000);
        assert_eq!(burst.error_bound_ns, 500);
    }

    #[test]
    fn intersection_tightens_the_bound_and_keeps_the_truth_inside() {
        let truth = -120_000_000;
        // Asymmetric paths: each sample alone is off, but within half its round trip.
        let samples = [
            sample(1_000, truth, 100, 900),
            sample(5_000, truth, 900, 100),
            sample(9_000, truth, 400, 600),
            sample(13_000, truth, 50_000, 50_000),
        ];
        let burst = estimate_burst(&samples).unwrap();
        assert!(burst.error_bound_ns < 500, "{burst:?}");
        assert!(
            burst.offset_ns.abs_diff(truth) <= burst.error_bound_ns,
            "{burst:?}"
        );
        assert_eq!(burst.round_trip_ns, 1_000);
        assert_eq!(
            burst.samples.len(),
            4,
            "every sample is kept for the sidecar"
        );
    }

    #[test]
    fn slow_samples_do_not_widen_the_bound() {
        let mut samples = vec![sample(0, 5_000, 200, 200)];
        samples.extend((1..8).map(|i| sample(i * 10_000, 5_000, 90_000, 10_000)));
        let burst = estimate_burst(&samples).unwrap();
        assert_eq!(burst.offset_ns, 5_000);
        assert!(burst.error_bound_ns <= 200);
    }

    #[test]
    fn out_of_order_samples_are_refused() {
        let broken = ClockSampleRecord {
            t1: 10,
            t2: 5,
            t3: 4,
            t4: 9,
        };
        assert_eq!(estimate_burst(&[broken]), None);
    }

    #[test]
    fn drift_from_two_bursts_is_in_ppm_and_fast_is_positive() {
        // 100 ppm fast: 100 us more offset after 1 s.
        let a = burst_at(0, 1_000, 10);
        let b = burst_at(1_000_000_000, 101_000, 10);
        let drift = drift_between(&a, &b).unwrap();
        assert!((drift.ppm - 100.0).abs() < 1e-9);
        assert!(drift.uncertainty_ppm < 0.1);
        assert_eq!(drift_between(&b, &a), None, "order matters");
    }

    #[test]
    fn unsure_drift_is_not_applied_and_steps_reset_history() {
        let mut tracker = ClockTracker::default();
        tracker.add(burst_at(0, 0, 1_000_000));
        tracker.add(burst_at(1_000_000_000, 50_000, 1_000_000));
        assert_eq!(
            tracker.drift(),
            None,
            "2 ms of bounds over 1 s is 2000 ppm of doubt"
        );
        assert_eq!(tracker.estimate().unwrap().drift_ppm, 0.0);

        tracker.add(burst_at(2_000_000_000, 2_500_000_000, 1_000));
        assert_eq!(tracker.latest().unwrap().offset_ns, 2_500_000_000);
        assert_eq!(tracker.offset_at(2_000_000_000), 2_500_000_000);
        assert_eq!(tracker.drift(), None, "the step cleared the history");
    }

    #[test]
    fn capture_fit_uses_the_bursts_around_it() {
        let tracker = ClockTracker::default();
        let mut before = burst_at(10_000_000_000, 37_000, 50);
        before.samples = vec![sample(10_000_000_000, 37_000, 50, 50)];
        let after = burst_at(40_000_000_000, 37_000 + 3_000, 60);
        let fit = tracker.fit(Some(&before), Some(&after)).unwrap();
        assert_eq!(fit.offset_ns, 37_000);
        assert_eq!(fit.at_unix_ns, 10_000_000_000);
        assert!((fit.drift_ppm - 0.1).abs() < 1e-9);
        assert_eq!(fit.error_bound_ns, 60);
        assert_eq!(fit.samples.len(), 1);
        // The fit maps the later burst's instant onto the coordinator clock with its offset.
        assert_eq!(fit.offset_at(40_000_000_000), 40_000);
        assert_eq!(tracker.fit(None, None), None, "nothing measured, no fit");
    }
}
