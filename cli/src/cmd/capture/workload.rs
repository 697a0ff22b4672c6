//! `rankline capture --workload SPEC`: requests at the selected servers'
//! public API during the profiling window. The CLI drives them (it is where
//! a user's load generator sits, and the coordinator stays a control plane):
//! the warm-up before the capture starts, the window from the moment every
//! rank is `profiling` until a rank stops (or just before the duration
//! ends), then `<profile_id>/workload.json` beside the manifest.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rankline_coordinator::Selection;
use rankline_layout::{WorkloadFile, WorkloadSummary, WORKLOAD_NAME};
use rankline_proto::agent_link_client::AgentLinkClient;
use rankline_proto::{
    capture_event, unix_now_ns, CaptureEvent, ClockProbeRequest, ListAgentsRequest, RankState,
    Selector,
};
use rankline_storage::Storage;
use rankline_workload::{summarize, workload_file, Driver, RequestRecord, WorkloadSpec};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::args::CoordinatorArg;

/// Clock probes to the coordinator; the one with the shortest round trip wins.
const CLOCK_PROBES: usize = 8;

#[derive(Debug, clap::Args)]
pub(crate) struct WorkloadArgs {
    /// Send requests during the profiling window: KIND[:KEY=VALUE,...], e.g.
    /// chat:rate=20,prompt=512,output=64,warmup=4 (see SPEC below).
    #[arg(long, value_name = "SPEC")]
    workload: Option<String>,

    /// Send the workload here instead of to each selected server's URL (the
    /// agents' --server); repeat for several, e.g. a PD router.
    #[arg(long = "workload-url", value_name = "URL", requires = "workload")]
    workload_urls: Vec<String>,

    /// `Authorization: Bearer` key for the servers (their --api-key).
    #[arg(long, env = "RANKLINE_WORKLOAD_API_KEY", requires = "workload")]
    workload_api_key: Option<String>,

    /// With --workload: a window in which no request succeeded is not a
    /// failure.
    #[arg(long, requires = "workload")]
    allow_idle: bool,
}

/// A prepared workload: the model read, the warm-up done.
pub(crate) struct Workload {
    driver: Arc<Driver>,
    allow_idle: bool,
    /// The CLI's clock minus the coordinator's, when measured.
    offset_ns: Option<i64>,
    window: Option<Running>,
    duration_ms: Option<u64>,
    start_at_unix_ns: i64,
    ranks: HashMap<String, RankState>,
    total_ranks: usize,
    storage_url: String,
    profile_id: String,
    stopped_early: bool,
}

struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Vec<RequestRecord>>,
}

impl WorkloadArgs {
    /// Prepares the workload the flags ask for, before the capture starts
    /// (so a server that refuses it fails the command before anything is
    /// profiled). `None` without --workload.
    pub(crate) async fn prepare(
        &self,
        coordinator: &CoordinatorArg,
        select: &[Selector],
        duration: Option<Duration>,
    ) -> anyhow::Result<Option<Workload>> {
        let Some(text) = &self.workload else {
            return Ok(None);
        };
        let spec = read_spec(text)?;
        let targets = if self.workload_urls.is_empty() {
            server_urls(coordinator, select).await?
        } else {
            self.workload_urls.clone()
        };
        eprintln!(
            "workload {spec}: preparing {} server(s): {}",
            targets.len(),
            targets.join(", ")
        );
        let driver = Driver::prepare(spec, targets, self.workload_api_key.clone())
            .await
            .context("--workload")?;
        eprintln!(
            "workload ready: model {}, {} warm-up request(s) answered",
            driver.model(),
            driver.warmup_sent()
        );
        let offset_ns = clock_offset(coordinator).await;
        Ok(Some(Workload {
            driver: Arc::new(driver),
            allow_idle: self.allow_idle,
            offset_ns,
            window: None,
            duration_ms: duration.map(|d| d.as_millis() as u64),
            start_at_unix_ns: 0,
            ranks: HashMap::new(),
            total_ranks: 0,
            storage_url: String::new(),
            profile_id: String::new(),
            stopped_early: false,
        }))
    }
}

/// A SPEC, or `@FILE` holding one (`#` starts a comment).
fn read_spec(text: &str) -> anyhow::Result<WorkloadSpec> {
    let text = match text.strip_prefix('@') {
        Some(path) => {
            let content = std::fs::read_to_string(path)
                .with_context(|| format!("--workload @{path}: cannot read the SPEC file"))?;
            content
                .lines()
                .map(|line| line.split('#').next().unwrap_or("").trim())
                .filter(|line| !line.is_empty())
                .collect::<Vec<_>>()
                .join(",")
                .replacen(',', ":", usize::from(!content.contains(':')))
        }
        None => text.to_string(),
    };
    Ok(text.parse()?)
}

/// The distinct server URLs of the connected agents the selection picks
/// (trigger agents: a multi-host server's other nodes serve no API).
async fn server_urls(
    coordinator: &CoordinatorArg,
    select: &[Selector],
) -> anyhow::Result<Vec<String>> {
    let selection = Selection::new(select)?;
    let mut client = coordinator.connect().await?;
    let agents = client
        .list_agents(ListAgentsRequest {})
        .await
        .map_err(|status| anyhow::anyhow!("listing agents for --workload: {}", status.message()))?
        .into_inner()
        .agents;
    let urls: BTreeSet<String> = agents
        .iter()
        .filter(|agent| agent.connected)
        .filter_map(|agent| agent.identity.as_ref())
        .filter(|identity| identity.trigger && selection.matches(identity))
        .map(|identity| identity.server_url.trim_end_matches('/').to_string())
        .filter(|url| !url.is_empty())
        .collect();
    Ok(urls.into_iter().collect())
}

/// The CLI's clock minus the coordinator's, from the probe with the
/// shortest round trip; `None` when the coordinator does not answer probes
/// from the CLI (they are an agent call, which a token may not allow).
async fn clock_offset(coordinator: &CoordinatorArg) -> Option<i64> {
    let measure = async {
        let security = coordinator.security.security().ok()?;
        let url = security.normalize_url(&coordinator.coordinator);
        let channel = security.endpoint(&url).ok()?.connect().await.ok()?;
        let mut client = AgentLinkClient::new(security.wrap(channel));
        let mut best: Option<(i64, i64)> = None;
        for _ in 0..CLOCK_PROBES {
            let t1 = unix_now_ns();
            let answer = client
                .clock_probe(ClockProbeRequest { t1_unix_ns: t1 })
                .await
                .ok()?
                .into_inner();
            let t4 = unix_now_ns();
            let round_trip = (t4 - t1) - (answer.t3_unix_ns - answer.t2_unix_ns);
            let offset = ((t1 - answer.t2_unix_ns) + (t4 - answer.t3_unix_ns)) / 2;
            if best.is_none_or(|(rtt, _)| round_trip < rtt) {
                best = Some((round_trip, offset));
            }
        }
        best.map(|(_, offset)| offset)
    };
    match tokio::time::timeout(Duration::from_secs(5), measure).await {
        Ok(Some(offset)) => Some(offset),
        _ => {
            tracing::warn!(
                "the coordinator's clock could not be probed; request times are taken as they are"
            );
            None
        }
    }
}

/// How long before the stop the window closes: requests in flight then
/// still end inside the profile.
fn closing_margin(duration_ms: u64) -> Duration {
    Duration::from_millis((duration_ms / 10).clamp(20, 500))
}

/// How long after every rank reports `profiling` the first request goes
/// out: a rank's state reaches us after its server started tracing, but the
/// request's instant is mapped onto the coordinator's clock with an error
/// bound, and the server's first traced step begins a little later.
const OPENING_MARGIN: Duration = Duration::from_millis(20);

impl Workload {
    /// Follows the capture: opens the window once every rank profiles,
    /// closes it when one stops.
    pub(crate) fn observe(&mut self, event: &CaptureEvent) {
        match &event.kind {
            Some(capture_event::Kind::Accepted(accepted)) => {
                self.total_ranks = accepted.ranks.len();
                self.start_at_unix_ns = accepted.start_at_unix_ns;
                self.storage_url = accepted.storage_url.clone();
                self.profile_id = accepted.profile_id.clone();
            }
            Some(capture_event::Kind::Rank(progress)) => {
                let agent = progress.agent.as_ref().map(|a| a.agent_id.clone());
                let state = progress.update.as_ref().map(|u| u.state());
                if let (Some(agent), Some(state)) = (agent, state) {
                    self.ranks.insert(agent, state);
                }
                self.step();
            }
            Some(capture_event::Kind::Finished(summary)) => {
                self.storage_url = summary.storage_url.clone();
                self.profile_id = summary.profile_id.clone();
                self.stop();
            }
            None => {}
        }
    }

    fn step(&mut self) {
        let profiling = self
            .ranks
            .values()
            .filter(|s| **s == RankState::Profiling)
            .count();
        let past = self
            .ranks
            .values()
            .any(|s| (*s as i32) > (RankState::Profiling as i32));
        if self.window.is_none() && !past && self.total_ranks > 0 && profiling == self.total_ranks {
            self.open();
        } else if past {
            self.stopped_early |= self.window.is_none();
            self.stop();
        }
    }

    fn open(&mut self) {
        let (stop, stopped) = oneshot::channel::<()>();
        let deadline = self.duration_ms.map(|ms| {
            let end_local =
                self.start_at_unix_ns + self.offset_ns.unwrap_or(0) + (ms as i64) * 1_000_000
                    - closing_margin(ms).as_nanos() as i64;
            tokio::time::Instant::now()
                + Duration::from_nanos((end_local - unix_now_ns()).max(0) as u64)
        });
        let driver = self.driver.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(OPENING_MARGIN).await;
            let closed = async move {
                match deadline {
                    Some(closes_at) => {
                        tokio::select! {
                            _ = stopped => {}
                            () = tokio::time::sleep_until(closes_at) => {}
                        }
                    }
                    None => {
                        let _ = stopped.await;
                    }
                }
            };
            driver.run(closed).await
        });
        eprintln!("workload: every rank is profiling; sending requests");
        self.window = Some(Running {
            stop: Some(stop),
            task,
        });
    }

    fn stop(&mut self) {
        if let Some(stop) = self.window.as_mut().and_then(|w| w.stop.take()) {
            let _ = stop.send(());
        }
    }

    /// The capture it follows (empty until the coordinator accepted it).
    pub(crate) fn profile_id(&self) -> &str {
        &self.profile_id
    }

    /// Waits for the requests in flight, writes `workload.json` beside the
    /// manifest and returns the summary.
    pub(crate) async fn finish(mut self) -> anyhow::Result<WorkloadSummary> {
        self.stop();
        let records = match self.window.take() {
            Some(running) => running.task.await.context("the workload task")?,
            None => Vec::new(),
        };
        let mut summary = summarize(&self.driver, &records, self.allow_idle);
        summary.clock_offset_ns = self.offset_ns;
        if self.stopped_early && records.is_empty() && summary.reason.is_some() {
            summary.reason = Some(
                "no request was sent: not every rank reached profiling (see the ranks above)"
                    .into(),
            );
        }
        let file = workload_file(
            &summary,
            &records,
            self.driver.spec().kind.as_str(),
            self.offset_ns.unwrap_or(0),
            self.start_at_unix_ns,
        );
        let storage = Storage::open(&self.storage_url)?;
        let key = workload_key(&self.profile_id);
        storage
            .put_bytes(&key, serde_json::to_vec(&file)?)
            .await
            .with_context(|| format!("writing {}/{key}", storage.url()))?;
        Ok(summary)
    }
}

pub(crate) fn workload_key(profile_id: &str) -> String {
    format!("{profile_id}/{WORKLOAD_NAME}")
}

/// A capture's workload summary from storage, when it had one.
pub(crate) async fn stored_summary(storage_url: &str, profile_id: &str) -> Option<WorkloadSummary> {
    let storage = Storage::open(storage_url).ok()?;
    let bytes = storage.get_bytes(&workload_key(profile_id)).await.ok()?;
    match serde_json::from_slice::<WorkloadFile>(&bytes) {
        Ok(file) => Some(file.workload),
        Err(error) => {
            tracing::warn!("{storage_url}/{profile_id}/{WORKLOAD_NAME} is unreadable: {error}");
            None
        }
    }
}

/// The workload's lines for people: counts, latency, the distinct errors.
pub(crate) fn summary_text(summary: &WorkloadSummary) -> String {
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1} ms"));
    let mut text = format!(
        "workload {} (model {}, {} server(s)): sent {}, ok {}, failed {}, p50 {}, p99 {}, {} prompt + {} output tokens\n",
        summary.spec,
        summary.model,
        summary.targets.len(),
        summary.sent,
        summary.ok,
        summary.failed,
        ms(summary.p50_ms),
        ms(summary.p99_ms),
        summary.prompt_tokens,
        summary.output_tokens,
    );
    for error in summary.errors.iter().take(5) {
        text.push_str(&format!("  {}x {}\n", error.count, error.message));
    }
    if let Some(reason) = &summary.reason {
        text.push_str(&format!("workload failed: {reason}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_file_reads_like_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.spec");
        std::fs::write(
            &path,
            "# the seed 004 request, done right\nscore\nrate=5\nprompt=8 # short\n",
        )
        .unwrap();
        let spec = read_spec(&format!("@{}", path.display())).unwrap();
        assert_eq!(spec.kind, rankline_workload::RequestKind::Score);
        assert_eq!(spec.prompt_tokens, 8);
        let inline = read_spec("chat:rate=5,prompt=8").unwrap();
        assert_eq!(inline.prompt_tokens, 8);
    }

    #[test]
    fn the_window_closes_before_the_stop() {
        assert_eq!(closing_margin(1000), Duration::from_millis(100));
        assert_eq!(closing_margin(50), Duration::from_millis(20));
        assert_eq!(closing_margin(60_000), Duration::from_millis(500));
    }
}
