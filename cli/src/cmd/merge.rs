//! `rankline merge`: arguments and glue for `rankline_merge::merge`.

use std::path::PathBuf;
use std::process::ExitCode;

use rankline_merge::{
    merge, parse_duration_ns, AlignMode, Filters, MergeError, MergeOptions, RankSelector,
    RoleSelector, SourceMode, Stage, Window,
};

/// Arguments of `rankline merge`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "INPUT is a capture folder written by `rankline capture` (manifest.json and \
    per-rank .meta.json sidecars), a trace file (*.trace.json[.gz] or *.xplane.pb), or a JAX \
    log dir (plugins/profile/<run>/<host>.trace.json.gz beside its .xplane.pb). Ranks come from \
    the capture, else from SGLang-style file names (<id>-TP-n[-DP-d][-PP-p][-EP-e]), else TP-0, \
    TP-1, ... in argument order.\n\n\
    A JAX rank's .xplane.pb is read when it has one (--source auto): it is complete (the \
    trace.json.gz export stops at about 1,000,000 events) and has the device (TPU) planes.\n\n\
    Exit status: 0 when every rank was merged; 1 when the output was written but some ranks \
    were skipped (--keep-going) or are missing from the capture, or when --window lies outside \
    every event (then nothing is written); 2 when nothing could be merged.\n\n\
    Examples:\n  \
    rankline merge /data/captures/cap-123 -o cap-123.pftrace\n  \
    rankline merge logs/proc0 logs/proc1 -o run.pftrace --drop-python\n  \
    rankline merge cap-123 -o steps.json.gz --window 1s..1.2s --ranks TP-0,TP-1"
)]
pub struct Args {
    /// Capture folders, trace files or JAX log dirs.
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<String>,

    /// Output file; its extension picks the format: .pftrace (Perfetto,
    /// recommended), .json / .json.gz (Chrome JSON), .zip (Perfetto v58+
    /// archive: a trace per rank, each host a machine).
    #[arg(short, long, value_name = "OUTPUT")]
    output: PathBuf,

    /// How ranks are put on one clock: `clock` applies each host's measured
    /// clock offset from the sidecars (the default; ranks without one keep
    /// their host clock), `none` uses time bases only, `collectives` refines
    /// `clock` with the ends of collectives the ranks share.
    #[arg(long, default_value = "clock", value_parser = parse_align)]
    align: AlignMode,

    /// Which file of a rank to read: `auto` (its .xplane.pb when it has
    /// one, else its Chrome JSON trace), `xplane` (a rank without one is an
    /// error), `json` (its trace.json.gz or Kineto trace).
    #[arg(long, default_value = "auto", value_parser = parse_source)]
    source: SourceMode,

    /// Keep only events overlapping START..END: durations after the capture
    /// start (100ms..350ms, 1.5s..) or epoch nanoseconds. A window that
    /// misses every event is an error (exit 1) that names the capture's span.
    #[arg(long, value_name = "START..END", value_parser = parse_window)]
    window: Option<Window>,

    /// Keep only these ranks (comma-separated): TP-1, TP-1-EP-0, EP-2,
    /// prefill-0/TP-1.
    #[arg(long, value_delimiter = ',', value_name = "RANKS", value_parser = parse_rank)]
    ranks: Vec<RankSelector>,

    /// Keep only these roles or servers (comma-separated): prefill, decode,
    /// unified, prefill-1.
    #[arg(long, value_delimiter = ',', value_name = "ROLES", value_parser = parse_role)]
    roles: Vec<RoleSelector>,

    /// Drop Python-tracer events (`$file.py:N func`; Kineto
    /// python_function), often 95% of a sglang-jax trace.
    #[arg(long)]
    drop_python: bool,

    /// Drop complete events shorter than this (e.g. 10us, 0.5ms).
    #[arg(long, value_name = "DURATION", value_parser = parse_min_dur)]
    min_dur: Option<i64>,

    /// Merge the readable ranks when some cannot be read, and list the
    /// skipped ones.
    #[arg(long)]
    keep_going: bool,

    /// Keep the output under this size (1GB: what a browser tab opens):
    /// when the full merge is bigger, it is merged again cut to a window
    /// from the start of its events that fits, and the summary says what
    /// was dropped. Units: B, KB, MB, GB, KiB, MiB, GiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_max_size)]
    max_size: Option<u64>,

    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,

    /// Ranks converted at once (each holds its events in memory), and lines
    /// of an xplane converted at once (each holds one line); default: the
    /// number of CPUs.
    #[arg(long, short = 'j', value_name = "N")]
    jobs: Option<usize>,

    /// Diagnostic: stop after `gunzip` (decompress every trace) or `parse`
    /// (parse every event) and write nothing, to see where time goes.
    #[arg(long, hide = true, value_parser = parse_stage)]
    stop_after: Option<Stage>,
}

fn parse_align(text: &str) -> Result<AlignMode, String> {
    text.parse()
}

fn parse_source(text: &str) -> Result<SourceMode, String> {
    text.parse()
}

fn parse_window(text: &str) -> Result<Window, String> {
    text.parse()
}

fn parse_rank(text: &str) -> Result<RankSelector, String> {
    text.parse()
}

fn parse_role(text: &str) -> Result<RoleSelector, String> {
    text.parse()
}

fn parse_min_dur(text: &str) -> Result<i64, String> {
    parse_duration_ns(text)
}

fn parse_max_size(text: &str) -> Result<u64, String> {
    rankline_merge::parse_size(text)
}

fn parse_stage(text: &str) -> Result<Stage, String> {
    text.parse()
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let options = MergeOptions {
        align: args.align,
        filters: Filters {
            window: args.window,
            ranks: args.ranks,
            roles: args.roles,
            drop_python: args.drop_python,
            min_dur_ns: args.min_dur,
        },
        keep_going: args.keep_going,
        jobs: args.jobs,
        stop_after: args.stop_after,
        source: args.source,
        max_size: args.max_size,
        ..MergeOptions::new(args.inputs, args.output)
    };
    let summary = match merge(&options) {
        // The inputs were fine and the merge ran: like an incomplete merge,
        // exit 1, not the 2 of a merge that could not be done.
        Err(error @ MergeError::WindowSelectsNothing(_)) => {
            eprintln!("error: {error}");
            return Ok(ExitCode::from(crate::exit::FAILED));
        }
        result => result?,
    };
    crate::output::print_summary(args.json, &summary, || summary.render())?;
    Ok(crate::exit::ok_or_failed(summary.complete()))
}
