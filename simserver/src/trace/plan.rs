//! Where each recorded step's events go in time, shared by every output
//! format: the scheduler thread's four phases, the three programs a step
//! launches, and the device ops of each program with the collectives' ends
//! pinned to the real release instant.
//!
//! A step lives around its first collective: the device computes for half a
//! step period before the arrival (dispatched a tenth of a period earlier),
//! the first collective runs from arrival to release, and the rest of the
//! step (more collectives, the sampler, publishing the result) takes a fifth
//! of a period after the release. Later collectives end at fixed distances
//! after the release, so they too end at the same real instant on every rank.

use super::{Session, StepRecord};

/// Distance between the ends of consecutive collectives of one step.
const COLLECTIVE_SPACING_NS: i64 = 150_000;

/// Keeps nested events strictly inside their parents.
pub(crate) const EDGE_NS: i64 = 50;
/// The least a host or tail phase is shrunk to, so nested events still fit.
const MIN_PHASE_NS: i64 = 20 * EDGE_NS;
/// A step that arrives sooner than this after the previous one ended is
/// not recorded (there is no room to draw it).
const MIN_GAP_NS: i64 = 20_000;
/// JAX's own start-up events take the first ~40 µs of a session.
const SESSION_LEAD_IN_NS: i64 = 40_000;
/// How long a collective takes in a process with no peers.
pub(crate) const SOLO_COLLECTIVE_NS: i64 = 25_000;

/// The programs one step launches, in launch order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Program {
    Model,
    Sampler,
    SetFuture,
}

impl Program {
    pub(crate) const ALL: [Program; 3] = [Program::Model, Program::Sampler, Program::SetFuture];

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The scheduler phase that dispatches this program.
    pub(crate) fn dispatch_phase(self) -> usize {
        match self {
            Program::Model => 0,
            Program::Sampler => 2,
            Program::SetFuture => 3,
        }
    }
}

/// What a device op is: the i-th compute op of its program, or the j-th
/// collective of the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    Compute(usize),
    Collective(usize),
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct DeviceOp {
    pub program: Program,
    pub kind: OpKind,
    pub start: i64,
    pub end: i64,
}

/// How many device ops each program of a step has.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpCounts {
    /// Model compute ops before the first collective.
    pub before_collectives: usize,
    pub collectives: usize,
    pub sampler: usize,
    pub set_future: usize,
}

impl OpCounts {
    /// Counts that add up to about `total` ops per step and device.
    pub(crate) fn with_total(total: usize, collectives: usize) -> OpCounts {
        let sampler = 3;
        let set_future = 1;
        let fixed = 2 * collectives + sampler + set_future;
        OpCounts {
            before_collectives: total.saturating_sub(fixed).max(1),
            collectives,
            sampler,
            set_future,
        }
    }

    /// Compute ops after the collectives: one before each later collective
    /// and one after the last.
    pub(crate) fn after_collectives(&self) -> usize {
        self.collectives
    }

    pub(crate) fn model_compute(&self) -> usize {
        self.before_collectives + self.after_collectives()
    }

    pub(crate) fn per_step(&self) -> usize {
        self.model_compute() + self.collectives + self.sampler + self.set_future
    }
}

/// See [`StepPlan::phase_layout`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct PhaseLayout {
    pub frame: (i64, i64),
    pub leaves: (i64, i64),
    pub work: (i64, i64),
}

/// Percent of the Python-tracer events in each scheduler phase.
pub(crate) const PYTHON_SHARES: [usize; 4] = [10, 60, 15, 15];

/// Which of `names` the `i`-th Python leaf of a step calls.
pub(crate) fn leaf_name<'n>(names: &[&'n str], i: usize, step_num: u64) -> &'n str {
    names[(i * 7 + step_num as usize * 3) % names.len()]
}

/// The instants of one laid-out step (epoch ns, the process's clock).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepPlan {
    pub step_num: u64,
    /// Requests in the batch (0: an idle step).
    pub batch_size: u32,
    pub round: u64,
    pub host_start: i64,
    pub device_start: i64,
    pub arrive: i64,
    pub release: i64,
    pub device_end: i64,
    pub host_end: i64,
}

impl StepPlan {
    /// The scheduler thread's phases: dispatch the model, wait for it,
    /// dispatch the sampler, publish the result.
    pub(crate) fn phases(&self) -> [(i64, i64); 4] {
        let first = self.host_start + 2 * EDGE_NS;
        let last = self.host_end - 2 * EDGE_NS;
        let sampled = self.release + (self.device_end - self.release) / 2;
        [
            (first, self.device_start),
            (self.device_start, self.release),
            (self.release, sampled),
            (sampled, last),
        ]
    }

    /// Where the scheduler thread's events go in each phase: a Python frame
    /// over the phase, Python-tracer leaves in its first part, and the
    /// phase's work (dispatching a program, or waiting for the device) after.
    pub(crate) fn phase_layout(&self) -> [PhaseLayout; 4] {
        let mut phase = 0;
        self.phases().map(|(start, end)| {
            let at = |percent: i64| start + (end - start) * percent / 100;
            let (leaves_end, work_start) = if phase == 1 {
                (at(90), at(91))
            } else {
                (at(40), at(45))
            };
            phase += 1;
            PhaseLayout {
                frame: (start, end),
                leaves: (start + EDGE_NS, leaves_end),
                work: (work_start, end - EDGE_NS),
            }
        })
    }

    /// The device span of each program, in [`Program::ALL`] order.
    pub(crate) fn program_spans(&self) -> [(i64, i64); 3] {
        let tail = self.device_end - self.release;
        let model_end = self.release + tail * 6 / 10;
        let sampler_end = self.release + tail * 85 / 100;
        [
            (self.device_start, model_end),
            (model_end + EDGE_NS, sampler_end),
            (sampler_end + EDGE_NS, self.device_end - EDGE_NS),
        ]
        .map(|(start, end)| (start, end.max(start)))
    }

    /// Where the `j`-th collective ends: the release for the first, then
    /// fixed distances after it, identical on every rank (an end derived from
    /// each rank's own step length would differ across ranks by milliseconds).
    pub(crate) fn collective_end(&self, j: usize) -> i64 {
        self.release + COLLECTIVE_SPACING_NS * j as i64
    }
}

/// Lays out the session's steps, dropping those that do not fit entirely
/// between the profile's start and stop (the profiler records neither).
pub(crate) fn plan_steps(session: &Session) -> Vec<StepPlan> {
    let step_ns = session.shape.step_ns.max(100_000);
    let nominal = Phases {
        lead: step_ns / 10,
        compute: step_ns / 2,
        tail: step_ns / 5,
        trail: step_ns / 50,
    };
    let mut steps: Vec<&StepRecord> = session.steps.iter().collect();
    steps.sort_by_key(|step| step.arrive_unix_ns);
    let mut earliest = session.profile_start_unix_ns + SESSION_LEAD_IN_NS;
    let mut plans = Vec::with_capacity(steps.len());
    for (i, step) in steps.iter().enumerate() {
        let arrive = step.arrive_unix_ns;
        let release = step.release_unix_ns.max(arrive + 1);
        if arrive - earliest < MIN_GAP_NS {
            continue;
        }
        // A long collective wait leaves less time before the next step:
        // both sides of a short gap shrink in proportion.
        let before = nominal.scaled_to(arrive - earliest, false);
        let after = match steps.get(i + 1) {
            Some(next) => nominal.scaled_to(next.arrive_unix_ns - release, true),
            None => nominal,
        };
        let device_start = arrive - before.compute;
        let host_start = device_start - before.lead;
        let device_end = release + after.tail;
        let host_end = device_end + after.trail;
        if host_end > session.profile_stop_unix_ns {
            break;
        }
        plans.push(StepPlan {
            step_num: step.step_num,
            batch_size: step.batch_size,
            round: step.round,
            host_start,
            device_start,
            arrive,
            release,
            device_end,
            host_end,
        });
        earliest = host_end + EDGE_NS;
    }
    plans
}

/// How long the parts of a step around its first collective take.
#[derive(Debug, Clone, Copy)]
struct Phases {
    /// Host dispatch before the device starts.
    lead: i64,
    /// Device work before the first collective.
    compute: i64,
    /// Device work after the release.
    tail: i64,
    /// Host work after the device is done.
    trail: i64,
}

impl Phases {
    /// These phases shrunk, if needed, so that the ones that sit in a gap
    /// between two steps fill at most 95% of it: after a release the tail and
    /// trail, before an arrival the lead and compute. A whole gap holds both.
    fn scaled_to(self, gap: i64, after_release: bool) -> Phases {
        let needed = if after_release {
            self.tail + self.trail + self.lead + self.compute
        } else {
            self.lead + self.compute
        };
        let room = gap.max(0) * 95 / 100;
        if room >= needed {
            return self;
        }
        let scale = |part: i64| (part as i128 * room as i128 / needed as i128) as i64;
        Phases {
            lead: scale(self.lead).max(MIN_PHASE_NS),
            compute: scale(self.compute),
            tail: scale(self.tail).max(MIN_PHASE_NS),
            trail: scale(self.trail).max(MIN_PHASE_NS),
        }
    }
}

/// Emits one device's ops of a step in start order.
pub(crate) fn device_ops(
    plan: &StepPlan,
    counts: &OpCounts,
    device: u32,
    seed: u64,
    mut emit: impl FnMut(DeviceOp),
) {
    let [model, sampler, set_future] = plan.program_spans();
    let skew = i64::from(device) * 37;
    let mut jitter = Jitter::new(seed, plan.step_num, u64::from(device));
    let collectives = counts.collectives;
    let mut op = |program, kind, start: i64, end: i64| {
        emit(DeviceOp {
            program,
            kind,
            start,
            end: end.max(start),
        })
    };
    let before_end = if collectives == 0 {
        model.1
    } else {
        plan.arrive
    };
    for (i, (start, end)) in spread(
        model.0 + skew,
        before_end,
        counts.before_collectives,
        &mut jitter,
    ) {
        op(Program::Model, OpKind::Compute(i), start, end);
    }
    if collectives > 0 {
        let first_start = (plan.arrive + skew + jitter.below(200)).min(plan.release - 1);
        op(
            Program::Model,
            OpKind::Collective(0),
            first_start,
            plan.release,
        );
        let mut previous_end = plan.release;
        for j in 1..collectives {
            let end = plan.collective_end(j);
            let gap = end - previous_end;
            let compute = OpKind::Compute(counts.before_collectives + j - 1);
            op(
                Program::Model,
                compute,
                previous_end + EDGE_NS.min(gap / 4),
                previous_end + gap * 4 / 10,
            );
            let duration = gap * (30 + jitter.below(20)) / 100;
            op(Program::Model, OpKind::Collective(j), end - duration, end);
            previous_end = end;
        }
        let last = OpKind::Compute(counts.before_collectives + collectives - 1);
        op(
            Program::Model,
            last,
            previous_end + EDGE_NS,
            model.1 - EDGE_NS,
        );
    }
    for (program, (start, end), count) in [
        (Program::Sampler, sampler, counts.sampler),
        (Program::SetFuture, set_future, counts.set_future),
    ] {
        for (i, (s, e)) in spread(start + skew, end, count, &mut jitter) {
            op(program, OpKind::Compute(i), s, e);
        }
    }
}

/// `count` consecutive intervals filling most of `[start, end)`.
pub(crate) fn spread(
    start: i64,
    end: i64,
    count: usize,
    jitter: &mut Jitter,
) -> impl Iterator<Item = (usize, (i64, i64))> + use<'_> {
    let width = if count == 0 {
        0
    } else {
        (end - start).max(0) / count as i64
    };
    (0..count).map(move |i| {
        let s = start + width * i as i64;
        let fill = 70 + jitter.below(25);
        (i, (s, s + (width * fill / 100).max(1)))
    })
}

/// Splits `total` by percentage `shares`, the rest going to the largest share.
pub(crate) fn split_by<const N: usize>(total: usize, shares: [usize; N]) -> [usize; N] {
    let mut parts = shares.map(|share| total * share / 100);
    let rest = total - parts.iter().sum::<usize>();
    if let Some(largest) = (0..N).max_by_key(|&i| shares[i]) {
        parts[largest] += rest;
    }
    parts
}

/// A tiny deterministic generator (splitmix64) for per-rank variation.
pub(crate) struct Jitter(u64);

impl Jitter {
    pub(crate) fn new(seed: u64, step: u64, salt: u64) -> Jitter {
        Jitter(seed ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt.rotate_left(29))
    }

    /// A value in `0..bound`.
    pub(crate) fn below(&mut self, bound: i64) -> i64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        (splitmix64(self.0) % bound.max(1) as u64) as i64
    }
}

pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::TraceShape;

    fn session(steps: Vec<StepRecord>) -> Session {
        Session {
            profile_start_unix_ns: 1_000_000_000,
            profile_stop_unix_ns: 2_000_000_000,
            steps,
            shape: TraceShape::default(),
        }
    }

    fn step(n: u64, arrive: i64, release: i64) -> StepRecord {
        StepRecord {
            step_num: n,
            round: n,
            arrive_unix_ns: arrive,
            release_unix_ns: release,
            batch_size: 0,
        }
    }

    #[test]
    fn steps_outside_the_session_are_dropped_and_the_rest_never_overlap() {
        let start = 1_000_000_000;
        let steps = (0..120)
            .map(|n| {
                step(
                    n,
                    start - 3_000_000 + n as i64 * 10_000_000,
                    start - 2_900_000 + n as i64 * 10_000_000,
                )
            })
            .collect();
        let plans = plan_steps(&session(steps));
        assert!(!plans.is_empty());
        assert!(plans[0].host_start >= start);
        assert!(plans.last().unwrap().host_end <= 2_000_000_000);
        for pair in plans.windows(2) {
            assert!(pair[0].host_end < pair[1].host_start);
        }
    }

    #[test]
    fn long_collective_waits_shrink_the_steps_instead_of_dropping_them() {
        let start = 1_000_000_000;
        let steps = (0..50)
            .map(|n| {
                let arrive = start + 10_000_000 + n as i64 * 10_000_000;
                step(n, arrive, arrive + 9_000_000)
            })
            .collect();
        let plans = plan_steps(&session(steps));
        assert_eq!(plans.len(), 50);
        for pair in plans.windows(2) {
            assert!(pair[0].host_end < pair[1].host_start);
        }
        for plan in &plans {
            let phases = plan.phases();
            assert!(phases.iter().all(|(s, e)| s <= e), "{phases:?}");
            assert!(plan.program_spans().iter().all(|(s, e)| s <= e));
        }
    }

    #[test]
    fn collectives_end_at_the_same_instants_on_every_device_and_rank() {
        let plan = plan_steps(&session(vec![step(7, 1_100_000_000, 1_100_300_000)]))[0];
        let counts = OpCounts::with_total(40, 5);
        let ends = |device, seed| {
            let mut ends = Vec::new();
            device_ops(&plan, &counts, device, seed, |op| {
                if let OpKind::Collective(_) = op.kind {
                    ends.push(op.end);
                }
            });
            ends
        };
        let reference = ends(0, 1);
        assert_eq!(reference.len(), 5);
        assert_eq!(reference[0], 1_100_300_000);
        assert_eq!(ends(3, 99), reference);
    }

    #[test]
    fn device_ops_are_in_start_order_and_add_up() {
        let plan = plan_steps(&session(vec![step(1, 1_100_000_000, 1_100_050_000)]))[0];
        let counts = OpCounts::with_total(40, 5);
        let mut ops = Vec::new();
        device_ops(&plan, &counts, 1, 5, |op| ops.push(op));
        assert_eq!(ops.len(), counts.per_step());
        assert!(ops.windows(2).all(|w| w[0].start <= w[1].start));
        assert!(ops.iter().all(|op| op.start <= op.end));
    }

    #[test]
    fn split_by_keeps_the_total() {
        assert_eq!(split_by(101, [10, 60, 15, 15]), [10, 61, 15, 15]);
    }
}
