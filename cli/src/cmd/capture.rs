//! `rankline capture` (start one and follow it), `capture show ID`,
//! `stop ID`, `agents` and `captures`: the CLI side of the coordinator's
//! Control API.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rankline_client::{self as client, render as report, Client, DEFAULT_COORDINATOR_URL};
use rankline_coordinator::parse_selectors;
use rankline_layout::Manifest;
use rankline_proto::convert::{manifest_key, summary_from_manifest};
use rankline_proto::{
    capture_event, unix_now_ns, CaptureEvent, CaptureRequest, CaptureSettings, CaptureStatus,
    CaptureSummary, FailRequest, GetCaptureRequest, ListAgentsRequest, ListCapturesRequest,
    RankState, StopRequest, WatchRequest,
};
use rankline_storage::Storage;
use tokio::sync::mpsc;
use tonic::Streaming;

use super::security::ClientSecurityArgs;
use super::workload::{self, Workload, WorkloadArgs};

/// How long `capture --workload` waits for the coordinator to record that
/// the workload failed (it keeps writing the manifest after that).
const MARK_FAILED_TIMEOUT: Duration = Duration::from_secs(30);

const EXIT_CODES: &str = "\
Exit codes:
  0    every rank ok (with --allow-partial: at least one rank ok)
  1    the capture ended with failed or lost ranks
  2    the capture could not start or be followed (bad input, coordinator unreachable, ...)
  130  interrupted twice: stopped waiting (the capture goes on; see `rankline capture show ID`)

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

/// Where the coordinator is and how to prove who this is, for every
/// subcommand that talks to it.
#[derive(Debug, clap::Args)]
pub(crate) struct CoordinatorArg {
    /// The coordinator's URL (what `rankline coordinator` printed).
    #[arg(long, env = "RANKLINE_COORDINATOR", default_value = DEFAULT_COORDINATOR_URL)]
    pub(crate) coordinator: String,

    #[command(flatten)]
    pub(crate) security: ClientSecurityArgs,
}

impl CoordinatorArg {
    pub(crate) async fn connect(&self) -> anyhow::Result<Client> {
        let security = self.security.security()?;
        Ok(client::connect_with(&self.coordinator, &security).await?)
    }

    /// A failed call as an error that says what to do.
    fn failed(&self, status: &tonic::Status) -> anyhow::Error {
        anyhow::anyhow!(self.hint(&client::explain_status(&self.coordinator, status)))
    }

    /// `text` with `--coordinator URL` added to every `rankline <command>`
    /// it names that talks to the coordinator, when the URL is not the
    /// default: a printed next step then runs as printed.
    pub(crate) fn hint(&self, text: &str) -> String {
        if self.coordinator == DEFAULT_COORDINATOR_URL {
            return text.to_string();
        }
        with_coordinator_flag(text, &self.coordinator)
    }
}

/// Adds ` --coordinator URL` inside each backquoted client command of `text`.
fn with_coordinator_flag(text: &str, url: &str) -> String {
    const CLIENT_COMMANDS: [&str; 4] = ["capture", "stop ", "agents", "captures"];
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    while let Some(start) = rest.find("`rankline ") {
        let (before, from) = rest.split_at(start + 1);
        out.push_str(before);
        let Some(end) = from.find('`') else {
            rest = from;
            break;
        };
        let command = &from[..end];
        out.push_str(command);
        let words = &command["rankline ".len()..];
        if CLIENT_COMMANDS.iter().any(|c| words.starts_with(c))
            && !command.contains("--coordinator")
        {
            out.push_str(" --coordinator ");
            out.push_str(url);
        }
        rest = &from[end..];
    }
    out.push_str(rest);
    out
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, after_help = capture_help())]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,

    #[command(flatten)]
    start: StartArgs,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Show a capture's per-rank results (from the coordinator; from storage
    /// with --storage when the coordinator does not know it).
    Show(ShowArgs),
}

#[derive(Debug, clap::Args)]
struct StartArgs {
    #[command(flatten)]
    coordinator: CoordinatorArg,

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
}

#[derive(Debug, clap::Args)]
struct ShowArgs {
    /// The capture's profile id.
    profile_id: String,

    #[command(flatten)]
    coordinator: CoordinatorArg,

    /// Read `<ID>/manifest.json` from this storage when the coordinator is
    /// unreachable or does not know the capture.
    #[arg(long)]
    storage: Option<String>,

    /// Follow a running capture to its end.
    #[arg(long)]
    follow: bool,

    /// The summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// The capture's profile id.
    profile_id: String,

    #[command(flatten)]
    coordinator: CoordinatorArg,
}

#[derive(Debug, clap::Args)]
pub struct AgentsArgs {
    #[command(flatten)]
    coordinator: CoordinatorArg,

    /// A JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct CapturesArgs {
    #[command(flatten)]
    coordinator: CoordinatorArg,

    /// A JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = super::runtime()?;
    match args.action {
        Some(Action::Show(show)) => runtime.block_on(run_show(show)),
        None => runtime.block_on(run_capture(args.start)),
    }
}

pub fn run_stop(args: StopArgs) -> anyhow::Result<ExitCode> {
    super::runtime()?.block_on(async {
        let mut client = args.coordinator.connect().await?;
        let told = client
            .stop(StopRequest {
                profile_id: args.profile_id.clone(),
            })
            .await
            .map_err(|status| args.coordinator.failed(&status))?
            .into_inner()
            .ranks;
        println!(
            "{}",
            args.coordinator.hint(&format!(
                "asked {told} rank(s) of capture {id} to stop; follow it with `rankline capture show {id} --follow`",
                id = args.profile_id
            ))
        );
        Ok(ExitCode::SUCCESS)
    })
}

pub fn run_agents(args: AgentsArgs) -> anyhow::Result<ExitCode> {
    super::runtime()?.block_on(async {
        let mut client = args.coordinator.connect().await?;
        let agents = client
            .list_agents(ListAgentsRequest {})
            .await
            .map_err(|status| args.coordinator.failed(&status))?
            .into_inner()
            .agents;
        if args.json {
            let agents: Vec<_> = agents.iter().map(report::agent_json).collect();
            println!("{}", serde_json::to_string_pretty(&agents)?);
        } else if agents.is_empty() {
            println!(
                "no agents have joined {}; start one beside each server with `rankline agent --coordinator {}`",
                args.coordinator.coordinator, args.coordinator.coordinator
            );
        } else {
            print!("{}", report::agents_table(&agents, unix_now_ns()));
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn run_captures(args: CapturesArgs) -> anyhow::Result<ExitCode> {
    super::runtime()?.block_on(async {
        let mut client = args.coordinator.connect().await?;
        let captures = client
            .list_captures(ListCapturesRequest {})
            .await
            .map_err(|status| args.coordinator.failed(&status))?
            .into_inner()
            .captures;
        if args.json {
            let captures: Vec<_> = captures.iter().map(report::summary_json).collect();
            println!("{}", serde_json::to_string_pretty(&captures)?);
        } else if captures.is_empty() {
            println!(
                "{}",
                args.coordinator
                    .hint("no captures yet; start one with `rankline capture`")
            );
        } else {
            print!("{}", report::captures_table(&captures));
        }
        Ok(ExitCode::SUCCESS)
    })
}

async fn run_capture(args: StartArgs) -> anyhow::Result<ExitCode> {
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
        println!("{}", serde_json::to_string(&line)?);
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
        return Ok(ExitCode::from(1));
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

async fn run_show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    if args.follow {
        let mut client = args.coordinator.connect().await?;
        let events = client
            .watch(WatchRequest {
                profile_id: args.profile_id.clone(),
            })
            .await;
        if let Ok(events) = events {
            Follower::new(args.json)
                .follow(events.into_inner(), &args.coordinator, None)
                .await?;
            return Ok(ExitCode::SUCCESS);
        }
        // Not in the coordinator's memory: a stored capture has nothing to follow.
    }
    let summary = find_summary(&args).await?;
    let workload = workload::stored_summary(&summary.storage_url, &summary.profile_id).await;
    if args.json {
        let mut json = report::summary_json(&summary);
        if let (Some(workload), Some(object)) = (&workload, json.as_object_mut()) {
            object.insert("workload".into(), serde_json::to_value(workload)?);
        }
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!("{}", report::summary_table(&summary));
        if let Some(workload) = &workload {
            print!("{}", workload::summary_text(workload));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A capture's summary from the coordinator, else from `--storage`.
async fn find_summary(args: &ShowArgs) -> anyhow::Result<CaptureSummary> {
    let from_coordinator = async {
        let mut client = args.coordinator.connect().await?;
        let summary = client
            .get_capture(GetCaptureRequest {
                profile_id: args.profile_id.clone(),
            })
            .await
            .map_err(|status| args.coordinator.failed(&status))?;
        anyhow::Ok(summary.into_inner())
    }
    .await;
    let coordinator_error = match from_coordinator {
        Ok(summary) => return Ok(summary),
        Err(error) => error,
    };
    let Some(storage) = &args.storage else {
        return Err(coordinator_error.context(format!(
            "capture {} not found; to read its manifest straight from storage, add --storage URL",
            args.profile_id
        )));
    };
    tracing::info!("{coordinator_error:#}; reading the manifest from {storage}");
    let storage = Storage::open(storage)?;
    let key = manifest_key(&args.profile_id);
    let bytes = storage.get_bytes(&key).await.with_context(|| {
        format!(
            "capture {} is neither on the coordinator ({coordinator_error}) nor in {}",
            args.profile_id,
            storage.url()
        )
    })?;
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}/{key} is not a valid manifest", storage.url()))?;
    Ok(summary_from_manifest(&manifest))
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

/// Ctrl-C presses, as a channel the follow loop can select on without
/// missing one between polls.
fn interrupts() -> mpsc::UnboundedReceiver<()> {
    let (presses, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if presses.send(()).is_err() {
                return;
            }
        }
    });
    receiver
}

/// How following a capture ended.
pub(crate) enum Outcome {
    Finished(CaptureStatus),
    StoppedWaiting,
}

impl Outcome {
    pub(crate) fn exit_code(&self, allow_partial: bool) -> ExitCode {
        match self {
            Outcome::Finished(CaptureStatus::Complete) => ExitCode::SUCCESS,
            Outcome::Finished(CaptureStatus::Partial) if allow_partial => ExitCode::SUCCESS,
            Outcome::Finished(_) => ExitCode::from(1),
            Outcome::StoppedWaiting => ExitCode::from(130),
        }
    }
}

/// Prints a capture's events as they come: one line per rank state change
/// and a final table for people, every event as a JSON line for scripts.
struct Follower {
    json: bool,
    since: Instant,
    profile_id: String,
    shown: HashMap<String, RankState>,
    /// Ctrl-C came before the capture had an id.
    stop_wanted: bool,
    /// Sees every event (`--workload`).
    workload: Option<Workload>,
}

impl Follower {
    fn new(json: bool) -> Follower {
        Follower {
            json,
            since: Instant::now(),
            profile_id: String::new(),
            shown: HashMap::new(),
            stop_wanted: false,
            workload: None,
        }
    }

    /// Follows to the summary. With `stopper`, the first Ctrl-C asks the
    /// coordinator to stop the capture and the second stops waiting.
    async fn follow(
        mut self,
        mut events: Streaming<CaptureEvent>,
        coordinator: &CoordinatorArg,
        mut stopper: Option<(Client, mpsc::UnboundedReceiver<()>)>,
    ) -> anyhow::Result<(Outcome, Option<Workload>)> {
        let mut presses = 0;
        loop {
            let pressed = async {
                match stopper.as_mut() {
                    Some((_, interrupts)) => interrupts.recv().await,
                    None => std::future::pending().await,
                }
            };
            let event = tokio::select! {
                event = events.message() => event,
                Some(()) = pressed => {
                    presses += 1;
                    if presses > 1 {
                        eprintln!(
                            "{}",
                            coordinator.hint(&format!(
                                "no longer waiting; the capture goes on. See it with `rankline capture show {} --follow`",
                                self.profile_id
                            ))
                        );
                        return Ok((Outcome::StoppedWaiting, self.workload.take()));
                    }
                    if let Some((client, _)) = stopper.as_mut() {
                        self.request_stop(client).await;
                    }
                    continue;
                }
            };
            let event = match event {
                Ok(Some(event)) => event,
                Ok(None) => bail!(coordinator.hint(&format!(
                    "the coordinator ended the event stream of capture {} without a summary; \
                     see `rankline capture show {}`",
                    self.profile_id, self.profile_id
                ))),
                Err(status) => {
                    return Err(coordinator
                        .failed(&status)
                        .context(coordinator.hint(&format!(
                            "following capture {} (its agents keep going; check it later with \
                         `rankline capture show {}`)",
                            self.profile_id, self.profile_id
                        ))))
                }
            };
            if let Some(workload) = self.workload.as_mut() {
                workload.observe(&event);
            }
            if let Some(status) = self.show(&event)? {
                return Ok((Outcome::Finished(status), self.workload.take()));
            }
            if self.stop_wanted && !self.profile_id.is_empty() {
                if let Some((client, _)) = stopper.as_mut() {
                    self.request_stop(client).await;
                }
            }
        }
    }

    /// Asks for a stop (after the first Ctrl-C); before the capture is
    /// accepted there is no id yet, so the wish waits for it.
    async fn request_stop(&mut self, client: &mut Client) {
        if self.profile_id.is_empty() {
            eprintln!("stopping as soon as the capture is accepted...");
            self.stop_wanted = true;
            return;
        }
        self.stop_wanted = false;
        let answer = client
            .stop(StopRequest {
                profile_id: self.profile_id.clone(),
            })
            .await;
        match answer {
            Ok(told) => eprintln!(
                "asked {} rank(s) to stop; waiting for their files (Ctrl-C again to stop waiting)",
                told.into_inner().ranks
            ),
            Err(status) => eprintln!("could not stop {}: {}", self.profile_id, status.message()),
        }
    }

    /// Prints one event; the capture's status once it finished.
    fn show(&mut self, event: &CaptureEvent) -> anyhow::Result<Option<CaptureStatus>> {
        if self.json {
            println!("{}", serde_json::to_string(&report::event_json(event))?);
        }
        match &event.kind {
            Some(capture_event::Kind::Accepted(accepted)) => {
                self.profile_id = accepted.profile_id.clone();
                self.since = Instant::now();
                if !self.json {
                    let lead_ms = (accepted.start_at_unix_ns - unix_now_ns()) / 1_000_000;
                    let starts = if lead_ms > 0 {
                        format!("common start in ~{lead_ms} ms")
                    } else {
                        format!(
                            "started at {}",
                            report::format_instant(accepted.start_at_unix_ns)
                        )
                    };
                    println!(
                        "capture {}: {} rank(s), {starts}; files go to {}/",
                        accepted.profile_id,
                        accepted.ranks.len(),
                        rankline_storage::object_location(
                            &accepted.storage_url,
                            &accepted.profile_id
                        )
                    );
                }
            }
            Some(capture_event::Kind::Rank(progress)) => {
                let agent_id = progress
                    .agent
                    .as_ref()
                    .map(|a| a.agent_id.clone())
                    .unwrap_or_default();
                let state = progress
                    .update
                    .as_ref()
                    .map_or(RankState::Unspecified, |u| u.state());
                // Progress within a state (bytes uploaded) is for --json only.
                if self.shown.insert(agent_id, state) != Some(state) && !self.json {
                    println!(
                        "[{:>6.2}s] {}",
                        self.since.elapsed().as_secs_f64(),
                        report::rank_change_line(progress)
                    );
                }
            }
            Some(capture_event::Kind::Finished(summary)) => {
                self.profile_id = summary.profile_id.clone();
                if !self.json {
                    println!();
                    print!("{}", report::summary_table(summary));
                }
                return Ok(Some(summary.status()));
            }
            None => {}
        }
        Ok(None)
    }
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

    #[test]
    fn exit_codes_follow_the_outcome() {
        let code = |outcome: Outcome, allow_partial| outcome.exit_code(allow_partial);
        assert_eq!(
            code(Outcome::Finished(CaptureStatus::Complete), false),
            ExitCode::SUCCESS
        );
        assert_eq!(
            code(Outcome::Finished(CaptureStatus::Partial), false),
            ExitCode::from(1)
        );
        assert_eq!(
            code(Outcome::Finished(CaptureStatus::Partial), true),
            ExitCode::SUCCESS
        );
        assert_eq!(
            code(Outcome::Finished(CaptureStatus::Failed), true),
            ExitCode::from(1)
        );
        assert_eq!(code(Outcome::StoppedWaiting, false), ExitCode::from(130));
    }

    #[test]
    fn printed_client_commands_carry_the_coordinator() {
        let url = "http://10.0.0.1:9000";
        assert_eq!(
            with_coordinator_flag("see `rankline capture show c1 --follow` or `rankline stop c1`", url),
            "see `rankline capture show c1 --follow --coordinator http://10.0.0.1:9000` or `rankline stop c1 --coordinator http://10.0.0.1:9000`"
        );
        let untouched = "start it with `rankline coordinator --listen 0.0.0.0:7471`; merge with `rankline merge c1 -o c.pftrace`";
        assert_eq!(with_coordinator_flag(untouched, url), untouched);
        assert_eq!(
            with_coordinator_flag("`rankline agents --coordinator x`, `rankline", url),
            "`rankline agents --coordinator x`, `rankline"
        );
    }
}
