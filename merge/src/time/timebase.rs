//! Each rank's relative `ts` to absolute nanoseconds on the merged clock:
//! the rank's time base (sidecar, else the xplane's `profile_start_time`,
//! else Kineto's `baseTimeNanoseconds`, else none), then its host's clock fit
//! when alignment uses clocks.

use rankline_layout::{ClockFit, TimeBaseSource};
use rankline_xplane::XSpaceFile;
use serde::Serialize;

use crate::error::{InputError, InputProblem};
use crate::input::rank::RankInput;
use crate::input::source::open_trace;
use crate::options::AlignMode;

/// Host instants further than this from zero (or from the fit's anchor) are
/// not mapped: no real trace is 146 years long, and it keeps the clock
/// arithmetic far from overflow.
const MAX_INSTANT: i64 = 1 << 62;
/// A fit beyond these bounds is damage, not a clock.
const MAX_OFFSET_NS: i64 = 1_000_000_000_000_000;
const MAX_DRIFT_PPM: f64 = 10_000.0;

/// Where a rank's time base came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BaseSource {
    /// The sidecar, which recorded the xplane's `profile_start_time`.
    SidecarXplane,
    /// The sidecar, which recorded Kineto's `baseTimeNanoseconds`.
    SidecarKineto,
    /// The `Task Environment` plane of the `.xplane.pb` beside the trace.
    Xplane,
    /// The trace's own `baseTimeNanoseconds`.
    Kineto,
    /// Nothing: `ts` taken as given.
    None,
}

impl BaseSource {
    pub fn describe(self) -> &'static str {
        match self {
            BaseSource::SidecarXplane => "sidecar (xplane profile_start_time)",
            BaseSource::SidecarKineto => "sidecar (Kineto baseTimeNanoseconds)",
            BaseSource::Xplane => "xplane profile_start_time",
            BaseSource::Kineto => "Kineto baseTimeNanoseconds",
            BaseSource::None => "none: ts taken as given",
        }
    }
}

/// Whether and how a host clock correction was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockStatus {
    /// The sidecar's clock fit maps this rank onto the reference clock.
    Applied,
    /// `--align none`.
    Disabled,
    /// No sidecar clock data: the host clock is trusted as it is.
    NotMeasured,
    /// The sidecar's fit is out of any plausible range and was ignored.
    Implausible,
}

/// How one rank's times become merged-clock nanoseconds.
#[derive(Debug, Clone)]
pub struct RankTime {
    pub source: BaseSource,
    /// Host-clock epoch ns of `ts = 0` (0 when `source` is `None`).
    pub base_ns: i64,
    pub clock_status: ClockStatus,
    fit: Option<ClockFit>,
    /// Added after the clock fit by `--align collectives` (see `align`), ns.
    pub refinement_ns: i64,
}

impl RankTime {
    /// No base, no clock: `ts` as given.
    pub fn identity() -> Self {
        RankTime {
            source: BaseSource::None,
            base_ns: 0,
            clock_status: ClockStatus::NotMeasured,
            fit: None,
            refinement_ns: 0,
        }
    }

    /// Merged-clock ns of a relative `ts` in ns; `None` when out of range.
    pub fn aligned(&self, relative_ns: i64) -> Option<i64> {
        let host = self.base_ns.checked_add(relative_ns)?;
        if !(-MAX_INSTANT..=MAX_INSTANT).contains(&host) {
            return None;
        }
        let clocked = match &self.fit {
            Some(fit) => {
                if host.abs_diff(fit.at_unix_ns) > MAX_INSTANT as u64 {
                    return None;
                }
                if fit.drift_ppm == 0.0 {
                    // What `to_reference` gives without drift, minus its
                    // float arithmetic on every event.
                    host - fit.offset_ns
                } else {
                    fit.to_reference(host)
                }
            }
            None => host,
        };
        clocked.checked_add(self.refinement_ns)
    }

    /// The rank's `ts = 0` on the merged clock.
    pub fn aligned_base(&self) -> i64 {
        self.aligned(0).unwrap_or(self.base_ns)
    }

    /// What the clock fit moved `ts = 0` by (reference minus host), ns;
    /// the collective refinement not included.
    pub fn clock_shift_ns(&self) -> i64 {
        self.aligned_base() - self.base_ns - self.refinement_ns
    }

    pub fn fit(&self) -> Option<&ClockFit> {
        self.fit.as_ref()
    }
}

/// Decides a rank's time base and clock.
pub fn resolve(rank: &RankInput, align: AlignMode) -> Result<RankTime, InputError> {
    let (source, base_ns) = base_of(rank)?;
    let measured = rank.sidecar.as_ref().and_then(|s| s.clock.clone());
    let (clock_status, fit) = match (align, measured) {
        (AlignMode::None, _) => (ClockStatus::Disabled, None),
        (AlignMode::Clock | AlignMode::Collectives, None) => (ClockStatus::NotMeasured, None),
        (AlignMode::Clock | AlignMode::Collectives, Some(fit)) if plausible(&fit) => {
            (ClockStatus::Applied, Some(fit))
        }
        (AlignMode::Clock | AlignMode::Collectives, Some(_)) => (ClockStatus::Implausible, None),
    };
    Ok(RankTime {
        source,
        base_ns,
        clock_status,
        fit,
        refinement_ns: 0,
    })
}

fn plausible(fit: &ClockFit) -> bool {
    fit.offset_ns.abs() < MAX_OFFSET_NS
        && fit.drift_ppm.is_finite()
        && fit.drift_ppm.abs() < MAX_DRIFT_PPM
        && fit.at_unix_ns.abs() < MAX_INSTANT / 2
}

fn base_of(rank: &RankInput) -> Result<(BaseSource, i64), InputError> {
    if let Some(sidecar) = &rank.sidecar {
        match sidecar.time_base.source {
            TimeBaseSource::XplaneProfileStartTime => {
                return Ok((BaseSource::SidecarXplane, sidecar.time_base.unix_ns))
            }
            TimeBaseSource::KinetoBaseTimeNanoseconds => {
                return Ok((BaseSource::SidecarKineto, sidecar.time_base.unix_ns))
            }
            TimeBaseSource::None => {}
        }
    }
    if let Some(xplane) = &rank.xplane {
        let file = xplane
            .open()
            .map_err(|e| InputError::new(xplane.display(), InputProblem::Unreadable(e)))?;
        let times = XSpaceFile::open(file)
            .and_then(|(mut file, index)| file.profile_times(&index))
            .map_err(|e| {
                InputError::new(
                    rank.describe(),
                    InputProblem::TimeBase {
                        what: xplane.display(),
                        message: e.to_string(),
                    },
                )
            })?;
        if let Some(start) = times.start_unix_ns {
            return Ok((BaseSource::Xplane, start));
        }
    }
    let Some(trace) = &rank.trace else {
        return Ok((BaseSource::None, 0));
    };
    let mut source = open_trace(trace)?;
    let base = rankline_layout::scan_kineto_base(&mut source.reader).map_err(|e| {
        InputError::new(
            trace.display(),
            crate::input::source::read_problem(
                crate::input::chrome::ReadError::Io(e),
                source.gzipped,
            ),
        )
    })?;
    Ok(match base {
        Some(base) => (BaseSource::Kineto, base),
        None => (BaseSource::None, 0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_fits_map_onto_the_reference_and_garbage_is_refused() {
        let mut time = RankTime {
            source: BaseSource::Xplane,
            base_ns: 1_000_000_000,
            clock_status: ClockStatus::Applied,
            fit: Some(ClockFit {
                offset_ns: 37_000_000,
                error_bound_ns: 50_000,
                drift_ppm: 0.0,
                at_unix_ns: 1_000_000_000,
                samples: vec![],
            }),
            refinement_ns: 0,
        };
        assert_eq!(time.aligned(5), Some(1_000_000_005 - 37_000_000));
        assert_eq!(time.clock_shift_ns(), -37_000_000);
        assert_eq!(time.aligned(i64::MAX), None);
        assert_eq!(time.aligned(i64::MIN / 2 - 7), None);
        time.fit = None;
        assert_eq!(time.aligned(5), Some(1_000_000_005));
        assert!(!plausible(&ClockFit {
            offset_ns: i64::MAX,
            error_bound_ns: 0,
            drift_ppm: 0.0,
            at_unix_ns: 0,
            samples: vec![],
        }));
    }
}
