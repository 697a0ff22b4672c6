//! `rankline report`: arguments and glue for `rankline_report::build`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::Context;
use rankline_merge::{AlignMode, Filters, MergeOptions, RankSelector, RoleSelector, SourceMode};
use rankline_report::Report;

/// Arguments of `rankline report`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "INPUT is what `rankline merge` takes: a capture folder or URL, trace \
    files (*.trace.json[.gz], *.xplane.pb) or JAX log dirs, with the same rank discovery and \
    clock alignment.\n\n\
    The page shows per-rank device busy/idle (host-only ranks: their busiest thread), step \
    times by stage (p50/p90/p99), top ops by device time with their spread over ranks, \
    collectives matched across ranks (arrival skew, stragglers, a heat map over steps), \
    compute/communication overlap and prefill vs decode workers. It is one self-contained \
    file: open it in any browser, offline.\n\n\
    Examples:\n  \
    rankline report ./rankline-captures/cap-123 -o cap-123.html\n  \
    rankline report cap-123 --json > cap-123.report.json\n  \
    rankline diff before.report.json ./rankline-captures/cap-124"
)]
pub struct Args {
    /// Capture folders or URLs, trace files or JAX log dirs.
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<String>,

    #[command(flatten)]
    reading: Reading,

    /// Where the report goes: .html (the page) or .json (the figures).
    #[arg(
        short,
        long,
        value_name = "FILE",
        default_value = "rankline-report.html"
    )]
    output: PathBuf,

    /// Print the figures as JSON on stdout instead of the summary.
    #[arg(long)]
    json: bool,
}

/// How the inputs are read: the flags `rankline merge` has for it.
#[derive(Debug, Clone, clap::Args)]
pub struct Reading {
    /// How ranks are put on one clock: clock (the default), none or
    /// collectives (see `rankline merge --help`).
    #[arg(long, default_value = "clock", value_parser = AlignMode::from_str)]
    align: AlignMode,

    /// Which file of a rank to read: auto (its .xplane.pb when it has one),
    /// xplane or json.
    #[arg(long, default_value = "auto", value_parser = SourceMode::from_str)]
    source: SourceMode,

    /// Only these ranks (comma-separated): TP-1, EP-2, prefill-0/TP-1.
    #[arg(long, value_delimiter = ',', value_name = "RANKS", value_parser = RankSelector::from_str)]
    ranks: Vec<RankSelector>,

    /// Only these roles or servers (comma-separated): prefill, decode-1.
    #[arg(long, value_delimiter = ',', value_name = "ROLES", value_parser = RoleSelector::from_str)]
    roles: Vec<RoleSelector>,

    /// Report on the readable ranks when some cannot be read.
    #[arg(long)]
    keep_going: bool,

    /// Ranks read at once (each holds its slices' intervals in memory);
    /// default: the number of CPUs.
    #[arg(long, short = 'j', value_name = "N")]
    jobs: Option<usize>,
}

impl Reading {
    /// Builds the report of `inputs`.
    pub fn report(&self, inputs: Vec<String>) -> anyhow::Result<Report> {
        let options = MergeOptions {
            align: self.align,
            source: self.source,
            filters: Filters {
                ranks: self.ranks.clone(),
                roles: self.roles.clone(),
                ..Filters::default()
            },
            keep_going: self.keep_going,
            jobs: self.jobs,
            ..MergeOptions::new(inputs, PathBuf::new())
        };
        Ok(rankline_report::build(&options)?)
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    eprintln!("reading {} ...", args.inputs.join(" "));
    let report = args.reading.report(args.inputs)?;
    write_report(&report, &args.output)?;
    crate::output::print_summary(args.json, &report, || report.render_text())?;
    eprintln!("report written to {}", args.output.display());
    Ok(ExitCode::SUCCESS)
}

/// Writes `report` to `path`: its figures for a `.json` name, else the page.
pub fn write_report(report: &Report, path: &Path) -> anyhow::Result<()> {
    let body = if path.extension().is_some_and(|e| e == "json") {
        serde_json::to_string_pretty(report)?
    } else {
        rankline_report::html::render(report)
    };
    std::fs::write(path, body).with_context(|| format!("cannot write {}", path.display()))
}
