//! `rankline capture`: start a capture and follow it to its end
//! ([`start`]), or show a stored one (`capture show ID`, [`show`]); both
//! print its events through [`follow`]. `--workload` traffic is
//! [`workload`].

mod follow;
mod show;
mod start;
mod workload;

use std::process::ExitCode;

pub(crate) use follow::Outcome;
pub(crate) use start::start_and_follow;

const EXIT_CODES: &str = "\
Exit codes:
  0    every rank ok (with --allow-partial: at least one rank ok)
  1    the capture ended with failed or lost ranks
  2    the capture could not start or be followed (bad input, coordinator unreachable, ...)
  130  interrupted twice: stopped waiting (the capture goes on; see `rankline capture show ID`)
  141  stdout was closed by its reader (`| head`); the capture goes on

Without --num-steps or --duration the servers profile until `rankline stop ID` or Ctrl-C.
Ctrl-C asks every rank to stop (once), then waits for their files.

With --workload, a failed workload (a server refused the requests, or none succeeded without
--allow-idle) ends the capture `failed` with the server's message as its reason (manifest.json,
`rankline capture show ID`) and exits 1 too; a refused warm-up exits 2 before anything is
profiled. The requests go to `<profile_id>/workload.json` and the merged trace's requests track.";

/// The exit codes, then the workload SPEC.
fn capture_help() -> String {
    format!("{EXIT_CODES}\n\nWorkload {}", rankline_workload::SPEC_HELP)
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, after_help = capture_help())]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,

    #[command(flatten)]
    start: start::StartArgs,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Show a capture's per-rank results (from the coordinator; from storage
    /// with --storage when the coordinator does not know it).
    Show(show::ShowArgs),
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = crate::cmd::runtime()?;
    match args.action {
        Some(Action::Show(show)) => runtime.block_on(show::run(show)),
        None => runtime.block_on(start::run(args.start)),
    }
}
