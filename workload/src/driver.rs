//! Sends a SPEC's requests at servers: the model name read first, warm-up
//! requests before the window, then paced requests until told to stop (or
//! until a server refuses them: every later request would fail the same way).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::request;
use crate::spec::{Pace, WorkloadSpec};
use crate::WorkloadError;

/// How long model discovery may take per call.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// How one request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Ok {
        prompt_tokens: u64,
        output_tokens: u64,
    },
    /// `status` is `None` when no HTTP answer came (refused, timed out).
    Failed {
        status: Option<u16>,
        message: String,
    },
}

/// One request as the driver saw it, on the driver's wall clock.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    /// Index into the driver's targets.
    pub target: usize,
    pub start_unix_ns: i64,
    pub end_unix_ns: i64,
    pub outcome: Outcome,
}

impl RequestRecord {
    pub fn latency_ms(&self) -> f64 {
        (self.end_unix_ns - self.start_unix_ns) as f64 / 1e6
    }

    /// A 4xx: the server refuses what is sent, not a passing fault.
    pub fn refused(&self) -> bool {
        matches!(self.outcome, Outcome::Failed { status: Some(s), .. } if (400..500).contains(&s))
    }
}

/// A workload ready to run: its model known and its warm-up done.
pub struct Driver {
    client: reqwest::Client,
    spec: WorkloadSpec,
    targets: Vec<String>,
    api_key: Option<String>,
    model: String,
    warmup_sent: u64,
}

fn unix_now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

impl Driver {
    /// Reads the model name (unless the SPEC gives one) and sends the
    /// warm-up requests; a warm-up the server refuses is an error, so a
    /// malformed workload fails before any profile is taken.
    pub async fn prepare(
        spec: WorkloadSpec,
        targets: Vec<String>,
        api_key: Option<String>,
    ) -> Result<Driver, WorkloadError> {
        if targets.is_empty() {
            return Err(WorkloadError::NoTargets);
        }
        let targets: Vec<String> = targets
            .into_iter()
            .map(|t| t.trim_end_matches('/').to_string())
            .collect();
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .map_err(|e| WorkloadError::Client(e.to_string()))?;
        let mut driver = Driver {
            client,
            spec,
            targets,
            api_key,
            model: String::new(),
            warmup_sent: 0,
        };
        driver.model = match driver.spec.model.clone() {
            Some(model) => model,
            None => driver.discover_model().await?,
        };
        tracing::info!(model = %driver.model, targets = driver.targets.len(), "workload ready");
        driver.warm_up().await?;
        Ok(driver)
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn targets(&self) -> &[String] {
        &self.targets
    }

    pub fn spec(&self) -> &WorkloadSpec {
        &self.spec
    }

    pub fn warmup_sent(&self) -> u64 {
        self.warmup_sent
    }

    /// `/v1/models` (what the OpenAI routes check names against, and all
    /// vLLM has), else SGLang's `/get_model_info`.
    async fn discover_model(&self) -> Result<String, WorkloadError> {
        let url = &self.targets[0];
        let mut tried = Vec::new();
        for (path, pick) in [
            ("/v1/models", "data.0.id"),
            ("/get_model_info", "model_path"),
        ] {
            match self.get_json(&format!("{url}{path}")).await {
                Ok(answer) => {
                    let found = pick
                        .split('.')
                        .try_fold(&answer, |value, key| match key.parse::<usize>() {
                            Ok(i) => value.get(i),
                            Err(_) => value.get(key),
                        })
                        .and_then(Value::as_str)
                        .filter(|name| !name.is_empty());
                    match found {
                        Some(name) => return Ok(name.to_string()),
                        None => tried.push(format!("{path}: no {pick} in {answer}")),
                    }
                }
                Err(why) => tried.push(format!("{path}: {why}")),
            }
        }
        Err(WorkloadError::NoModel {
            url: url.clone(),
            tried: tried.join("; "),
        })
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let answer = self
            .authorized(self.client.get(url))
            .timeout(DISCOVERY_TIMEOUT)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = answer.status();
        let text = answer.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!(
                "HTTP {}: {}",
                status.as_u16(),
                request::server_message(&text)
            ));
        }
        serde_json::from_str(&text).map_err(|e| format!("not JSON ({e})"))
    }

    fn authorized(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    async fn warm_up(&mut self) -> Result<(), WorkloadError> {
        let rounds = self.spec.warmup;
        let this = &*self;
        let per_target = (0..this.targets.len()).map(|target| async move {
            for i in 0..rounds {
                let record = this.send(target, u64::MAX - u64::from(i)).await;
                if let Outcome::Failed { status, message } = record.outcome {
                    return Err(WorkloadError::WarmUp {
                        url: this.targets[target].clone(),
                        path: this.spec.kind.path(),
                        status,
                        message,
                    });
                }
            }
            Ok(())
        });
        for result in join_all(per_target).await {
            result?;
        }
        self.warmup_sent = u64::from(rounds) * self.targets.len() as u64;
        Ok(())
    }

    /// Sends one request to `target` and waits for its answer.
    async fn send(&self, target: usize, seed: u64) -> RequestRecord {
        let url = format!("{}{}", self.targets[target], self.spec.kind.path());
        let body = request::body(&self.spec, &self.model, seed);
        let start_unix_ns = unix_now_ns();
        let started = Instant::now();
        let answer = self
            .authorized(self.client.post(&url))
            .timeout(self.spec.timeout)
            .json(&body)
            .send()
            .await;
        let outcome = match answer {
            Err(error) => Outcome::Failed {
                status: None,
                message: transport_message(&error),
            },
            Ok(answer) => {
                let status = answer.status();
                match answer.text().await {
                    Err(error) => Outcome::Failed {
                        status: Some(status.as_u16()),
                        message: transport_message(&error),
                    },
                    Ok(text) if status.is_success() => {
                        let parsed = serde_json::from_str(&text).unwrap_or(Value::Null);
                        let (prompt_tokens, output_tokens) = request::tokens(&self.spec, &parsed);
                        Outcome::Ok {
                            prompt_tokens,
                            output_tokens,
                        }
                    }
                    Ok(text) => Outcome::Failed {
                        status: Some(status.as_u16()),
                        message: request::server_message(&text),
                    },
                }
            }
        };
        RequestRecord {
            target,
            start_unix_ns,
            end_unix_ns: start_unix_ns + started.elapsed().as_nanos() as i64,
            outcome,
        }
    }

    /// Sends paced requests to every target until `stop` completes (or a
    /// server refuses a request, or `max` is reached everywhere), then
    /// waits for the requests in flight.
    pub async fn run(self: Arc<Self>, stop: impl Future<Output = ()>) -> Vec<RequestRecord> {
        let (stopping, stopped) = watch::channel(false);
        let stopping = Arc::new(stopping);
        let mut senders = JoinSet::new();
        for target in 0..self.targets.len() {
            let (driver, stopping, stopped) = (self.clone(), stopping.clone(), stopped.clone());
            senders.spawn(async move { driver.drive(target, stopping, stopped).await });
        }
        let all_done = async {
            let mut records = Vec::new();
            while let Some(done) = senders.join_next().await {
                match done {
                    Ok(mut sent) => records.append(&mut sent),
                    Err(error) => tracing::error!("a workload sender stopped: {error}"),
                }
            }
            records
        };
        tokio::pin!(all_done);
        tokio::select! {
            records = &mut all_done => return sort(records),
            () = stop => {}
        }
        let _ = stopping.send(true);
        sort(all_done.await)
    }

    /// One target's requests, paced by the SPEC.
    async fn drive(
        self: Arc<Self>,
        target: usize,
        stopping: Arc<watch::Sender<bool>>,
        stopped: watch::Receiver<bool>,
    ) -> Vec<RequestRecord> {
        let limit = self.spec.max_requests.unwrap_or(u64::MAX);
        let issued = Arc::new(AtomicU64::new(0));
        let next_seed = {
            let issued = issued.clone();
            move || {
                let n = issued.fetch_add(1, Ordering::SeqCst);
                (n < limit).then_some(n * 1024 + target as u64)
            }
        };
        let mut in_flight = JoinSet::new();
        let send_one = |seed: u64, in_flight: &mut JoinSet<RequestRecord>| {
            let (driver, stopping) = (self.clone(), stopping.clone());
            in_flight.spawn(async move {
                let record = driver.send(target, seed).await;
                if record.refused() {
                    let _ = stopping.send(true);
                }
                record
            });
        };
        match self.spec.pace {
            Pace::Rate(rate) => {
                let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
                let mut stopped = stopped.clone();
                loop {
                    tokio::select! {
                        _ = stopped.wait_for(|s| *s) => break,
                        _ = ticker.tick() => match next_seed() {
                            Some(seed) => send_one(seed, &mut in_flight),
                            None => break,
                        },
                    }
                }
            }
            Pace::Concurrency(lanes) => {
                let lanes = (0..lanes).map(|_| {
                    let (driver, stopping, next_seed) =
                        (self.clone(), stopping.clone(), next_seed.clone());
                    let stopped = stopped.clone();
                    async move {
                        let mut records = Vec::new();
                        while !*stopped.borrow() {
                            let Some(seed) = next_seed() else { break };
                            let record = driver.send(target, seed).await;
                            if record.refused() {
                                let _ = stopping.send(true);
                            }
                            records.push(record);
                        }
                        records
                    }
                });
                return join_all(lanes).await.into_iter().flatten().collect();
            }
        }
        in_flight.join_all().await
    }
}

fn sort(mut records: Vec<RequestRecord>) -> Vec<RequestRecord> {
    records.sort_by_key(|r| (r.start_unix_ns, r.target));
    records
}

/// A transport failure with its causes (reqwest's top-level text alone
/// says only "error sending request").
fn transport_message(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_string()
    } else {
        error.to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
