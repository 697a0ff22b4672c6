//! `rankline diff`: two captures (or saved reports) compared per op, per
//! stage and per rank.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use rankline_report::{diff, Report};

use super::report::Reading;

/// Arguments of `rankline diff`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "A and B are each a capture folder or URL, a trace file, a JAX log dir, \
    or a report saved with `rankline report --json` (or `-o x.json`). Op times are per step of \
    one rank (per rank when a side has no steps), so captures of different lengths compare.\n\n\
    Examples:\n  \
    rankline diff ./rankline-captures/cap-1 ./rankline-captures/cap-2 -o diff.html\n  \
    rankline diff before.json after.json --json"
)]
pub struct Args {
    /// The baseline.
    #[arg(value_name = "A")]
    a: String,
    /// What is compared with it.
    #[arg(value_name = "B")]
    b: String,

    #[command(flatten)]
    reading: Reading,

    /// The comparison page.
    #[arg(short, long, value_name = "FILE", default_value = "rankline-diff.html")]
    output: PathBuf,

    /// Changes within this fraction of the larger side count as `same`.
    #[arg(long, default_value_t = diff::DEFAULT_THRESHOLD)]
    threshold: f64,

    /// Print the comparison as JSON on stdout instead of the summary.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let a = load(&args.reading, &args.a)?;
    let b = load(&args.reading, &args.b)?;
    let compared = diff::compare(&a, &b, args.threshold);
    std::fs::write(&args.output, diff::render(&compared, &args.a, &args.b))
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    crate::output::print_summary(args.json, &compared, || compared.render_text())?;
    eprintln!("diff written to {}", args.output.display());
    Ok(ExitCode::SUCCESS)
}

/// A saved report, or the report of a capture.
fn load(reading: &Reading, input: &str) -> anyhow::Result<Report> {
    if input.ends_with(".json") {
        let text =
            std::fs::read_to_string(input).with_context(|| format!("cannot read {input}"))?;
        if let Ok(report) = serde_json::from_str::<Report>(&text) {
            return Ok(report);
        }
    }
    eprintln!("reading {input} ...");
    reading.report(vec![input.to_string()])
}
