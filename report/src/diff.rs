//! Two reports compared (HTA's trace_diff idea, per op, per stage and per
//! rank): op time and step time normalized per step, so captures of
//! different lengths compare, each op marked added, removed, faster, slower
//! or same.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use rankline_units::duration;

use crate::html::{escape, ns_cell, percent_cell, Cell, Page};
use crate::Report;

/// A change smaller than this fraction of the larger side counts as `same`.
pub const DEFAULT_THRESHOLD: f64 = 0.05;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Diff {
    /// `step` (per step of one rank) or `rank` when a side has no steps.
    pub normalized_by: String,
    pub a_steps: u64,
    pub b_steps: u64,
    pub threshold: f64,
    pub counts: BTreeMap<String, u64>,
    pub ops: Vec<OpDiff>,
    pub stages: Vec<StageDiff>,
    pub ranks: Vec<RankDiff>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OpDiff {
    pub name: String,
    pub category: String,
    /// Time per step (or per rank) in A and B, ns.
    pub a_ns: i64,
    pub b_ns: i64,
    pub delta_ns: i64,
    /// `added`, `removed`, `faster`, `slower` or `same`.
    pub change: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageDiff {
    pub stage: String,
    pub a_count: u64,
    pub b_count: u64,
    pub a_p50_ns: i64,
    pub b_p50_ns: i64,
    pub a_p99_ns: i64,
    pub b_p99_ns: i64,
    pub delta_p50_ns: i64,
    pub change: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RankDiff {
    pub rank: String,
    pub a_busy_fraction: Option<f64>,
    pub b_busy_fraction: Option<f64>,
    /// Mean step time, ns.
    pub a_step_ns: Option<i64>,
    pub b_step_ns: Option<i64>,
}

/// How a per-step time changed.
fn change(a: i64, b: i64, threshold: f64) -> &'static str {
    match (a, b) {
        (0, 0) => "same",
        (0, _) => "added",
        (_, 0) => "removed",
        _ if ((b - a).abs() as f64) <= threshold * a.max(b) as f64 => "same",
        _ if b > a => "slower",
        _ => "faster",
    }
}

/// Steps of one rank on average, the unit op time is divided by.
fn steps_per_rank(report: &Report) -> f64 {
    let steps: usize = report.ranks.iter().map(|r| r.steps.len()).sum();
    steps as f64 / report.ranks.len().max(1) as f64
}

/// Compares `a` (the baseline) with `b`.
pub fn compare(a: &Report, b: &Report, threshold: f64) -> Diff {
    let (a_steps, b_steps) = (steps_per_rank(a), steps_per_rank(b));
    let per_step = a_steps > 0.0 && b_steps > 0.0;
    // Op totals are summed over ranks: per step of one rank means dividing
    // by ranks x steps per rank.
    let unit = |report: &Report, steps: f64| {
        report.ranks.len().max(1) as f64 * if per_step { steps } else { 1.0 }
    };
    let (a_unit, b_unit) = (unit(a, a_steps), unit(b, b_steps));
    let mut ops: BTreeMap<&str, (String, i64, i64)> = BTreeMap::new();
    for op in &a.top_ops {
        ops.entry(&op.name).or_insert((op.category.clone(), 0, 0)).1 =
            (op.total_ns as f64 / a_unit).round() as i64;
    }
    for op in &b.top_ops {
        ops.entry(&op.name).or_insert((op.category.clone(), 0, 0)).2 =
            (op.total_ns as f64 / b_unit).round() as i64;
    }
    let mut counts: BTreeMap<String, u64> = ["added", "removed", "faster", "slower", "same"]
        .into_iter()
        .map(|c| (c.to_string(), 0))
        .collect();
    let mut ops: Vec<OpDiff> = ops
        .into_iter()
        .map(|(name, (category, a_ns, b_ns))| {
            let change = change(a_ns, b_ns, threshold);
            *counts.entry(change.to_string()).or_default() += 1;
            OpDiff {
                name: name.to_string(),
                category,
                a_ns,
                b_ns,
                delta_ns: b_ns - a_ns,
                change: change.to_string(),
            }
        })
        .collect();
    ops.sort_by(|x, y| {
        y.delta_ns
            .abs()
            .cmp(&x.delta_ns.abs())
            .then_with(|| x.name.cmp(&y.name))
    });
    let mut stages: Vec<StageDiff> = Vec::new();
    let names: Vec<&str> = a
        .stages
        .iter()
        .chain(&b.stages)
        .map(|s| s.stage.as_str())
        .collect();
    for name in names {
        if stages.iter().any(|s| s.stage == name) {
            continue;
        }
        let find = |r: &Report| r.stages.iter().find(|s| s.stage == name).cloned();
        let (sa, sb) = (find(a), find(b));
        let get = |s: &Option<crate::StageStats>, f: fn(&crate::StageStats) -> i64| {
            s.as_ref().map_or(0, f)
        };
        let (a50, b50) = (get(&sa, |s| s.p50_ns), get(&sb, |s| s.p50_ns));
        stages.push(StageDiff {
            stage: name.to_string(),
            a_count: sa.as_ref().map_or(0, |s| s.count),
            b_count: sb.as_ref().map_or(0, |s| s.count),
            a_p50_ns: a50,
            b_p50_ns: b50,
            a_p99_ns: get(&sa, |s| s.p99_ns),
            b_p99_ns: get(&sb, |s| s.p99_ns),
            delta_p50_ns: b50 - a50,
            change: change(a50, b50, threshold).to_string(),
        });
    }
    let mut ranks: Vec<RankDiff> = Vec::new();
    for r in a.ranks.iter().chain(&b.ranks) {
        if ranks.iter().any(|d| d.rank == r.rank) {
            continue;
        }
        let side = |report: &Report| report.ranks.iter().find(|x| x.rank == r.rank).cloned();
        let mean_step = |x: &crate::RankReport| {
            (!x.steps.is_empty())
                .then(|| x.steps.iter().map(|s| s.dur_ns()).sum::<i64>() / x.steps.len() as i64)
        };
        let (ra, rb) = (side(a), side(b));
        ranks.push(RankDiff {
            rank: r.rank.clone(),
            a_busy_fraction: ra.as_ref().map(|x| x.busy_fraction),
            b_busy_fraction: rb.as_ref().map(|x| x.busy_fraction),
            a_step_ns: ra.as_ref().and_then(mean_step),
            b_step_ns: rb.as_ref().and_then(mean_step),
        });
    }
    Diff {
        normalized_by: if per_step { "step" } else { "rank" }.into(),
        a_steps: a_steps.round() as u64,
        b_steps: b_steps.round() as u64,
        threshold,
        counts,
        ops,
        stages,
        ranks,
    }
}

/// The comparison as one self-contained page.
pub fn render(diff: &Diff, a_name: &str, b_name: &str) -> String {
    let mut page = Page::default();
    page.head("rankline diff");
    let _ = write!(
        page.out,
        "<h1>rankline diff</h1><p class=note>A: {} &nbsp; B: {}. Times per {} of one rank \
         (A: {} steps per rank, B: {}); a change within {:.0}% is <i>same</i>.</p><p>",
        escape(a_name),
        escape(b_name),
        diff.normalized_by,
        diff.a_steps,
        diff.b_steps,
        diff.threshold * 100.0
    );
    for (change, n) in &diff.counts {
        let _ = write!(page.out, "{change}: <b>{n}</b> &nbsp; ");
    }
    page.out.push_str("</p><h2>Largest changes</h2>");
    delta_bars(&mut page, &diff.ops);
    page.out.push_str("<h2>Stages</h2>");
    let rows = diff
        .stages
        .iter()
        .map(|s| {
            vec![
                Cell::Text(s.stage.clone()),
                Cell::Num(s.a_count.to_string(), s.a_count as f64),
                Cell::Num(s.b_count.to_string(), s.b_count as f64),
                ns_cell(s.a_p50_ns),
                ns_cell(s.b_p50_ns),
                ns_cell(s.delta_p50_ns),
                ns_cell(s.a_p99_ns),
                ns_cell(s.b_p99_ns),
                Cell::Text(s.change.clone()),
            ]
        })
        .collect();
    page.table(
        &[
            "stage", "A steps", "B steps", "A p50", "B p50", "Δ p50", "A p99", "B p99", "change",
        ],
        rows,
    );
    page.out.push_str("<h2>Ranks</h2>");
    let optional_percent = |f: Option<f64>| f.map_or(Cell::Num("-".into(), -1.0), percent_cell);
    let optional_ns = |n: Option<i64>| n.map_or(Cell::Num("-".into(), -1.0), ns_cell);
    let rows = diff
        .ranks
        .iter()
        .map(|r| {
            vec![
                Cell::Text(r.rank.clone()),
                optional_percent(r.a_busy_fraction),
                optional_percent(r.b_busy_fraction),
                optional_ns(r.a_step_ns),
                optional_ns(r.b_step_ns),
            ]
        })
        .collect();
    page.table(
        &["rank", "A busy", "B busy", "A mean step", "B mean step"],
        rows,
    );
    page.out.push_str("<h2>Ops</h2>");
    let rows = diff
        .ops
        .iter()
        .map(|op| {
            vec![
                Cell::Text(op.name.clone()),
                Cell::Text(op.category.clone()),
                ns_cell(op.a_ns),
                ns_cell(op.b_ns),
                ns_cell(op.delta_ns),
                Cell::Text(op.change.clone()),
            ]
        })
        .collect();
    page.table(&["op", "category", "A", "B", "Δ", "change"], rows);
    page.finish()
}

/// The 20 largest changes as bars right (slower) or left (faster) of zero.
fn delta_bars(page: &mut Page, ops: &[OpDiff]) {
    let shown: Vec<&OpDiff> = ops.iter().filter(|o| o.delta_ns != 0).take(20).collect();
    if shown.is_empty() {
        page.out.push_str("<p class=note>No op changed.</p>");
        return;
    }
    let top = shown
        .iter()
        .map(|o| o.delta_ns.abs())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let (label_w, half, row_h) = (300.0, 250.0, 18.0);
    let height = row_h * shown.len() as f64 + 4.0;
    let _ = write!(
        page.out,
        "<svg width={} height={height} role=img aria-label=\"op deltas\">",
        label_w + 2.0 * half + 90.0
    );
    let zero = label_w + half;
    for (i, op) in shown.iter().enumerate() {
        let y = i as f64 * row_h;
        let w = op.delta_ns.abs() as f64 / top * half;
        let (x, color) = if op.delta_ns > 0 {
            (zero, "#c53030")
        } else {
            (zero - w, "#2f855a")
        };
        let name: String = op.name.chars().take(44).collect();
        let _ = write!(
            page.out,
            "<text x=0 y={}>{}</text><rect x={x:.1} y={} width={w:.1} height={} fill=\"{color}\"><title>{}: {}</title></rect><text x={} y={}>{}</text>",
            y + 13.0,
            escape(&name),
            y + 2.0,
            row_h - 4.0,
            escape(&op.name),
            op.change,
            zero + half + 6.0,
            y + 13.0,
            duration(op.delta_ns)
        );
    }
    let _ = write!(
        page.out,
        "<line x1={zero} x2={zero} y1=0 y2={height} stroke=\"#888\"/></svg>"
    );
}
