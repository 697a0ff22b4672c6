//! `rankline capture` without a subcommand: the flags become a
//! `CaptureRequest`, the coordinator starts it on every selected rank, and
//! the CLI follows it (with `--workload`, driving requests meanwhile).

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use rankline_client::render as report;
use rankline_coordinator::parse_selectors;
use rankline_proto::{CaptureRequest, CaptureSettings, CaptureSummary, FailRequest};

use super::follow::{Follower, Outcome};
use super::workload::{self, Workload, WorkloadArgs};
use crate::args::CoordinatorArg;
use crate::exit;
use crate::output::print_json_line;
use crate::signals::interrupts;

/// How long `capture --workload` waits for the coordinator to record that
/// the workload failed (it keeps writing the manifest after that).
const MARK_FAILED_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub(crate) struct StartArgs {
    /// Name of the capture (letters, digits, '.', '_', '-'); default: a
    /// fresh `rl-<date>-<time>-<hex>`.
    #[arg(long)]
    profile_id: Option<String>,

    /// Which agents: KEY=VALUE,... with keys role, worker, host, tp, ep, dp,
    /// pp, agent, label.NAME. Keys are ANDed, values of one key ORed; repeat
    /// the flag to add more. Default: every connected agent.
    #[arg(long = "select", value_name = "KEY=VALUE,...")]
    select: Vec<String>,

    /// Stop after this many forward steps (the server counts them).
    #[arg(long, conflicts_with = "duration")]
    num_steps: Option<u32>,

    /// Stop after this long, e.g. 2s or 500ms.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,

    /// Forward step at which profiling starts.
    #[arg(long)]
    start_step: Option<u32>,

    /// JAX host tracer level (0-3).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=3))]
    host_tracer_level: Option<u32>,

    /// JAX Python tracer level (0-1).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=1))]
    python_tracer_level: Option<u32>,

    /// Extra /start_profile field, KEY=VALUE (JSON values are sent as JSON);
    /// repeat for more.
    #[arg(long = "server-arg", value_name = "KEY=VALUE")]
    server_args: Vec<String>,

    /// How far ahead the common start instant is (default 300 ms + 2 ms per agent).
    #[arg(long, value_parser = humantime::parse_duration)]
    lead_time: Option<Duration>,

    /// Per-rank limit from the start to stored files (default: the duration,
    /// or 60 s, plus 120 s).
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,

    /// JSON lines of events on stdout, the final summary last.
    #[arg(long)]
    json: bool,

    /// Exit 0 when at least one rank is ok.
    #[arg(long)]
    allow_partial: bool,

    #[command(flatten)]
    workload: WorkloadArgs,

    // Last: its security flags open their own help section.
    #[command(flatten)]
    coordinator: CoordinatorArg,
}

pub(super) async fn run(args: StartArgs) -> anyhow::Result<ExitCode> {
    let request = capture_request(&args)?;
    let workload = args
        .workload
        .prepare(&args.coordinator, &request.select, args.duration)
        .await?;
    let (outcome, workload) =
        start_and_follow_with(&args.coordinator, request, args.json, workload).await?;
    let code = outcome.exit_code(args.allow_partial);
    let Some(workload) = workload else {
        return Ok(code);
    };
    let profile_id = workload.profile_id().to_string();
    let summary = workload.finish().await?;
    let failed_capture = if summary.status == "ok" || profile_id.is_empty() {
        None
    } else {
        let reason = summary.reason.as_deref().unwrap_or("requests failed");
        mark_failed(&args.coordinator, &profile_id, reason).await
    };
    if args.json {
        let mut line = serde_json::json!({"workload": summary});
        if let Some(capture) = &failed_capture {
            line["capture"] = report::summary_json(capture);
        }
        print_json_line(&line)?;
    } else {
        print!("{}", workload::summary_text(&summary));
        if let Some(capture) = &failed_capture {
            println!(
                "capture {} marked failed: {}",
                capture.profile_id, capture.failure
            );
        }
    }
    if summary.status != "ok" && matches!(outcome, Outcome::Finished(_)) {
        return Ok(ExitCode::from(exit::FAILED));
    }
    Ok(code)
}

/// Tells the coordinator the capture failed because its workload did, so
/// its record, manifest.json and `capture show` say so; the capture as it
/// is now, or `None` (said on stderr) when the coordinator did not take it.
async fn mark_failed(
    coordinator: &CoordinatorArg,
    profile_id: &str,
    workload_reason: &str,
) -> Option<CaptureSummary> {
    let marked = async {
        let mut client = coordinator.connect().await?;
        let mut request = tonic::Request::new(FailRequest {
            profile_id: profile_id.to_string(),
            reason: format!("workload failed: {workload_reason}"),
        });
        // The coordinator answers once manifest.json is rewritten; while its
        // storage is down it keeps trying on its own.
        request.set_timeout(MARK_FAILED_TIMEOUT);
        let summary = client
            .fail(request)
            .await
            .map_err(|status| coordinator.failed(&status))?;
        anyhow::Ok(summary.into_inner())
    };
    match marked.await {
        Ok(summary) => Some(summary),
        Err(error) => {
            eprintln!("could not mark capture {profile_id} failed: {error:#}");
            None
        }
    }
}

/// Starts a capture and shows it to its end (also `rankline demo`'s capture).
pub(crate) async fn start_and_follow(
    coordinator: &CoordinatorArg,
    request: CaptureRequest,
    json: bool,
) -> anyhow::Result<Outcome> {
    Ok(start_and_follow_with(coordinator, request, json, None)
        .await?
        .0)
}

/// [`start_and_follow`], feeding the capture's events to a workload.
async fn start_and_follow_with(
    coordinator: &CoordinatorArg,
    request: CaptureRequest,
    json: bool,
    workload: Option<Workload>,
) -> anyhow::Result<(Outcome, Option<Workload>)> {
    let mut client = coordinator.connect().await?;
    let events = client
        .capture(request)
        .await
        .map_err(|status| coordinator.failed(&status))?
        .into_inner();
    // From here on Ctrl-C means "stop the capture", not "kill the CLI".
    let interrupts = interrupts();
    let mut follower = Follower::new(json);
    follower.workload = workload;
    follower
        .follow(events, coordinator, Some((client, interrupts)))
        .await
}

/// The request the flags describe, checked here so mistakes fail before
/// anything reaches the coordinator.
fn capture_request(args: &StartArgs) -> anyhow::Result<CaptureRequest> {
    let select = parse_selectors(&args.select).context("--select")?;
    let mut server_args = HashMap::new();
    for pair in &args.server_args {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("--server-arg {pair:?} is not KEY=VALUE; write e.g. --server-arg profile_by_stage=true");
        };
        server_args.insert(key.trim().to_string(), value.to_string());
    }
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if args.duration.is_some_and(|d| d.is_zero()) {
        bail!("--duration must be longer than 0");
    }
    if args.num_steps == Some(0) {
        bail!("--num-steps must be at least 1");
    }
    Ok(CaptureRequest {
        profile_id: args.profile_id.clone().unwrap_or_default(),
        select,
        settings: Some(CaptureSettings {
            num_steps: args.num_steps,
            duration_ms: args.duration.map(millis),
            start_step: args.start_step,
            host_tracer_level: args.host_tracer_level,
            python_tracer_level: args.python_tracer_level,
            server_args,
            timeout_ms: args.timeout.map(millis).unwrap_or(0),
        }),
        lead_time_ms: args.lead_time.map(millis).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        start: StartArgs,
    }

    fn request_for(args: &[&str]) -> anyhow::Result<CaptureRequest> {
        let cli = Cli::try_parse_from(std::iter::once("capture").chain(args.iter().copied()))?;
        capture_request(&cli.start)
    }

    #[test]
    fn flags_become_the_request() {
        let request = request_for(&[
            "--profile-id",
            "p1",
            "--select",
            "role=prefill,tp=0",
            "--select",
            "tp=1",
            "--duration",
            "2s",
            "--server-arg",
            "profile_by_stage=true",
            "--lead-time",
            "500ms",
        ])
        .unwrap();
        assert_eq!(request.profile_id, "p1");
        assert_eq!(request.select.len(), 3);
        assert_eq!(request.lead_time_ms, 500);
        let settings = request.settings.unwrap();
        assert_eq!(settings.duration_ms, Some(2_000));
        assert_eq!(settings.num_steps, None);
        assert_eq!(settings.server_args["profile_by_stage"], "true");
    }

    #[test]
    fn bad_flags_are_refused_before_anything_is_sent() {
        assert!(request_for(&["--num-steps", "3", "--duration", "1s"]).is_err());
        assert!(request_for(&["--num-steps", "0"]).is_err());
        assert!(request_for(&["--host-tracer-level", "4"]).is_err());
        let error = request_for(&["--server-arg", "novalue"]).unwrap_err();
        assert!(error.to_string().contains("KEY=VALUE"), "{error}");
        let error = request_for(&["--select", "rolle=prefill"]).unwrap_err();
        assert!(
            format!("{error:#}").contains("unknown selector key"),
            "{error:#}"
        );
    }
}
