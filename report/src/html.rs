//! A [`Report`] as one self-contained HTML page: inline CSS, inline SVG
//! plots (per-rank busy bars, step-time histograms, a straggler heat map) and
//! a few lines of inline JavaScript that make every table sortable. Nothing
//! is fetched from the network.

use std::fmt::Write as _;

use rankline_units::duration;

use crate::{Heatmap, Report};

/// Heat map columns beyond this are summed into bins.
const MAX_HEAT_COLUMNS: usize = 120;
/// Top-op rows shown (the JSON has them all).
const TOP_OP_ROWS: usize = 50;
const HISTOGRAM_BINS: usize = 24;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}\
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;margin:8px 0}th,td{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}\
th{cursor:pointer;background:#f6f6f6;user-select:none}th:first-child,td:first-child{text-align:left}\
td.name{text-align:left;max-width:520px;overflow-wrap:anywhere}\
.warn{color:#8a5a00}.note{color:#666}svg text{font:11px system-ui,sans-serif}\
.side{display:flex;gap:24px;flex-wrap:wrap}";

/// Sorts a table by the clicked column (numbers by their `data-v`), and marks
/// the page ready (a headless browser test reads the mark).
const SCRIPT: &str = "window.addEventListener('error',function(e){document.body.setAttribute('data-report','error: '+e.message)});\
document.querySelectorAll('table.sortable').forEach(function(t){\
t.querySelectorAll('th').forEach(function(th,i){th.addEventListener('click',function(){\
var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows),asc=th.getAttribute('data-asc')!=='1';\
rows.sort(function(a,b){var x=a.cells[i],y=b.cells[i];\
var p=x.getAttribute('data-v'),q=y.getAttribute('data-v');\
var r=(p!==null&&q!==null)?(parseFloat(p)-parseFloat(q)):x.textContent.localeCompare(y.textContent);\
return asc?r:-r;});\
rows.forEach(function(r){body.appendChild(r)});th.setAttribute('data-asc',asc?'1':'0');});});});\
if(!document.body.hasAttribute('data-report')){document.body.setAttribute('data-report','ready')}";

/// The page.
pub fn render(report: &Report) -> String {
    let mut page = Page::default();
    page.head("rankline report");
    let _ = write!(
        page.out,
        "<h1>rankline report</h1><p class=note>{} ranks from {}</p>",
        report.ranks.len(),
        escape(&report.inputs.join(" "))
    );
    page.warnings(&report.warnings);
    ranks_section(&mut page, report);
    steps_section(&mut page, report);
    collectives_section(&mut page, report);
    ops_section(&mut page, report);
    roles_section(&mut page, report);
    page.finish()
}

/// An HTML document being written.
#[derive(Default)]
pub(crate) struct Page {
    pub(crate) out: String,
}

impl Page {
    pub(crate) fn head(&mut self, title: &str) {
        let _ = write!(
            self.out,
            "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{}</title>\
             <style>{STYLE}</style></head><body>",
            escape(title)
        );
    }

    pub(crate) fn warnings(&mut self, warnings: &[String]) {
        if warnings.is_empty() {
            return;
        }
        self.out.push_str("<ul class=warn>");
        for w in warnings {
            let _ = write!(self.out, "<li>{}</li>", escape(w));
        }
        self.out.push_str("</ul>");
    }

    /// A sortable table; each cell is (text, sort value for numbers).
    pub(crate) fn table(&mut self, headers: &[&str], rows: Vec<Vec<Cell>>) {
        self.out.push_str("<table class=sortable><thead><tr>");
        for h in headers {
            let _ = write!(self.out, "<th>{}</th>", escape(h));
        }
        self.out.push_str("</tr></thead><tbody>");
        for row in rows {
            self.out.push_str("<tr>");
            for cell in row {
                match cell {
                    Cell::Text(text) => {
                        let _ = write!(self.out, "<td class=name>{}</td>", escape(&text));
                    }
                    Cell::Num(text, value) => {
                        let _ = write!(self.out, "<td data-v=\"{value}\">{}</td>", escape(&text));
                    }
                }
            }
            self.out.push_str("</tr>");
        }
        self.out.push_str("</tbody></table>");
    }

    pub(crate) fn finish(mut self) -> String {
        let _ = writeln!(self.out, "<script>{SCRIPT}</script></body></html>");
        self.out
    }
}

pub(crate) enum Cell {
    Text(String),
    Num(String, f64),
}

pub(crate) fn ns_cell(ns: i64) -> Cell {
    Cell::Num(duration(ns), ns as f64)
}

pub(crate) fn percent_cell(fraction: f64) -> Cell {
    Cell::Num(format!("{:.1}%", fraction * 100.0), fraction)
}

fn count_cell(n: u64) -> Cell {
    Cell::Num(n.to_string(), n as f64)
}

pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn ranks_section(page: &mut Page, report: &Report) {
    page.out.push_str(
        "<h2>Device busy and idle per rank</h2><p class=note>Busy: the union of the rank's \
         device slices over its trace window (first to last event). Idle in steps: the \
         device waits while a step runs (host-bound); idle between steps: no step ran.</p>",
    );
    let width = 900.0;
    let label_w = 260.0;
    let row_h = 22.0;
    let height = row_h * report.ranks.len() as f64 + 24.0;
    let _ = write!(
        page.out,
        "<svg width={width} height={height} role=img aria-label=\"busy bars\">"
    );
    let bar_w = width - label_w - 60.0;
    for (i, rank) in report.ranks.iter().enumerate() {
        let y = i as f64 * row_h;
        let window = (rank.window_end_ns - rank.window_start_ns).max(1) as f64;
        let parts = [
            (rank.busy_ns as f64 / window, "#2b6cb0", "busy"),
            (
                rank.idle_in_steps_ns as f64 / window,
                "#ed8936",
                "idle in steps",
            ),
            (
                rank.idle_between_steps_ns as f64 / window,
                "#e2e8f0",
                "idle between steps",
            ),
        ];
        let _ = write!(
            page.out,
            "<text x=0 y={}>{}</text>",
            y + 15.0,
            escape(&rank.rank)
        );
        let mut x = label_w;
        for (fraction, color, what) in parts {
            let w = (fraction.max(0.0) * bar_w).max(0.0);
            let _ = write!(
                page.out,
                "<rect x={x:.1} y={} width={w:.1} height={} fill=\"{color}\"><title>{} {what}: {:.1}%</title></rect>",
                y + 3.0,
                row_h - 6.0,
                escape(&rank.rank),
                fraction * 100.0
            );
            x += w;
        }
        let _ = write!(
            page.out,
            "<text x={} y={}>{:.1}%</text>",
            label_w + bar_w + 6.0,
            y + 15.0,
            rank.busy_fraction * 100.0
        );
    }
    let legend_y = height - 6.0;
    for (i, (color, what)) in [
        ("#2b6cb0", "busy"),
        ("#ed8936", "idle in steps"),
        ("#e2e8f0", "idle between steps"),
    ]
    .iter()
    .enumerate()
    {
        let x = label_w + i as f64 * 150.0;
        let _ = write!(
            page.out,
            "<rect x={x} y={} width=10 height=10 fill=\"{color}\"/><text x={} y={legend_y}>{what}</text>",
            legend_y - 9.0,
            x + 14.0
        );
    }
    page.out.push_str("</svg>");
    let rows = report
        .ranks
        .iter()
        .map(|r| {
            vec![
                Cell::Text(r.rank.clone()),
                Cell::Text(r.busy_basis.clone()),
                ns_cell(r.window_end_ns - r.window_start_ns),
                percent_cell(r.busy_fraction),
                percent_cell(r.idle_fraction),
                ns_cell(r.idle_in_steps_ns),
                ns_cell(r.idle_between_steps_ns),
                r.overlap_fraction
                    .map_or(Cell::Num("-".into(), -1.0), percent_cell),
                count_cell(r.steps.len() as u64),
                Cell::Num(
                    report
                        .collectives
                        .straggler_counts
                        .get(&r.rank)
                        .copied()
                        .unwrap_or(0)
                        .to_string(),
                    report
                        .collectives
                        .straggler_counts
                        .get(&r.rank)
                        .copied()
                        .unwrap_or(0) as f64,
                ),
            ]
        })
        .collect();
    page.table(
        &[
            "rank",
            "busy basis",
            "window",
            "busy",
            "idle",
            "idle in steps",
            "idle between steps",
            "comm hidden by compute",
            "steps",
            "straggler",
        ],
        rows,
    );
}

fn steps_section(page: &mut Page, report: &Report) {
    page.out.push_str("<h2>Step time by stage</h2>");
    if report.stages.is_empty() {
        page.out.push_str("<p class=note>No steps found.</p>");
        return;
    }
    page.out.push_str("<div class=side>");
    for stage in &report.stages {
        let durations: Vec<i64> = report
            .ranks
            .iter()
            .flat_map(|r| r.steps.iter())
            .filter(|s| s.stage == stage.stage)
            .map(|s| s.dur_ns())
            .collect();
        histogram(page, &stage.stage, &durations, stage.p50_ns, stage.p99_ns);
    }
    page.out.push_str("</div>");
    let rows = report
        .stages
        .iter()
        .map(|s| {
            vec![
                Cell::Text(s.stage.clone()),
                count_cell(s.count),
                ns_cell(s.p50_ns),
                ns_cell(s.p90_ns),
                ns_cell(s.p99_ns),
                ns_cell(s.mean_ns),
                ns_cell(s.max_ns),
            ]
        })
        .collect();
    page.table(
        &["stage", "steps", "p50", "p90", "p99", "mean", "max"],
        rows,
    );
}

/// A histogram of step durations with the p50 and p99 marked.
fn histogram(page: &mut Page, title: &str, durations: &[i64], p50: i64, p99: i64) {
    let (w, h, pad) = (420.0, 180.0, 30.0);
    let lo = durations.iter().copied().min().unwrap_or(0);
    let hi = durations.iter().copied().max().unwrap_or(0).max(lo + 1);
    let mut bins = [0usize; HISTOGRAM_BINS];
    for &d in durations {
        let b = ((d - lo) as f64 / (hi - lo) as f64 * HISTOGRAM_BINS as f64) as usize;
        bins[b.min(HISTOGRAM_BINS - 1)] += 1;
    }
    let top = *bins.iter().max().unwrap_or(&1).max(&1) as f64;
    let _ = write!(
        page.out,
        "<svg width={w} height={h} role=img aria-label=\"{t} step durations\"><text x={pad} y=14>{t}: {} steps</text>",
        durations.len(),
        t = escape(title)
    );
    let plot_w = w - 2.0 * pad;
    let plot_h = h - 2.0 * pad - 10.0;
    let bw = plot_w / HISTOGRAM_BINS as f64;
    for (i, &n) in bins.iter().enumerate() {
        let bh = n as f64 / top * plot_h;
        let _ = write!(
            page.out,
            "<rect x={:.1} y={:.1} width={:.1} height={bh:.1} fill=\"#4a90d9\"><title>{n} steps</title></rect>",
            pad + i as f64 * bw,
            pad + 10.0 + plot_h - bh,
            (bw - 1.0).max(1.0)
        );
    }
    let x_of = |ns: i64| pad + (ns - lo) as f64 / (hi - lo) as f64 * plot_w;
    for (ns, label, color) in [(p50, "p50", "#2f855a"), (p99, "p99", "#c53030")] {
        let x = x_of(ns);
        // Labels near the right edge go left of their line.
        let (label_x, anchor) = if x > w - 100.0 {
            (x - 3.0, "end")
        } else {
            (x + 3.0, "start")
        };
        let _ = write!(
            page.out,
            "<line x1={x:.1} x2={x:.1} y1={} y2={} stroke=\"{color}\" stroke-width=\"2\"/>\
             <text x={label_x:.1} y={} fill=\"{color}\" text-anchor=\"{anchor}\">{label} {}</text>",
            pad + 10.0,
            pad + 10.0 + plot_h,
            pad + 20.0 + if label == "p99" { 12.0 } else { 0.0 },
            duration(ns)
        );
    }
    let _ = write!(
        page.out,
        "<text x={pad} y={}>{}</text><text x={} y={} text-anchor=end>{}</text></svg>",
        h - 8.0,
        duration(lo),
        w - pad,
        h - 8.0,
        duration(hi)
    );
}

fn collectives_section(page: &mut Page, report: &Report) {
    let c = &report.collectives;
    let _ = write!(
        page.out,
        "<h2>Collectives and stragglers</h2><p class=note>{} collective instances matched \
         across ranks (the identity <code>--align collectives</code> uses). Arrival skew: \
         p50 {}, p90 {}, p99 {}, max {}. The straggler of an instance is the rank that \
         arrived last; every other rank waited for it. <i>Late by</i> sums how far behind \
         the first arrival a rank came: the rank that holds the others up has the largest.</p>",
        c.matched,
        duration(c.skew_p50_ns),
        duration(c.skew_p90_ns),
        duration(c.skew_p99_ns),
        duration(c.skew_max_ns)
    );
    for heatmap in &c.heatmaps {
        heat_map(page, heatmap);
    }
    let rows = c
        .straggler_counts
        .iter()
        .map(|(rank, n)| {
            vec![
                Cell::Text(rank.clone()),
                count_cell(*n),
                ns_cell(c.lateness_ns.get(rank).copied().unwrap_or(0)),
                ns_cell(c.wait_charged_ns.get(rank).copied().unwrap_or(0)),
            ]
        })
        .collect();
    page.table(
        &[
            "rank",
            "times last to arrive",
            "late by (total)",
            "time waited for others",
        ],
        rows,
    );
}

/// Ranks down, steps across; darker is later.
fn heat_map(page: &mut Page, map: &Heatmap) {
    let steps = map.steps.len();
    if steps == 0 {
        return;
    }
    let per_column = steps.div_ceil(MAX_HEAT_COLUMNS);
    let columns = steps.div_ceil(per_column);
    let binned: Vec<Vec<i64>> = map
        .lateness_ns
        .iter()
        .map(|row| {
            (0..columns)
                .map(|c| {
                    row[c * per_column..((c + 1) * per_column).min(steps)]
                        .iter()
                        .sum()
                })
                .collect()
        })
        .collect();
    let top = binned.iter().flatten().copied().max().unwrap_or(0).max(1) as f64;
    let (label_w, cell_w, cell_h) = (220.0, (660.0 / columns as f64).max(3.0), 18.0);
    let width = label_w + cell_w * columns as f64 + 10.0;
    let height = cell_h * binned.len() as f64 + 34.0;
    let _ = write!(
        page.out,
        "<h3>{}: lateness at collectives per step</h3><svg width={width:.0} height={height:.0} role=img aria-label=\"straggler heat map\">",
        escape(&map.server)
    );
    for (r, row) in binned.iter().enumerate() {
        let y = r as f64 * cell_h;
        let _ = write!(
            page.out,
            "<text x=0 y={}>{}</text>",
            y + 13.0,
            escape(&map.ranks[r])
        );
        for (c, &ns) in row.iter().enumerate() {
            let t = ns as f64 / top;
            let shade = |full: f64, none: f64| (none + (full - none) * t) as u8;
            let first = map.steps[c * per_column];
            let _ = write!(
                page.out,
                "<rect x={:.1} y={y} width={:.1} height={} fill=\"rgb({},{},{})\"><title>{} step {first}{}: {} late</title></rect>",
                label_w + c as f64 * cell_w,
                cell_w.max(1.0),
                cell_h - 2.0,
                shade(155.0, 247.0),
                shade(28.0, 247.0),
                shade(28.0, 247.0),
                escape(&map.ranks[r]),
                if per_column > 1 { format!(" (+{} more)", per_column - 1) } else { String::new() },
                duration(ns)
            );
        }
    }
    let _ = write!(
        page.out,
        "<text x={label_w} y={}>step {} → {}{}</text></svg>",
        height - 8.0,
        map.steps[0],
        map.steps[steps - 1],
        if per_column > 1 {
            format!(" ({per_column} steps per cell)")
        } else {
            String::new()
        }
    );
}

fn ops_section(page: &mut Page, report: &Report) {
    page.out.push_str("<h2>Op categories</h2>");
    let rows = report
        .categories
        .iter()
        .map(|c| {
            vec![
                Cell::Text(c.category.clone()),
                ns_cell(c.total_ns),
                count_cell(c.count),
                percent_cell(c.fraction),
            ]
        })
        .collect();
    page.table(&["category", "total", "count", "share"], rows);
    let _ = write!(
        page.out,
        "<h2>Top ops by total device time</h2><p class=note>Summed over ranks; max and min \
         are per-rank totals (min 0: some rank never ran it); imbalance is max over the mean \
         per rank (1: even). {} of {} ops shown; the JSON has all.</p>",
        report.top_ops.len().min(TOP_OP_ROWS),
        report.top_ops.len()
    );
    let rows = report
        .top_ops
        .iter()
        .take(TOP_OP_ROWS)
        .map(|op| {
            vec![
                Cell::Text(op.name.clone()),
                Cell::Text(op.category.clone()),
                ns_cell(op.total_ns),
                count_cell(op.count),
                ns_cell(op.total_ns / op.count.max(1) as i64),
                ns_cell(op.max_ns),
                ns_cell(op.min_ns),
                Cell::Num(format!("{:.2}", op.imbalance), op.imbalance),
            ]
        })
        .collect();
    page.table(
        &[
            "op",
            "category",
            "total",
            "count",
            "mean",
            "max rank",
            "min rank",
            "imbalance",
        ],
        rows,
    );
}

fn roles_section(page: &mut Page, report: &Report) {
    if report.roles.len() < 2 {
        return;
    }
    page.out
        .push_str("<h2>Prefill and decode workers side by side</h2><div class=side>");
    for role in &report.roles {
        let _ = write!(page.out, "<div><h3>{}</h3>", escape(&role.role));
        let mut rows = vec![
            vec![Cell::Text("ranks".into()), count_cell(role.ranks)],
            vec![
                Cell::Text("busy (mean)".into()),
                percent_cell(role.busy_fraction_mean),
            ],
            vec![Cell::Text("steps".into()), count_cell(role.steps)],
            vec![Cell::Text("step p50".into()), ns_cell(role.step_p50_ns)],
            vec![Cell::Text("step p90".into()), ns_cell(role.step_p90_ns)],
            vec![Cell::Text("step p99".into()), ns_cell(role.step_p99_ns)],
        ];
        for (name, total) in &role.top_ops {
            rows.push(vec![Cell::Text(name.clone()), ns_cell(*total)]);
        }
        page.table(&["", &role.role], rows);
        page.out.push_str("</div>");
    }
    page.out.push_str("</div>");
}
