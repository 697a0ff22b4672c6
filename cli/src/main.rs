//! `rankline`: one command to profile every rank of an LLM deployment.
//!
//! This binary is deliberately thin: it parses arguments and hands each
//! subcommand to the library crate that does the work (`rankline-agent`,
//! `rankline-coordinator`, `rankline-merge`, `rankline-xprof`,
//! `rankline-simserver`).

mod args;
mod cmd;
mod exit;
mod output;
mod signals;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};

/// Profile every rank of a multi-host LLM deployment (sglang-jax, SGLang) in
/// one command, and merge the ranks onto one clock.
///
/// Start here: `rankline demo` runs a whole capture and merge on this machine
/// with simulated servers, no TPU needed.
#[derive(Debug, Parser)]
#[command(
    name = "rankline",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    /// More log output on stderr (-v: info, -vv: debug, -vvv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a complete local capture and merge with simulated servers (no TPU needed).
    Demo(cmd::demo::Args),
    /// Run the coordinator: the control plane agents and the CLI connect to.
    Coordinator(cmd::coordinator::Args),
    /// Run an agent beside one server process (one per TP/EP rank or host).
    Agent(cmd::agent::Args),
    /// Profile the selected ranks now, or show a stored capture (`capture show ID`).
    Capture(cmd::capture::Args),
    /// Ask every rank of a running capture to stop now.
    Stop(cmd::stop::Args),
    /// List the agents connected to the coordinator, with their clock offsets.
    Agents(cmd::agents::Args),
    /// List the captures the coordinator knows.
    Captures(cmd::captures::Args),
    /// Merge a capture's per-rank traces into one Perfetto timeline.
    Merge(cmd::merge::Args),
    /// Review a capture: per-rank busy/idle, step times, top ops, stragglers (one HTML page).
    Report(cmd::report::Args),
    /// Compare two captures or saved reports per op, per stage and per rank.
    Diff(cmd::diff::Args),
    /// Lay a capture's .xplane.pb files out as one multi-host XProf / TensorBoard run.
    ExportXprof(cmd::export_xprof::Args),
    /// Run a simulated sglang-jax / SGLang server (for tests and trying rankline out).
    SimServer(cmd::sim_server::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Daemons log what they do; interactive commands only warn, so their
    // own output stays readable.
    let daemon = matches!(
        cli.command,
        Command::Coordinator(_) | Command::Agent(_) | Command::SimServer(_)
    );
    init_logging(cli.verbose, daemon);
    if !daemon {
        signals::end_quietly_when_stdout_closes();
    }
    let result = match cli.command {
        Command::Demo(args) => cmd::demo::run(args),
        Command::Coordinator(args) => cmd::coordinator::run(args),
        Command::Agent(args) => cmd::agent::run(args),
        Command::Capture(args) => cmd::capture::run(args),
        Command::Stop(args) => cmd::stop::run(args),
        Command::Agents(args) => cmd::agents::run(args),
        Command::Captures(args) => cmd::captures::run(args),
        Command::Merge(args) => cmd::merge::run(args),
        Command::Report(args) => cmd::report::run(args),
        Command::Diff(args) => cmd::diff::run(args),
        Command::ExportXprof(args) => cmd::export_xprof::run(args),
        Command::SimServer(args) => cmd::sim_server::run(args),
    };
    match result {
        Ok(code) => code,
        // The reader of stdout went away (`| head`): end as quietly as a
        // print to it does (see `signals::end_quietly_when_stdout_closes`).
        Err(error) if signals::is_broken_pipe(&error) => ExitCode::from(exit::BROKEN_PIPE),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(exit::REFUSED)
        }
    }
}

fn init_logging(verbose: u8, daemon: bool) {
    let default = match (verbose, daemon) {
        (0, true) => "warn,rankline=info,rankline_agent=info,rankline_coordinator=info,rankline_simserver=info",
        (0, false) => "warn",
        (1, _) => "info,h2=warn,tower=warn,hyper=warn",
        (2, _) => "debug,h2=info,tower=info,hyper=info",
        _ => "trace",
    };
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let errors_only = tracing_subscriber::filter::filter_fn(|metadata| {
        !QUIET.load(Ordering::Relaxed) || *metadata.level() == tracing::Level::ERROR
    });
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr)
                .with_filter(filter),
        )
        .with(errors_only)
        .init();
}

/// Set once a command's work is done and only its teardown is left.
static QUIET: AtomicBool = AtomicBool::new(false);

/// From now on only errors are logged: the demo's in-process servers,
/// agents and coordinator say goodbye to each other noisily, and that is
/// not news after its summary.
pub fn quiet_logs() {
    QUIET.store(true, Ordering::Relaxed);
}
