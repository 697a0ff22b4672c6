//! The capture benchmark: start skew, capture overhead and the agent's idle
//! footprint (issue 2), with real processes on loopback.
//!
//! For each fleet size it starts a coordinator, N simulated servers and N
//! agents (2N + 1 processes), runs captures through the coordinator, and reads
//! from the simulated servers' event logs the instant each `/start_profile`
//! arrived. The baseline, run in the same process against the same servers,
//! is a sequential fan-out: `/start_profile` sent to each server in turn, as
//! SGLang's `bench_serving` does for PD workers.
//!
//! With `--tls` every fleet runs twice in the same process, plain and then
//! secured (mutual TLS with a certificate per agent, plus tokens), and the
//! report sets start skew and the agents' idle footprint side by side.
//!
//! ```text
//! cargo build --release -p rankline -p rankline-bench
//! RANKLINE_BIN=target/release/rankline target/release/capture-bench --out bench/results/capture.md
//! RANKLINE_BIN=target/release/rankline target/release/capture-bench --tls --agents 8 --out bench/results/capture-tls.md
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use rankline_e2e::{wait_until, write_private, Proc, Spawn, TestPki};
use rankline_proto::security::ClientSecurity;
use rankline_proto::{capture_event, CaptureRequest, CaptureSettings, CaptureStatus};

#[derive(Debug, Parser)]
struct Args {
    /// Fleet sizes (agents = simulated servers) to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [8usize, 64])]
    agents: Vec<usize>,
    /// Captures (and sequential rounds) per fleet size.
    #[arg(long, default_value_t = 20)]
    captures: usize,
    /// Profiling window of each capture.
    #[arg(long, default_value_t = 200)]
    duration_ms: u64,
    /// Seconds over which each agent's idle CPU is measured.
    #[arg(long, default_value_t = 30)]
    idle_seconds: u64,
    /// Write the results as markdown here (they are printed too).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run every fleet a second time with mutual TLS and tokens, and compare.
    #[arg(long)]
    tls: bool,
}

/// The credentials of a secured fleet: a CA, the coordinator's
/// certificate, one certificate per agent (CN = its agent id), tokens.
struct Credentials {
    pki: TestPki,
    /// Holds the token files.
    _dir: tempfile::TempDir,
    coordinator_args: Vec<String>,
    agent_token: PathBuf,
    client: ClientSecurity,
}

const OPERATOR_TOKEN: &str = "bench-operator-token-0123456789";
const AGENT_TOKEN: &str = "bench-agent-token-0123456789ab";

impl Credentials {
    fn new() -> Result<Credentials> {
        let pki = TestPki::new("capture-bench CA")?;
        let dir = tempfile::tempdir()?;
        let table = dir.path().join("tokens");
        write_private(
            &table,
            &format!("ops operator {OPERATOR_TOKEN}\nnodes agent {AGENT_TOKEN}\n"),
        )?;
        let agent_token = dir.path().join("agent.token");
        write_private(&agent_token, AGENT_TOKEN)?;
        let server = pki.server("coordinator")?;
        let coordinator_args = [
            "--token-file".to_string(),
            table.display().to_string(),
            "--tls-cert".to_string(),
            server.cert.display().to_string(),
            "--tls-key".to_string(),
            server.key.display().to_string(),
            "--tls-client-ca".to_string(),
            pki.ca().display().to_string(),
        ]
        .to_vec();
        let client = ClientSecurity::default()
            .with_token(OPERATOR_TOKEN, "capture-bench")?
            .with_tls_ca(pki.ca())?;
        Ok(Credentials {
            pki,
            _dir: dir,
            coordinator_args,
            agent_token,
            client,
        })
    }

    /// The flags of agent `i`: the CA, its own certificate, the agent token.
    fn agent_args(&self, i: usize) -> Result<Vec<String>> {
        let cert = self.pki.client(&agent_id(i))?;
        Ok([
            "--tls-ca".to_string(),
            self.pki.ca().display().to_string(),
            "--tls-cert".to_string(),
            cert.cert.display().to_string(),
            "--tls-key".to_string(),
            cert.key.display().to_string(),
            "--token-file".to_string(),
            self.agent_token.display().to_string(),
        ]
        .to_vec())
    }
}

fn agent_id(i: usize) -> String {
    format!("bench-agent-{i}")
}

/// A coordinator, N simulated servers and N agents.
struct Fleet {
    coordinator: Proc,
    servers: Vec<Proc>,
    agents: Vec<Proc>,
    events_dir: PathBuf,
    work: tempfile::TempDir,
}

struct FleetResult {
    agents: usize,
    /// Mutual TLS and tokens on.
    secured: bool,
    rankline_skew_ms: Vec<f64>,
    sequential_skew_ms: Vec<f64>,
    overhead_ms: Vec<f64>,
    lead_ms: f64,
    lateness: Lateness,
    idle: Option<Footprint>,
}

struct Footprint {
    rss_mb: Vec<f64>,
    cpu_percent: Vec<f64>,
    seconds: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    let credentials = args.tls.then(Credentials::new).transpose()?;
    let mut results = Vec::new();
    for (i, &n) in args.agents.iter().enumerate() {
        let idle_seconds = (i == 0).then_some(args.idle_seconds);
        let modes = if args.tls {
            vec![None, credentials.as_ref()]
        } else {
            vec![None]
        };
        for secured in modes {
            let label = if secured.is_some() {
                " (mutual TLS + tokens)"
            } else {
                ""
            };
            eprintln!("== {n} agents + {n} simulated servers{label}");
            let fleet = start_fleet(n, secured)?;
            results.push(runtime.block_on(measure(&fleet, &args, idle_seconds, secured))?);
        }
    }
    let report = render(&args, &results);
    println!("{report}");
    if let Some(out) = &args.out {
        std::fs::write(out, &report).with_context(|| format!("write {}", out.display()))?;
    }
    Ok(())
}

fn start_fleet(n: usize, secured: Option<&Credentials>) -> Result<Fleet> {
    let work = tempfile::tempdir()?;
    let events_dir = work.path().join("events");
    std::fs::create_dir_all(&events_dir)?;
    let storage = work.path().join("storage");
    let coordinator = Spawn::rankline(
        "coordinator",
        &["coordinator", "--listen", "127.0.0.1:0", "--storage"],
    )
    .arg(storage.to_string_lossy())
    .args(
        secured
            .map(|c| c.coordinator_args.clone())
            .unwrap_or_default(),
    )
    .wait_for_url()
    .start()?;

    let mut servers = Vec::with_capacity(n);
    for i in 0..n {
        let log = events_dir.join(format!("server-{i}.jsonl"));
        servers.push(
            Spawn::rankline(&format!("server-{i}"), &["sim-server", "--port", "0"])
                .args(["--hostname", &format!("host{i}")])
                .args(["--events-log", &log.to_string_lossy()])
                // Light content and slow steps: 2N processes share 2 cores.
                .args(["--step-ms", "50", "--events-per-step", "20"])
                .wait_for_url()
                .start()?,
        );
    }
    let spool = work.path().join("spool");
    let mut agents = Vec::with_capacity(n);
    for (i, server) in servers.iter().enumerate() {
        agents.push(
            Spawn::rankline(&format!("agent-{i}"), &["agent"])
                .args(["--coordinator", coordinator.url()])
                .args(["--server", server.url()])
                .args(["--host", &format!("host{i}")])
                .args(["--tp-rank", &i.to_string()])
                .args(["--mode", "trigger", "--kind", "sglang-jax"])
                .args(["--spool", &spool.to_string_lossy()])
                .args(["--agent-id", &agent_id(i)])
                .args(
                    secured
                        .map(|c| c.agent_args(i))
                        .transpose()?
                        .unwrap_or_default(),
                )
                .start()?,
        );
    }
    Ok(Fleet {
        coordinator,
        servers,
        agents,
        events_dir,
        work,
    })
}

async fn measure(
    fleet: &Fleet,
    args: &Args,
    idle_seconds: Option<u64>,
    secured: Option<&Credentials>,
) -> Result<FleetResult> {
    let n = fleet.servers.len();
    let plain = ClientSecurity::default();
    let security = secured.map_or(&plain, |c| &c.client);
    let mut client = rankline_client::connect_with(fleet.coordinator.url(), security).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let agents = client
            .list_agents(rankline_proto::ListAgentsRequest {})
            .await?
            .into_inner()
            .agents;
        if agents.iter().filter(|a| a.connected).count() == n {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {} of {n} agents connected", agents.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let every agent finish its first clock burst.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut overhead_ms = Vec::new();
    let mut lead_ms = 0.0;
    let mut start_instants = Vec::new();
    for round in 0..args.captures {
        let request = CaptureRequest {
            profile_id: format!("bench-{n}-{round}"),
            settings: Some(CaptureSettings {
                duration_ms: Some(args.duration_ms),
                ..Default::default()
            }),
            ..Default::default()
        };
        let began = Instant::now();
        let sent_unix_ns = rankline_proto::unix_now_ns();
        let mut events = client.capture(request).await?.into_inner();
        let mut finished = None;
        while let Some(event) = events.message().await? {
            match event.kind {
                Some(capture_event::Kind::Accepted(accepted)) => {
                    lead_ms = (accepted.start_at_unix_ns - sent_unix_ns) as f64 / 1e6;
                    start_instants.push(accepted.start_at_unix_ns);
                }
                Some(capture_event::Kind::Finished(summary)) => finished = Some(summary),
                _ => {}
            }
        }
        let wall = began.elapsed().as_secs_f64() * 1e3;
        let summary = finished.context("capture stream ended without a summary")?;
        if summary.status() != CaptureStatus::Complete {
            bail!("capture {round} ended {:?}: {summary:?}", summary.status());
        }
        overhead_ms.push(wall - args.duration_ms as f64);
        eprintln!("  capture {round}: {wall:.0} ms");
    }
    let rankline_skew_ms = skews(&fleet.events_dir, n, 0, args.captures)?;
    let lateness = lateness_by_server(&fleet.events_dir, n, &start_instants)?;

    // The baseline: the same servers, started one after the other (once;
    // the secured run shares it).
    let http = reqwest::Client::new();
    let output_dir = fleet.work.path().join("sequential");
    let rounds = if secured.is_some() { 0 } else { args.captures };
    for round in 0..rounds {
        for server in &fleet.servers {
            let body = serde_json::json!({ "output_dir": output_dir.join(round.to_string()) });
            let answer = http
                .post(format!("{}/start_profile", server.url()))
                .json(&body)
                .send()
                .await?;
            if !answer.status().is_success() {
                bail!("sequential start answered {}", answer.status());
            }
        }
        let stops = fleet
            .servers
            .iter()
            .map(|s| http.post(format!("{}/stop_profile", s.url())).send());
        for stop in futures::future::join_all(stops).await {
            stop?;
        }
    }
    let sequential_skew_ms = skews(&fleet.events_dir, n, args.captures, rounds)?;

    let idle = match idle_seconds {
        Some(seconds) => Some(idle_footprint(&fleet.agents, seconds).await?),
        None => None,
    };
    Ok(FleetResult {
        agents: n,
        secured: secured.is_some(),
        rankline_skew_ms,
        sequential_skew_ms,
        overhead_ms,
        lead_ms,
        lateness,
        idle,
    })
}

/// How late each server received `/start_profile` after the common instant
/// (all "hosts" share this machine's clock, so this is on one clock), split
/// into each server's mean (systematic: the agent's clock-offset error) and
/// the spread around it (jitter: wake-up and request latency).
struct Lateness {
    mean_ms: Vec<f64>,
    jitter_ms: Vec<f64>,
}

fn lateness_by_server(events_dir: &Path, servers: usize, starts: &[i64]) -> Result<Lateness> {
    let mut mean_ms = Vec::new();
    let mut jitter_ms = Vec::new();
    for i in 0..servers {
        let arrivals = start_arrivals(&events_dir.join(format!("server-{i}.jsonl")))?;
        let late: Vec<f64> = arrivals
            .iter()
            .zip(starts)
            .map(|(arrived, start)| (arrived - start) as f64 / 1e6)
            .collect();
        let mean = late.iter().sum::<f64>() / late.len().max(1) as f64;
        mean_ms.push(mean);
        jitter_ms.extend(late.iter().map(|l| (l - mean).abs()));
    }
    Ok(Lateness { mean_ms, jitter_ms })
}

/// Start skew (max minus min arrival of `/start_profile` across servers) of
/// rounds `first..first + count`, from the servers' event logs.
fn skews(events_dir: &Path, servers: usize, first: usize, count: usize) -> Result<Vec<f64>> {
    let wanted = first + count;
    let arrivals: Vec<Vec<i64>> = (0..servers)
        .map(|i| {
            let path = events_dir.join(format!("server-{i}.jsonl"));
            wait_until(
                &format!("{wanted} starts in {}", path.display()),
                Duration::from_secs(30),
                || {
                    let starts = start_arrivals(&path).ok()?;
                    (starts.len() >= wanted).then_some(starts)
                },
            )
        })
        .collect::<Result<_>>()?;
    Ok((first..wanted)
        .map(|round| {
            let instants = arrivals.iter().map(|server| server[round]);
            let max = instants.clone().max().unwrap_or(0);
            let min = instants.min().unwrap_or(0);
            (max - min) as f64 / 1e6
        })
        .collect())
}

fn start_arrivals(path: &Path) -> Result<Vec<i64>> {
    let text = std::fs::read_to_string(path)?;
    let mut starts = Vec::new();
    for line in text.lines() {
        let event: serde_json::Value = serde_json::from_str(line)?;
        if event["event"] == "start_profile" {
            starts.push(
                event["received_unix_ns"]
                    .as_i64()
                    .context("received_unix_ns")?,
            );
        }
    }
    Ok(starts)
}

/// Each agent's resident memory and CPU use while connected and idle.
async fn idle_footprint(agents: &[Proc], seconds: u64) -> Result<Footprint> {
    let before: Vec<u64> = agents
        .iter()
        .map(|a| cpu_ticks(a.pid()))
        .collect::<Result<_>>()?;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let ticks_per_second = 100.0; // USER_HZ on Linux
    let mut cpu_percent = Vec::new();
    let mut rss_mb = Vec::new();
    for (agent, before) in agents.iter().zip(before) {
        let used = cpu_ticks(agent.pid())? - before;
        cpu_percent.push(used as f64 / ticks_per_second / seconds as f64 * 100.0);
        rss_mb.push(rss_kib(agent.pid())? as f64 / 1024.0);
    }
    Ok(Footprint {
        rss_mb,
        cpu_percent,
        seconds,
    })
}

fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesized command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = stat.rsplit_once(')').context("malformed /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn worst(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NAN, f64::max)
}

fn render(args: &Args, results: &[FleetResult]) -> String {
    let machine = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let plain: Vec<&FleetResult> = results.iter().filter(|r| !r.secured).collect();
    let mut out = String::new();
    out.push_str("# Capture benchmark\n\n");
    out.push_str(&format!(
        "Machine: {machine}, {cores} cores. Date: {}. {} captures of {} ms per fleet size, \
         release build, every process on loopback.\n\n",
        today(),
        args.captures,
        args.duration_ms
    ));
    out.push_str(
        "Start skew = max minus min of the instants the simulated servers received \
         `/start_profile` in one capture.\n\n",
    );
    out.push_str("| agents | processes | rankline skew median | worst | sequential fan-out median | worst | median ratio | capture overhead median (lead time) |\n");
    out.push_str("|---|---|---|---|---|---|---|---|\n");
    for r in &plain {
        out.push_str(&format!(
            "| {} | {} | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {:.1}x | {:.0} ms ({:.0} ms) |\n",
            r.agents,
            2 * r.agents + 1,
            median(&r.rankline_skew_ms),
            worst(&r.rankline_skew_ms),
            median(&r.sequential_skew_ms),
            worst(&r.sequential_skew_ms),
            median(&r.sequential_skew_ms) / median(&r.rankline_skew_ms),
            median(&r.overhead_ms),
            r.lead_ms,
        ));
    }
    out.push_str(
        "\nWhere the skew comes from (lateness = arrival at the server minus the common start \
         instant, on this machine's one clock):\n\n\
         | agents | per-agent mean lateness: min .. max (clock-offset error + fixed latency) | \
         jitter around each agent's mean: median / worst |\n|---|---|---|\n",
    );
    for r in &plain {
        let means = &r.lateness.mean_ms;
        let min = means.iter().copied().fold(f64::NAN, f64::min);
        out.push_str(&format!(
            "| {} | {:.3} .. {:.3} ms | {:.3} / {:.3} ms |\n",
            r.agents,
            min,
            worst(means),
            median(&r.lateness.jitter_ms),
            worst(&r.lateness.jitter_ms),
        ));
    }
    for r in &plain {
        if let Some(idle) = &r.idle {
            out.push_str(&format!(
                "\nAgent idle footprint ({} agents connected, idle for {} s): RSS median {:.1} MB, \
                 max {:.1} MB; CPU median {:.3}%, max {:.3}% (resolution {:.3}%).\n",
                r.agents,
                idle.seconds,
                median(&idle.rss_mb),
                worst(&idle.rss_mb),
                median(&idle.cpu_percent),
                worst(&idle.cpu_percent),
                // One clock tick (1/100 s) over the window, in percent.
                1.0 / idle.seconds as f64,
            ));
        }
    }
    render_tls(&mut out, results);
    out.push_str(&format!(
        "\nLoad average at the end (`uptime`): {}\n",
        load_average()
    ));
    out.push_str(
        "\nCapture overhead = wall time of the whole capture (request to stored, verified files and \
         manifest) minus the profiling window; it includes the lead time before the common start, \
         the simulated server's export (550 ms, like the real server) and the uploads.\n",
    );
    out
}

/// Plain and secured runs of the same fleet size side by side.
fn render_tls(out: &mut String, results: &[FleetResult]) {
    let pairs: Vec<(&FleetResult, &FleetResult)> = results
        .iter()
        .filter(|r| !r.secured)
        .filter_map(|plain| {
            let secured = results
                .iter()
                .find(|r| r.secured && r.agents == plain.agents)?;
            Some((plain, secured))
        })
        .collect();
    if pairs.is_empty() {
        return;
    }
    out.push_str(
        "\nTLS off vs on (on = mutual TLS, a certificate per agent, and tokens on both services; \
         the same fleet size started afresh in the same run):\n\n\
         | agents | skew median off / on | worst off / on | on / off (median) | capture overhead median off / on |\n\
         |---|---|---|---|---|\n",
    );
    for (off, on) in &pairs {
        out.push_str(&format!(
            "| {} | {:.3} / {:.3} ms | {:.3} / {:.3} ms | {:.2}x | {:.0} / {:.0} ms |\n",
            off.agents,
            median(&off.rankline_skew_ms),
            median(&on.rankline_skew_ms),
            worst(&off.rankline_skew_ms),
            worst(&on.rankline_skew_ms),
            median(&on.rankline_skew_ms) / median(&off.rankline_skew_ms),
            median(&off.overhead_ms),
            median(&on.overhead_ms),
        ));
    }
    for (off, on) in &pairs {
        if let (Some(idle_off), Some(idle_on)) = (&off.idle, &on.idle) {
            out.push_str(&format!(
                "\nAgent idle footprint, TLS off / on ({} agents, {} s): RSS median {:.1} / {:.1} MB \
                 ({:.2}x), max {:.1} / {:.1} MB; CPU median {:.3}% / {:.3}%, max {:.3}% / {:.3}%.\n",
                off.agents,
                idle_off.seconds,
                median(&idle_off.rss_mb),
                median(&idle_on.rss_mb),
                median(&idle_on.rss_mb) / median(&idle_off.rss_mb),
                worst(&idle_off.rss_mb),
                worst(&idle_on.rss_mb),
                median(&idle_off.cpu_percent),
                median(&idle_on.cpu_percent),
                worst(&idle_off.cpu_percent),
                worst(&idle_on.cpu_percent),
            ));
        }
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn today() -> String {
    std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
