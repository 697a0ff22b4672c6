//! `rankline export-xprof`: arguments and glue for `rankline_xprof::export`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use rankline_xprof::{export, CaptureLocation, ExportOptions, Progress};

/// Arguments of `rankline export-xprof`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "CAPTURE is a capture folder, its storage URL (s3://bucket/prefix/<id>, \
    file:///data/<id>), or a capture id looked up under --storage.\n\n\
    Writes OUT/plugins/profile/<run>/<host>.xplane.pb for every rank that has an xplane, the \
    layout XProf and TensorBoard read as one multi-host run. <run> is the capture's start time \
    as YYYY_MM_DD_HH_MM_SS (UTC), as JAX names its runs. <host> is \
    <role>-<worker>.<TP-n-EP-m>[.<short hostname>], e.g. prefill-0.TP-1-EP-0.tpu-vm-3: XProf shows \
    it in its host list and as the trace viewer's process name. Files are hard-linked from a \
    local capture folder when possible (else copied) or downloaded, then checked by size and \
    sha256. OUT/rankline-xprof-<run>.json maps each host to its rank, file and clock offset: \
    XProf shows every host on its own clock.\n\n\
    Exit status: 0 when every xplane was exported; 1 when some could not be (listed); 2 when \
    nothing was written.\n\n\
    Examples:\n  \
    rankline export-xprof rl-20261122-223355-7f3a && xprof --logdir rl-20261122-223355-7f3a-xprof\n  \
    rankline export-xprof s3://bucket/captures/cap-1 --out /tmp/cap-1-xprof"
)]
pub struct Args {
    /// The capture: a folder, a storage URL of its folder, or a capture id.
    #[arg(value_name = "CAPTURE")]
    capture: String,

    /// The storage a capture id is looked up in (as the coordinator's --storage).
    #[arg(long, env = "RANKLINE_STORAGE", default_value = "./rankline-captures")]
    storage: String,

    /// The XProf log dir to write [default: ./<capture id>-xprof].
    #[arg(long, short, value_name = "DIR")]
    out: Option<PathBuf>,

    /// The run's folder name [default: the capture's start, YYYY_MM_DD_HH_MM_SS UTC].
    #[arg(long, value_name = "NAME")]
    run: Option<String>,

    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let location = CaptureLocation::resolve(&args.capture, &args.storage)?;
    let options = ExportOptions {
        out: args.out,
        run: args.run,
    };
    let summary = super::runtime()?
        .block_on(export(&location, &options, &show_progress))
        .with_context(|| format!("exporting {} for XProf", location.url()))?;
    crate::output::print_summary(args.json, &summary, || summary.render())?;
    if summary.hosts.is_empty() {
        anyhow::bail!("no xplane could be exported (see above)");
    }
    Ok(crate::exit::ok_or_failed(summary.complete()))
}

fn show_progress(progress: Progress<'_>) {
    match progress {
        Progress::Started {
            hosts,
            bytes,
            run_dir,
        } => eprintln!(
            "exporting {hosts} xplane(s), {:.1} MB, into {}",
            bytes as f64 / 1e6,
            run_dir.display()
        ),
        Progress::Placed(host) => eprintln!(
            "  {} {} ({:.1} MB, verified)",
            host.host,
            host.placed.verb(),
            host.size as f64 / 1e6
        ),
        Progress::Failed(failed) => eprintln!("  {} FAILED: {}", failed.host, failed.reason),
    }
}
