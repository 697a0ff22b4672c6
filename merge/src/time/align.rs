//! `--align collectives`: refines each rank's clock offset from the
//! collectives it shares with a reference rank of the same server.
//!
//! A collective ends at (almost) the same real instant on every rank that
//! takes part. After the clock fit, the median of a rank's collective ends
//! minus the reference's ends (its *residual*) is what is left of the two
//! clocks' errors, and shifting the rank by minus the residual removes it.
//! The shift is applied only while it stays inside what the agents measured
//! (the rank's clock bound plus the reference's): a larger residual means the
//! collectives and the clock measurement disagree, and the measurement wins.
//!
//! Instances are matched by identity, never by time, so any skew matches:
//! JAX ops of one collective family with the same `run_id` and `hlo_op`, and
//! NCCL kernels with the same process group and `Seq`, in occurrence order.

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;

use memchr::memmem;
use rankline_layout::{ClockFit, Role};
use rayon::prelude::*;
use serde::Serialize;
use tracing::debug;

use crate::events::{IdKey, Phase};
use crate::input::chrome::{Element, RawEvent};
use crate::input::json_scan::{members, RawText};
use crate::output::summary::RankSummary;
use crate::time::timebase::{ClockStatus, RankTime};
use crate::Work;

/// The XLA collective op families (`all-reduce.3`, `all-gather-done.1`, ...).
pub const JAX_COLLECTIVE_FAMILIES: [&str; 5] = [
    "all-reduce",
    "all-gather",
    "reduce-scatter",
    "all-to-all",
    "collective-permute",
];

/// Clock samples further apart than this belong to different bursts.
const BURST_GAP_NS: i64 = 1_000_000_000;

/// What the refinement did with one rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefineOutcome {
    /// The rank the others of its server are measured against.
    Reference,
    /// The residual was inside the clock bounds and was removed.
    Applied,
    /// The residual was larger than the clock bounds allow: clock kept.
    OutsideBound,
    /// This rank or the reference has no clock measurement, so the residual
    /// cannot be checked: clock kept.
    Unmeasured,
    /// Same host as the reference and neither clock corrected: one clock, so
    /// the residual is collective timing, not clock error.
    SameClock,
    /// No collective in its trace.
    NoCollectives,
    /// Collectives, but none that the reference also has.
    NothingInCommon,
}

/// One rank's collective refinement, as the summary reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankRefinement {
    pub outcome: RefineOutcome,
    /// The rank its residual is measured against (its server's reference).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Collective instances found in its trace.
    pub collectives: u64,
    /// Instances matched with the reference's.
    pub matched: u64,
    /// Its clock bound over the capture: the fit's bound, widened where the
    /// fit misses the sidecar's own samples (drift it did not model), ns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_bound_ns: Option<u64>,
    /// Median of (its end - reference's end) after the clock fit, ns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub residual_before_ns: Option<i64>,
    /// The same median once the refinement is applied, ns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub residual_after_ns: Option<i64>,
    /// Median absolute deviation of the matched differences: how much single
    /// collectives disagree with the median, ns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spread_ns: Option<u64>,
    /// The largest residual it may remove: its clock bound plus the
    /// reference's, ns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowance_ns: Option<u64>,
    /// What was added to every timestamp of the rank, ns.
    pub refinement_ns: i64,
}

/// One collective's identity within a server.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpKey {
    /// `run_id <id>` (JAX) or `pg <name>` (NCCL).
    pub launch: Box<str>,
    /// The `hlo_op` (JAX) or `seq <n>` (NCCL).
    pub op: Box<str>,
}

/// A rank's collective instances: per op, the end of each occurrence on
/// the merged clock (clock fit applied), in time order.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RankCollectives {
    ends: BTreeMap<OpKey, Vec<i64>>,
}

impl RankCollectives {
    /// How many instances there are.
    pub fn len(&self) -> usize {
        self.ends.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// `self`'s end minus `reference`'s for every instance both have. An op
    /// whose occurrence counts differ is left out: a capture edge cut it, so
    /// occurrences cannot be paired.
    fn differences(&self, reference: &RankCollectives) -> Vec<i64> {
        let mut differences = Vec::new();
        for (key, ends) in &self.ends {
            match reference.ends.get(key) {
                Some(theirs) if theirs.len() == ends.len() => {
                    differences.extend(ends.iter().zip(theirs).map(|(mine, theirs)| mine - theirs))
                }
                _ => {}
            }
        }
        differences
    }
}

/// Collective ends per op and per track (`pid`, `tid`), as they are read.
#[derive(Default)]
struct Collector {
    ends: HashMap<(OpKey, IdKey, IdKey), Vec<i64>>,
}

impl Collector {
    fn event(&mut self, event: &RawEvent<'_>, time: &RankTime) {
        if Phase::of(event.phase()) != Phase::Complete {
            return;
        }
        let Some(args) = event.args else { return };
        // Most events are not collectives: skip them before parsing args.
        let bytes = args.as_bytes();
        if memmem::find(bytes, b"\"run_id\"").is_none() && memmem::find(bytes, b"\"Seq\"").is_none()
        {
            return;
        }
        let Some(key) = collective_key(event, args) else {
            return;
        };
        let end = event
            .ts
            .and_then(|ts| ts.nanos())
            .zip(event.dur.and_then(|dur| dur.nanos()))
            .and_then(|(ts, dur)| ts.checked_add(dur.max(0)))
            .and_then(|relative| time.aligned(relative));
        if let Some(end) = end {
            self.ends
                .entry((key, IdKey::from_raw(event.pid), IdKey::from_raw(event.tid)))
                .or_default()
                .push(end);
        }
    }

    /// One end per occurrence: the median over the tracks (devices) that ran
    /// the op. An op whose tracks saw different counts is dropped.
    fn finish(self) -> RankCollectives {
        let mut by_op: BTreeMap<OpKey, Vec<Vec<i64>>> = BTreeMap::new();
        for ((key, _, _), mut ends) in self.ends {
            ends.sort_unstable();
            by_op.entry(key).or_default().push(ends);
        }
        let ends = by_op
            .into_iter()
            .filter_map(|(key, tracks)| {
                let count = tracks[0].len();
                if tracks.iter().any(|t| t.len() != count) {
                    debug!(
                        ?key,
                        "collective with uneven counts across devices: not used"
                    );
                    return None;
                }
                let ends = (0..count)
                    .map(|i| {
                        let mut column: Vec<i64> = tracks.iter().map(|t| t[i]).collect();
                        median(&mut column)
                    })
                    .collect();
                Some((key, ends))
            })
            .collect();
        RankCollectives { ends }
    }
}

/// The identity of a collective event, `None` for any other event.
pub(crate) fn collective_key(event: &RawEvent<'_>, args: &str) -> Option<OpKey> {
    let (mut run_id, mut hlo_op, mut group, mut seq) = (None, None, None, None);
    for (key, value) in members(args) {
        let slot = match key.as_ref() {
            "run_id" => &mut run_id,
            "hlo_op" => &mut hlo_op,
            "Process Group Name" => &mut group,
            "Seq" => &mut seq,
            _ => continue,
        };
        *slot = Some(value.text());
    }
    let name = event.name.map(RawText::text).unwrap_or_default();
    if let Some(run_id) = run_id {
        let op = hlo_op.unwrap_or(name);
        return jax_family(&op).map(|_| OpKey {
            launch: format!("run_id {run_id}").into(),
            op: op.as_ref().into(),
        });
    }
    let category = event.cat.map(RawText::text);
    let is_kernel = category.as_deref() == Some("kernel") || name.starts_with("nccl");
    match (group, seq) {
        (Some(group), Some(seq)) if is_kernel => Some(OpKey {
            launch: format!("pg {group}").into(),
            op: format!("seq {seq}").into(),
        }),
        _ => None,
    }
}

/// The collective family of an XLA op name (`all-reduce.3` → `all-reduce`);
/// the `-done` half of an async pair counts, the `-start` half does not (it
/// ends when the transfer is launched, not when it completes).
pub fn jax_family(op: &str) -> Option<&'static str> {
    let base = op.split('.').next().unwrap_or(op);
    let base = base.strip_suffix("-done").unwrap_or(base);
    JAX_COLLECTIVE_FAMILIES.into_iter().find(|f| *f == base)
}

/// What the refinement needs to know about one rank.
pub struct Participant<'a> {
    /// Ranks with the same server are matched with each other (`None`: the
    /// requests track, which has no server).
    pub server: Option<(Role, u32)>,
    pub label: String,
    pub host: Option<&'a str>,
    pub clock: ClockStatus,
    pub fit: Option<&'a ClockFit>,
    pub collectives: RankCollectives,
}

/// Refines every rank of `work` in place (its `time`), recording what was
/// done in its `collectives`. Traces are read on `pool`; a trace that cannot
/// be read counts as having no collectives (its conversion reports why).
pub(crate) fn apply(pool: &rayon::ThreadPool, work: &mut [Work]) {
    let found: Vec<RankCollectives> = pool.install(|| work.par_iter().map(read_rank).collect());
    let participants: Vec<Participant<'_>> = work
        .iter()
        .zip(found)
        .map(|(w, collectives)| Participant {
            server: w.input.name.server(),
            label: w.input.name.label(),
            host: w.input.name.host.as_deref(),
            clock: w.time.clock_status,
            fit: w.time.fit(),
            collectives,
        })
        .collect();
    let refinements = refine(&participants);
    for (w, refinement) in work.iter_mut().zip(refinements) {
        w.time.refinement_ns = refinement.refinement_ns;
        w.collectives = Some(refinement);
    }
}

/// A rank's collectives, from the file it is converted from.
fn read_rank(w: &Work) -> RankCollectives {
    let mut collector = Collector::default();
    let read = crate::read_elements(&w.source, &w.time, &|| false, |element| {
        if let Element::Event(event) = element {
            collector.event(event, &w.time);
        }
        ControlFlow::Continue(())
    });
    match read {
        Ok(_) => collector.finish(),
        Err(_) => {
            debug!(rank = %w.input.name.label(), "collectives not read");
            RankCollectives::default()
        }
    }
}

/// Decides each participant's refinement (same order as `ranks`).
pub fn refine(ranks: &[Participant<'_>]) -> Vec<RankRefinement> {
    let bounds: Vec<Option<u64>> = ranks.iter().map(clock_bound).collect();
    let mut servers: BTreeMap<Option<(Role, u32)>, Vec<usize>> = BTreeMap::new();
    for (i, rank) in ranks.iter().enumerate() {
        servers.entry(rank.server).or_default().push(i);
    }
    let mut out: Vec<Option<RankRefinement>> = vec![None; ranks.len()];
    for members in servers.values() {
        let reference = choose_reference(ranks, &bounds, members);
        for &i in members {
            out[i] = Some(refine_one(ranks, &bounds, i, reference));
        }
    }
    out.into_iter()
        .map(|r| r.expect("every rank belongs to a server"))
        .collect()
}

/// The reference of a server: among its ranks with collectives, the one
/// whose clock is measured best (everyone refined ends up on its clock),
/// ties going to the first in rank order.
fn choose_reference(
    ranks: &[Participant<'_>],
    bounds: &[Option<u64>],
    members: &[usize],
) -> Option<usize> {
    members
        .iter()
        .copied()
        .filter(|&i| !ranks[i].collectives.is_empty())
        .min_by_key(|&i| (bounds[i].is_none(), bounds[i].unwrap_or(u64::MAX), i))
}

fn refine_one(
    ranks: &[Participant<'_>],
    bounds: &[Option<u64>],
    i: usize,
    reference: Option<usize>,
) -> RankRefinement {
    let rank = &ranks[i];
    let mut result = RankRefinement {
        outcome: RefineOutcome::NoCollectives,
        reference: reference.map(|r| ranks[r].label.clone()),
        collectives: rank.collectives.len() as u64,
        matched: 0,
        clock_bound_ns: bounds[i],
        residual_before_ns: None,
        residual_after_ns: None,
        spread_ns: None,
        allowance_ns: None,
        refinement_ns: 0,
    };
    let Some(r) = reference else {
        return result;
    };
    if r == i {
        result.outcome = RefineOutcome::Reference;
        result.matched = result.collectives;
        return result;
    }
    if rank.collectives.is_empty() {
        return result;
    }
    let mut differences = rank.collectives.differences(&ranks[r].collectives);
    result.matched = differences.len() as u64;
    if differences.is_empty() {
        result.outcome = RefineOutcome::NothingInCommon;
        return result;
    }
    let residual = median(&mut differences);
    let mut deviations: Vec<i64> = differences
        .iter()
        .map(|d| d.abs_diff(residual).min(i64::MAX as u64) as i64)
        .collect();
    result.spread_ns = Some(median(&mut deviations) as u64);
    result.residual_before_ns = Some(residual);
    let measured = |k: usize| ranks[k].clock == ClockStatus::Applied;
    result.outcome = if measured(i) && measured(r) {
        let allowance = bounds[i]
            .unwrap_or(0)
            .saturating_add(bounds[r].unwrap_or(0));
        result.allowance_ns = Some(allowance);
        if residual.unsigned_abs() <= allowance {
            result.refinement_ns = -residual;
            RefineOutcome::Applied
        } else {
            RefineOutcome::OutsideBound
        }
    } else if !measured(i) && !measured(r) && rank.host.is_some() && rank.host == ranks[r].host {
        result.allowance_ns = Some(0);
        RefineOutcome::SameClock
    } else {
        RefineOutcome::Unmeasured
    };
    result.residual_after_ns = Some(residual + result.refinement_ns);
    result
}

/// A rank's clock bound over the capture, `None` when its clock is not
/// corrected. Every sidecar sample bounds the fit's error at its own
/// instant by |fit - sample offset| + half its round trip; the best sample
/// of each burst does so around that burst, and as both the fit and a
/// steadily drifting clock are straight lines, the error between bursts is
/// no larger than at them.
fn clock_bound(rank: &Participant<'_>) -> Option<u64> {
    if rank.clock != ClockStatus::Applied {
        return None;
    }
    let fit = rank.fit?;
    let mut samples = fit.samples.clone();
    samples.sort_by_key(|s| s.t1);
    let mut bound = fit.error_bound_ns;
    let mut burst_best: Option<u64> = None;
    let mut last_t1 = None;
    for sample in &samples {
        if sample.t4 < sample.t1 || sample.t3 < sample.t2 {
            continue;
        }
        if last_t1.is_some_and(|t| sample.t1 - t > BURST_GAP_NS) {
            bound = bound.max(burst_best.take().unwrap_or(0));
        }
        last_t1 = Some(sample.t1);
        let at = sample.t1 + (sample.t4 - sample.t1) / 2;
        let here = fit
            .offset_at(at)
            .abs_diff(sample.offset_ns())
            .saturating_add(sample.round_trip_ns().div_ceil(2));
        burst_best = Some(burst_best.map_or(here, |b| b.min(here)));
    }
    Some(bound.max(burst_best.unwrap_or(0)))
}

/// The median (the mean of the two middle values for an even count).
fn median(values: &mut [i64]) -> i64 {
    values.sort_unstable();
    let n = values.len();
    if n == 0 {
        return 0;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        ((i128::from(values[n / 2 - 1]) + i128::from(values[n / 2])) / 2) as i64
    }
}

/// Warnings for ranks whose refinement was not applied.
pub(crate) fn warnings(ranks: &[RankSummary]) -> Vec<String> {
    let mut warnings = Vec::new();
    for rank in ranks {
        let Some(r) = &rank.collectives else { continue };
        let reference = r.reference.as_deref().unwrap_or("-");
        let residual = r
            .residual_before_ns
            .map(rankline_units::offset)
            .unwrap_or_default();
        let message = match r.outcome {
            RefineOutcome::OutsideBound => format!(
                "its collectives put it {residual} off {reference}, more than the clocks' bound \
                 {} allows: the clock offset is kept. One of the two clock measurements is off \
                 (a long round trip, or the clock stepped during the capture), or its \
                 collectives do not end together",
                r.allowance_ns
                    .map(|a| format!("±{}", rankline_units::duration(a as i64)))
                    .unwrap_or_default()
            ),
            RefineOutcome::Unmeasured => format!(
                "its collectives put it {residual} off {reference}, but {} clock was not measured, \
                 so this cannot be checked: not applied",
                if rank.clock == ClockStatus::Applied { "the reference's" } else { "its" }
            ),
            RefineOutcome::NoCollectives if r.reference.is_some() => {
                "no collective in its trace: only its clock offset aligns it".to_string()
            }
            RefineOutcome::NothingInCommon => format!(
                "none of its {} collectives matches one of {reference}'s: only its clock offset \
                 aligns it",
                r.collectives
            ),
            _ => continue,
        };
        warnings.push(format!("{}: {message}", rank.rank));
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Chrome JSON trace's collectives, `ts` as given.
    fn read_json(trace: &str) -> RankCollectives {
        let time = RankTime::identity();
        let mut collector = Collector::default();
        crate::input::chrome::read_trace(trace.as_bytes(), |element| {
            if let Element::Event(event) = element {
                collector.event(event, &time);
            }
            ControlFlow::Continue(())
        })
        .unwrap();
        collector.finish()
    }
    use rankline_layout::ClockSampleRecord;

    #[test]
    fn families_take_the_done_half_and_never_the_start_half() {
        assert_eq!(jax_family("all-reduce.3"), Some("all-reduce"));
        assert_eq!(jax_family("all-gather"), Some("all-gather"));
        assert_eq!(jax_family("all-gather-done.1"), Some("all-gather"));
        assert_eq!(jax_family("all-gather-start.1"), None);
        assert_eq!(
            jax_family("collective-permute.5"),
            Some("collective-permute")
        );
        assert_eq!(jax_family("fusion.12"), None);
        assert_eq!(jax_family("wrapped_copy"), None);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut [5, 1, 3]), 3);
        assert_eq!(median(&mut [4, 1, 3, 2]), 2);
        assert_eq!(median(&mut [-7, -3]), -5);
        assert_eq!(median(&mut []), 0);
    }

    #[test]
    fn devices_of_one_rank_give_one_end_per_occurrence() {
        // Two devices ran all-reduce.1 twice (a loop) under one run_id.
        let trace = r#"{"traceEvents":[
            {"ph":"X","pid":1,"tid":3,"ts":10,"dur":5,"name":"all-reduce.1","args":{"hlo_op":"all-reduce.1","run_id":"7"}},
            {"ph":"X","pid":2,"tid":3,"ts":12,"dur":5,"name":"all-reduce.1","args":{"hlo_op":"all-reduce.1","run_id":"7"}},
            {"ph":"X","pid":1,"tid":3,"ts":30,"dur":5,"name":"all-reduce.1","args":{"hlo_op":"all-reduce.1","run_id":"7"}},
            {"ph":"X","pid":2,"tid":3,"ts":31,"dur":5,"name":"all-reduce.1","args":{"hlo_op":"all-reduce.1","run_id":"7"}},
            {"ph":"X","pid":1,"tid":3,"ts":40,"dur":5,"name":"fusion.2","args":{"hlo_op":"fusion.2","run_id":"7"}},
            {"ph":"X","pid":1,"tid":3,"ts":50,"dur":5,"name":"all-gather.2","args":{"hlo_op":"all-gather.2","run_id":"7"}},
            {"ph":"X","pid":1,"tid":3,"ts":60,"dur":1,"name":"end: all-gather"},
            {}]}"#;
        let found = read_json(trace);
        let key = |op: &str| OpKey {
            launch: "run_id 7".into(),
            op: op.into(),
        };
        assert_eq!(found.ends[&key("all-reduce.1")], [16_000, 35_500]);
        assert_eq!(found.ends[&key("all-gather.2")], [55_000]);
        assert_eq!(found.len(), 3);
    }

    #[test]
    fn nccl_kernels_match_by_process_group_and_seq_and_cpu_ops_do_not() {
        let trace = r#"[
            {"ph":"X","cat":"kernel","pid":0,"tid":7,"ts":100,"dur":10,"name":"ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevComm*, unsigned long, ncclWork*)","args":{"Process Group Name":"1","Seq":4}},
            {"ph":"X","cat":"cpu_op","pid":9,"tid":9,"ts":90,"dur":30,"name":"record_param_comms","args":{"Process Group Name":"1","Seq":4}}
        ]"#;
        let found = read_json(trace);
        let key = OpKey {
            launch: "pg 1".into(),
            op: "seq 4".into(),
        };
        assert_eq!(found.ends[&key], [110_000]);
        assert_eq!(found.len(), 1);
    }

    fn fit(offset_ns: i64, bound: u64) -> ClockFit {
        ClockFit {
            offset_ns,
            error_bound_ns: bound,
            drift_ppm: 0.0,
            at_unix_ns: 0,
            samples: vec![],
        }
    }

    fn ends(list: &[(&str, i64)]) -> RankCollectives {
        let mut collectives = RankCollectives::default();
        for (op, end) in list {
            collectives
                .ends
                .entry(OpKey {
                    launch: "run_id 1".into(),
                    op: (*op).into(),
                })
                .or_default()
                .push(*end);
        }
        collectives
    }

    fn participant<'a>(label: &str, fit: Option<&'a ClockFit>, shift: i64) -> Participant<'a> {
        Participant {
            server: Some((Role::Unified, 0)),
            label: label.into(),
            host: None,
            clock: if fit.is_some() {
                ClockStatus::Applied
            } else {
                ClockStatus::NotMeasured
            },
            fit,
            collectives: ends(&[
                ("all-reduce.1", 1_000 + shift),
                ("all-reduce.2", 2_000 + shift + 30),
                ("all-reduce.3", 3_000 + shift - 10),
            ]),
        }
    }

    #[test]
    fn the_best_measured_rank_is_the_reference_and_small_residuals_are_removed() {
        let (wide, tight) = (fit(0, 500), fit(0, 100));
        let ranks = [
            participant("TP-0", Some(&wide), 0),
            participant("TP-1", Some(&tight), 0),
            participant("TP-2", Some(&wide), 400),
        ];
        let out = refine(&ranks);
        assert_eq!(out[1].outcome, RefineOutcome::Reference);
        assert_eq!(out[0].reference.as_deref(), Some("TP-1"));
        assert_eq!(out[0].outcome, RefineOutcome::Applied);
        assert_eq!(out[0].refinement_ns, 0);
        assert_eq!(out[2].outcome, RefineOutcome::Applied);
        assert_eq!(out[2].residual_before_ns, Some(400));
        assert_eq!(out[2].refinement_ns, -400);
        assert_eq!(out[2].residual_after_ns, Some(0));
        assert_eq!(out[2].allowance_ns, Some(600));
        assert_eq!(out[2].matched, 3);
    }

    #[test]
    fn a_residual_beyond_the_bounds_keeps_the_clock() {
        let f = fit(0, 100);
        let ranks = [
            participant("TP-0", Some(&f), 0),
            participant("TP-1", Some(&f), -250),
        ];
        let out = refine(&ranks);
        assert_eq!(out[1].outcome, RefineOutcome::OutsideBound);
        assert_eq!(out[1].refinement_ns, 0);
        assert_eq!(out[1].residual_after_ns, Some(-250));
        assert_eq!(out[1].allowance_ns, Some(200));
    }

    #[test]
    fn unmeasured_clocks_are_not_refined_and_one_host_is_one_clock() {
        let f = fit(0, 100);
        let mut ranks = [
            participant("TP-0", Some(&f), 0),
            participant("TP-1", None, 50),
        ];
        assert_eq!(refine(&ranks)[1].outcome, RefineOutcome::Unmeasured);
        ranks[0] = participant("TP-0", None, 0);
        ranks[0].host = Some("vm");
        ranks[1].host = Some("vm");
        let out = refine(&ranks);
        assert_eq!(out[1].outcome, RefineOutcome::SameClock);
        assert_eq!(out[1].refinement_ns, 0);
        assert_eq!(out[1].residual_before_ns, Some(50));
    }

    #[test]
    fn ranks_without_shared_collectives_or_of_other_servers_are_left_alone() {
        let f = fit(0, 100);
        let mut ranks = [
            participant("TP-0", Some(&f), 0),
            participant("TP-1", Some(&f), 30),
            participant("TP-2", Some(&f), 30),
            participant("prefill-0/TP-0", Some(&f), 90),
        ];
        ranks[1].collectives = RankCollectives::default();
        ranks[2].collectives = ends(&[("all-gather.9", 5)]);
        ranks[3].server = Some((Role::Prefill, 0));
        let out = refine(&ranks);
        assert_eq!(out[1].outcome, RefineOutcome::NoCollectives);
        assert_eq!(out[2].outcome, RefineOutcome::NothingInCommon);
        assert_eq!(out[3].outcome, RefineOutcome::Reference, "its own server");
    }

    #[test]
    fn occurrence_counts_that_differ_are_not_paired() {
        let mut mine = ends(&[
            ("all-reduce.1", 10),
            ("all-reduce.1", 20),
            ("all-reduce.2", 35),
        ]);
        let theirs = ends(&[("all-reduce.1", 20), ("all-reduce.2", 30)]);
        assert_eq!(mine.differences(&theirs), [5]);
        mine.ends.clear();
        assert!(mine.differences(&theirs).is_empty());
    }

    #[test]
    fn the_clock_bound_widens_where_the_fit_misses_its_own_samples() {
        // The agent is 100 ppm fast but the fit has no drift: one second
        // later the after-burst sees 100 us more offset.
        let sample = |t1: i64, offset: i64| ClockSampleRecord {
            t1,
            t2: t1 - offset + 20,
            t3: t1 - offset + 30,
            t4: t1 + 50,
        };
        let mut drifting = fit(0, 25);
        drifting.samples = vec![sample(0, 0), sample(2_000_000_000, 100_000)];
        let rank = Participant {
            clock: ClockStatus::Applied,
            fit: Some(&drifting),
            ..participant("TP-0", None, 0)
        };
        let bound = clock_bound(&rank).unwrap();
        assert!((100_000..=100_050).contains(&bound), "{bound}");
        let steady = fit(0, 25);
        let rank = Participant {
            clock: ClockStatus::Applied,
            fit: Some(&steady),
            ..participant("TP-0", None, 0)
        };
        assert_eq!(clock_bound(&rank), Some(25));
    }
}
