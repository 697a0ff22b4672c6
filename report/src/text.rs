//! The terminal summary of a report and of a diff: the few lines a person
//! reads before opening the page.

use std::fmt::Write as _;

use crate::diff::Diff;
use rankline_units::duration;

use crate::Report;

/// Rows of top ops and changed ops shown.
const ROWS: usize = 10;

impl Report {
    /// Per-rank busy and steps, stages, stragglers and the top ops.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let width = rankline_merge::rank_column_width(self.ranks.iter().map(|r| r.rank.as_str()));
        let _ = writeln!(
            out,
            "  {:width$}  {:>7}  {:>13}  {:>13}  {:>6}  {:>9}  basis",
            "rank", "busy", "idle in steps", "idle between", "steps", "straggler"
        );
        for r in &self.ranks {
            let _ = writeln!(
                out,
                "  {:width$}  {:>6.1}%  {:>13}  {:>13}  {:>6}  {:>9}  {}",
                r.rank,
                r.busy_fraction * 100.0,
                duration(r.idle_in_steps_ns),
                duration(r.idle_between_steps_ns),
                r.steps.len(),
                self.collectives
                    .straggler_counts
                    .get(&r.rank)
                    .copied()
                    .unwrap_or(0),
                r.busy_basis
            );
        }
        for s in &self.stages {
            let _ = writeln!(
                out,
                "steps ({}): {} — p50 {}, p90 {}, p99 {}",
                s.stage,
                s.count,
                duration(s.p50_ns),
                duration(s.p90_ns),
                duration(s.p99_ns)
            );
        }
        let c = &self.collectives;
        if c.matched > 0 {
            let worst = c.lateness_ns.iter().max_by_key(|(_, n)| **n);
            let _ = writeln!(
                out,
                "collectives: {} matched across ranks, arrival skew p50 {} / p99 {}{}",
                c.matched,
                duration(c.skew_p50_ns),
                duration(c.skew_p99_ns),
                worst
                    .map(|(rank, ns)| {
                        let n = c.straggler_counts.get(rank).copied().unwrap_or(0);
                        format!(
                            "; most behind: {rank} (late by {} in all, last {n} times)",
                            duration(*ns)
                        )
                    })
                    .unwrap_or_default()
            );
        }
        if !self.top_ops.is_empty() {
            let _ = writeln!(out, "top ops:");
            for op in self.top_ops.iter().take(ROWS) {
                let _ = writeln!(
                    out,
                    "  {:>12}  {:>8}x  {:10}  imbalance {:.2}  {}",
                    duration(op.total_ns),
                    op.count,
                    op.category,
                    op.imbalance,
                    op.name
                );
            }
        }
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        out
    }
}

impl Diff {
    /// Counts of each change and the largest changes.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let counts: Vec<String> = self
            .counts
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "ops per {} of one rank (A {} steps, B {} steps): {}",
            self.normalized_by,
            self.a_steps,
            self.b_steps,
            counts.join(", ")
        );
        for s in &self.stages {
            let _ = writeln!(
                out,
                "  stage {}: p50 {} -> {} ({})",
                s.stage,
                duration(s.a_p50_ns),
                duration(s.b_p50_ns),
                s.change
            );
        }
        for op in self.ops.iter().filter(|o| o.change != "same").take(ROWS) {
            let _ = writeln!(
                out,
                "  {:>8}  {:>12} -> {:>12}  ({})  {}",
                op.change,
                duration(op.a_ns),
                duration(op.b_ns),
                duration(op.delta_ns),
                op.name
            );
        }
        out
    }
}
