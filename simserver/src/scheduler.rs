//! The simulated scheduler process: it owns the profiler, runs a forward
//! step every `step_interval` whether or not a profile runs (each step's
//! first collective is a real rendezvous with the other ranks), and handles
//! the profiling requests between steps, as the real scheduler does:
//! starting takes `start_delay`, stopping blocks it until the files are
//! written, and `num_steps` stops the profile by itself.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;

use rankline_layout::sglang_ep_rank;

use crate::config::ServerKind;
use crate::link::{Command, LinkHandle, Release};
use crate::server::Shared;
use crate::trace::plan::SOLO_COLLECTIVE_NS;
use crate::trace::{
    jax_run_dir, python_time_string, write_jax_session, write_kineto_files, write_kineto_session,
    KinetoRank, Session, StepRecord, TraceShape, WriteOptions,
};
use crate::{unix_now_ns, SimError};

/// The `/start_profile` body fields the server acts on; others are ignored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct StartParams {
    pub output_dir: Option<String>,
    pub start_step: Option<u64>,
    pub num_steps: Option<u64>,
    pub host_tracer_level: Option<u32>,
    pub python_tracer_level: Option<u32>,
    /// SGLang: Python stacks (Kineto `python_function` events).
    pub with_stack: Option<bool>,
    /// SGLang: `[<prefix>-]` in front of the file name.
    pub profile_prefix: Option<String>,
    /// SGLang: one file per stage, `-EXTEND` and `-DECODE`.
    pub profile_by_stage: Option<bool>,
    /// Node 0's own profile id, passed to the other nodes. A `profile_id`
    /// sent by a client is dropped before it gets here (the real server
    /// ignores it).
    #[serde(default)]
    pub profile_id: Option<String>,
}

/// Why a profiling request failed; the HTTP answer is a bare 500 either way,
/// the reason goes to the log as on the real server.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProfileError {
    #[error("Profiling is already in progress. Call /stop_profile first.")]
    AlreadyInProgress,
    #[error("Profiling is not in progress. Call /start_profile first.")]
    NotInProgress,
    #[error("{0}")]
    Failed(String),
}

pub(crate) type Reply = oneshot::Sender<Result<(), ProfileError>>;

/// What the HTTP side asks of the scheduler.
pub(crate) enum Request {
    Start {
        params: StartParams,
        received: Instant,
        reply: Reply,
    },
    Stop {
        reply: Reply,
    },
    /// Answered after the next forward step.
    HealthGenerate {
        reply: oneshot::Sender<()>,
    },
    /// An inference request: it joins the running batch and is answered
    /// after `steps` forward steps.
    Generate {
        steps: u64,
        reply: oneshot::Sender<()>,
    },
}

/// A request in the running batch.
struct InBatch {
    steps_left: u64,
    reply: oneshot::Sender<()>,
}

/// How this process takes part in collectives.
pub(crate) enum Rendezvous {
    /// No peers: each collective completes after [`SOLO_COLLECTIVE_NS`],
    /// and the round is the step number.
    Solo,
    Linked(LinkHandle),
}

/// A start, resolved against the server's defaults.
struct StartPlan {
    output_dir: PathBuf,
    host_tracer_level: u32,
    python_tracer: bool,
    num_steps: Option<u64>,
    profile_id: String,
    prefix: Option<String>,
    /// SGLang `profile_by_stage`: the steps go to an `-EXTEND` and a
    /// `-DECODE` file (the simulated server alternates them).
    by_stage: bool,
}

/// The stages of `profile_by_stage`, with the step parity each takes.
const STAGES: [(&str, u64); 2] = [("EXTEND", 1), ("DECODE", 0)];

enum Profile {
    Idle,
    /// Waiting for forward step `begin_at_step` (`start_step`).
    Armed {
        plan: StartPlan,
        begin_at_step: u64,
    },
    Running(Running),
}

struct Running {
    plan: StartPlan,
    start_unix_ns: i64,
    steps: Vec<StepRecord>,
    stop_at_step: Option<u64>,
}

pub(crate) struct Scheduler {
    shared: Arc<Shared>,
    requests: mpsc::Receiver<Request>,
    commands: mpsc::UnboundedReceiver<Command>,
    rendezvous: Rendezvous,
    forward_ct: u64,
    profile: Profile,
    health_waiters: Vec<oneshot::Sender<()>>,
    /// The running batch of inference requests.
    batch: Vec<InBatch>,
    /// `--hang-stop`: stop requests that will never be answered.
    parked: Vec<Reply>,
    crash_at_next_step: bool,
    /// When step 0 would have run; a solo scheduler with nothing to do
    /// sleeps and counts the steps it skipped from here.
    started: Instant,
}

/// A step waiting at the barrier: when it arrived, and the release to come.
type Pending = Option<(i64, oneshot::Receiver<Release>)>;

async fn released(pending: &mut Pending) -> (i64, Option<Release>) {
    match pending {
        Some((arrive, release)) => (*arrive, release.await.ok()),
        None => std::future::pending().await,
    }
}

impl Scheduler {
    pub(crate) fn new(
        shared: Arc<Shared>,
        requests: mpsc::Receiver<Request>,
        commands: mpsc::UnboundedReceiver<Command>,
        rendezvous: Rendezvous,
    ) -> Scheduler {
        Scheduler {
            shared,
            requests,
            commands,
            rendezvous,
            forward_ct: 0,
            profile: Profile::Idle,
            health_waiters: Vec::new(),
            batch: Vec::new(),
            parked: Vec::new(),
            crash_at_next_step: false,
            started: Instant::now(),
        }
    }

    /// Whether steps can be skipped: with no peers waiting in collectives and
    /// nothing recording or waiting for a step, a step changes nothing but
    /// the step counter, which [`Scheduler::catch_up`] restores. This keeps
    /// an idle server's CPU use at zero.
    fn idle_solo(&self) -> bool {
        matches!(self.rendezvous, Rendezvous::Solo)
            && matches!(self.profile, Profile::Idle)
            && self.health_waiters.is_empty()
            && self.batch.is_empty()
            && !self.crash_at_next_step
    }

    /// Counts the steps skipped while idle.
    fn catch_up(&mut self) {
        let step = self.shared.config.step_interval.as_nanos().max(1);
        let due = (self.started.elapsed().as_nanos() / step) as u64;
        self.forward_ct = self.forward_ct.max(due);
    }

    pub(crate) async fn run(mut self) {
        let mut shutdown = self.shared.shutdown.clone();
        let mut ticker = tokio::time::interval(self.shared.config.step_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut pending: Pending = None;
        loop {
            if self.shared.crashed.load(Ordering::SeqCst) {
                // A dead scheduler answers nothing; queued requests wait with it.
                crate::stopped(&mut shutdown).await;
                return;
            }
            tokio::select! {
                _ = crate::stopped(&mut shutdown) => return,
                Some(request) = self.requests.recv() => {
                    if self.idle_solo() {
                        self.catch_up();
                    }
                    self.handle(request).await;
                }
                Some(command) = self.commands.recv() => self.command(command).await,
                _ = ticker.tick(), if pending.is_none() && !self.idle_solo() => {
                    let arrive = unix_now_ns();
                    match &self.rendezvous {
                        Rendezvous::Solo => {
                            let round = self.forward_ct + 1;
                            let release = Release { round, unix_ns: arrive + SOLO_COLLECTIVE_NS };
                            self.step_done(arrive, release).await;
                        }
                        Rendezvous::Linked(link) => pending = Some((arrive, link.arrive())),
                    }
                }
                (arrive, release) = released(&mut pending) => {
                    pending = None;
                    match release {
                        Some(release) => self.step_done(arrive, release).await,
                        None => tracing::warn!("the collective link closed; steps stop"),
                    }
                }
            }
        }
    }

    async fn handle(&mut self, request: Request) {
        match request {
            Request::Start {
                params,
                received,
                reply,
            } => {
                let result = self.start(params, received).await;
                if let Err(error) = &result {
                    tracing::error!("start_profile failed: {error}");
                }
                let _ = reply.send(result);
            }
            Request::Stop { reply } => {
                if self.shared.config.faults.hang_stop
                    && matches!(self.profile, Profile::Running(_))
                {
                    tracing::warn!("--hang-stop: this stop will never be answered");
                    self.parked.push(reply);
                    return;
                }
                let result = self.stop().await;
                if let Err(error) = &result {
                    tracing::error!("stop_profile failed: {error}");
                }
                let _ = reply.send(result);
            }
            Request::HealthGenerate { reply } => self.health_waiters.push(reply),
            Request::Generate { steps, reply } => self.batch.push(InBatch {
                steps_left: steps.max(1),
                reply,
            }),
        }
    }

    /// A command node 0 broadcast: this node does the same on its own files.
    async fn command(&mut self, command: Command) {
        let result = match command {
            Command::Start { params } => self.start(params, Instant::now()).await,
            Command::Stop => self.stop().await,
        };
        if let Err(error) = result {
            tracing::warn!("a profiling command from node 0 failed here: {error}");
        }
    }

    fn broadcast(&self, command: Command) {
        if let Rendezvous::Linked(link) = &self.rendezvous {
            if self.shared.config.broadcasts_commands() && self.shared.config.node_rank == 0 {
                link.broadcast(command);
            }
        }
    }

    async fn start(
        &mut self,
        mut params: StartParams,
        received: Instant,
    ) -> Result<(), ProfileError> {
        if !matches!(self.profile, Profile::Idle) || self.crash_at_next_step {
            return Err(ProfileError::AlreadyInProgress);
        }
        let faults = &self.shared.config.faults;
        if faults.fail_start {
            return Err(ProfileError::Failed(
                "refusing to start: --fail-start is set".into(),
            ));
        }
        let plan = self.start_plan(&params)?;
        tracing::info!(
            "Profiling starts. Traces will be saved to: {} (with profile id: {})",
            plan.output_dir.display(),
            plan.profile_id
        );
        params.profile_id = Some(plan.profile_id.clone());
        self.broadcast(Command::Start {
            params: params.clone(),
        });
        self.shared.profiling.store(true, Ordering::SeqCst);
        if params.start_step.is_some()
            && params.num_steps.is_some()
            && faults.emulate_start_step_hang
        {
            self.crash_at_next_step = true;
            return Ok(());
        }
        match params.start_step {
            Some(start_step) => {
                let begin_at_step = start_step.max(self.forward_ct + 1);
                self.profile = Profile::Armed {
                    plan,
                    begin_at_step,
                };
            }
            None => self.begin(plan, received).await,
        }
        Ok(())
    }

    fn start_plan(&self, params: &StartParams) -> Result<StartPlan, ProfileError> {
        let config = &self.shared.config;
        let output_dir = match params.output_dir.as_deref().filter(|dir| !dir.is_empty()) {
            Some(url) if url.contains("://") => {
                return Err(ProfileError::Failed(format!(
                    "output_dir {url}: the simulated server writes local folders only; give a path"
                )))
            }
            Some(dir) => PathBuf::from(dir),
            None => self.shared.default_output_dir.clone(),
        };
        std::fs::create_dir_all(&output_dir).map_err(|error| {
            ProfileError::Failed(format!(
                "cannot create output_dir {}: {error}",
                output_dir.display()
            ))
        })?;
        // The real server treats level 0 as unset.
        let host_tracer_level = params
            .host_tracer_level
            .filter(|l| *l > 0)
            .unwrap_or(2)
            .min(3);
        let python_tracer = match config.kind {
            ServerKind::SglangJax => params
                .python_tracer_level
                .filter(|l| *l > 0)
                .map_or(config.python_tracer_default, |_| true),
            ServerKind::Sglang | ServerKind::Vllm => {
                params.with_stack.unwrap_or(config.python_tracer_default)
            }
        };
        Ok(StartPlan {
            output_dir,
            host_tracer_level,
            python_tracer,
            num_steps: params.num_steps.filter(|n| *n > 0),
            profile_id: params
                .profile_id
                .clone()
                .unwrap_or_else(|| python_time_string(unix_now_ns())),
            prefix: params.profile_prefix.clone(),
            by_stage: config.kind == ServerKind::Sglang && params.profile_by_stage == Some(true),
        })
    }

    /// Starts recording once the profiler has come up (`start_delay` after
    /// the request arrived).
    async fn begin(&mut self, plan: StartPlan, received: Instant) {
        let ready = received + self.shared.config.start_delay;
        tokio::time::sleep_until(ready.into()).await;
        let stop_at_step = plan.num_steps.map(|n| self.forward_ct + n);
        self.profile = Profile::Running(Running {
            plan,
            start_unix_ns: unix_now_ns(),
            steps: Vec::new(),
            stop_at_step,
        });
    }

    async fn stop(&mut self) -> Result<(), ProfileError> {
        if !matches!(self.profile, Profile::Running(_)) {
            return Err(ProfileError::NotInProgress);
        }
        if self.shared.config.faults.fail_stop {
            return Err(ProfileError::Failed(
                "refusing to stop: --fail-stop is set".into(),
            ));
        }
        self.broadcast(Command::Stop);
        let Profile::Running(running) = std::mem::replace(&mut self.profile, Profile::Idle) else {
            return Err(ProfileError::NotInProgress);
        };
        let delay = self.shared.config.export_delay;
        self.export(running, delay)
            .await
            .map_err(|error| ProfileError::Failed(error.to_string()))
    }

    async fn step_done(&mut self, arrive_unix_ns: i64, release: Release) {
        self.forward_ct += 1;
        for waiter in self.health_waiters.drain(..) {
            let _ = waiter.send(());
        }
        let batch_size = u32::try_from(self.batch.len()).unwrap_or(u32::MAX);
        self.advance_batch();
        if self.crash_at_next_step {
            tracing::error!(
                "Scheduler hit an exception: TypeError: SchedulerProfilerMixin.start_profile() missing 2 \
                 required positional arguments: 'python_tracer_level' and 'profile_id' \
                 (--emulate-start-step-hang: every later request hangs)"
            );
            self.shared.crashed.store(true, Ordering::SeqCst);
            return;
        }
        if let Profile::Armed { begin_at_step, .. } = &self.profile {
            if self.forward_ct >= *begin_at_step {
                if let Profile::Armed { plan, .. } =
                    std::mem::replace(&mut self.profile, Profile::Idle)
                {
                    self.begin(plan, Instant::now()).await;
                }
            }
            return;
        }
        let Profile::Running(running) = &mut self.profile else {
            return;
        };
        if arrive_unix_ns >= running.start_unix_ns {
            running.steps.push(StepRecord {
                step_num: self.forward_ct,
                round: release.round,
                arrive_unix_ns,
                release_unix_ns: release.unix_ns,
                batch_size,
            });
        }
        if running
            .stop_at_step
            .is_some_and(|last| self.forward_ct >= last)
        {
            if let Profile::Running(running) = std::mem::replace(&mut self.profile, Profile::Idle) {
                tracing::info!("Stop profiling... (num_steps reached)");
                let delay = self.shared.config.auto_stop_export_delay;
                if let Err(error) = self.export(running, delay).await {
                    tracing::error!("writing the profile failed: {error}");
                }
            }
        }
    }

    /// One forward step for every request in the batch; the finished ones
    /// get their answer (a client that gave up is simply dropped).
    fn advance_batch(&mut self) {
        let (done, running): (Vec<InBatch>, Vec<InBatch>) = std::mem::take(&mut self.batch)
            .into_iter()
            .filter(|request| !request.reply.is_closed())
            .map(|mut request| {
                request.steps_left -= 1;
                request
            })
            .partition(|request| request.steps_left == 0);
        self.batch = running;
        for request in done {
            let _ = request.reply.send(());
        }
    }

    /// Stops recording and writes the files: the JAX folder at once, the
    /// files `delay` later. Returns once they are on disk.
    async fn export(
        &mut self,
        running: Running,
        delay: std::time::Duration,
    ) -> Result<(), SimError> {
        let config = &self.shared.config;
        let stop_unix_ns = unix_now_ns();
        let plan = running.plan;
        let session = Session {
            profile_start_unix_ns: running.start_unix_ns,
            profile_stop_unix_ns: stop_unix_ns,
            steps: running.steps,
            shape: TraceShape {
                events_per_step: config.events_per_step,
                collectives_per_step: config.collectives_per_step,
                local_devices: config.devices_on_host(),
                host_tracer_level: plan.host_tracer_level,
                python_tracer: plan.python_tracer,
                step_ns: config.step_interval.as_nanos() as i64,
                jitter_seed: config.jitter_seed(),
                gzip_level: 6,
            },
        };
        let options = WriteOptions {
            skip: config.faults.missing_file,
            pace: config.faults.slow_write,
        };
        let write_files = !config.faults.no_files;
        let result = match config.kind {
            ServerKind::SglangJax => {
                let run_dir = jax_run_dir(&plan.output_dir, stop_unix_ns);
                crate::trace::create_dir(&run_dir)?;
                tokio::time::sleep(delay).await;
                let hostname = config.hostname.clone();
                if write_files {
                    blocking(move || {
                        write_jax_session(&run_dir, &hostname, &session, &options).map(drop)
                    })
                    .await
                } else {
                    Ok(())
                }
            }
            ServerKind::Sglang | ServerKind::Vllm => {
                let vllm_at_ms =
                    (config.kind == ServerKind::Vllm).then_some(stop_unix_ns / 1_000_000);
                let ranks: Vec<KinetoRank> = (config.tp_rank
                    ..config.tp_rank + config.sglang_ranks_written)
                    .map(|tp_rank| KinetoRank {
                        tp_rank,
                        tp_size: config.tp_size,
                        dp_rank: config.dp_rank,
                        dp_size: config.dp_size,
                        pp_rank: config.pp_rank,
                        pp_size: config.pp_size,
                        ep_rank: if config.sglang_ranks_written > 1 {
                            sglang_ep_rank(tp_rank, config.tp_size, config.ep_size)
                        } else {
                            config.ep_rank
                        },
                        ep_size: config.ep_size,
                        gpu: tp_rank % config.devices_on_host().max(1),
                        os_pid: std::process::id(),
                    })
                    .collect();
                let profile_id = plan.profile_id.clone();
                let prefix = plan.prefix.clone();
                let output_dir = plan.output_dir.clone();
                let by_stage = plan.by_stage;
                tokio::time::sleep(delay).await;
                if write_files {
                    blocking(move || {
                        for rank in &ranks {
                            // Every rank its own file, and its own durations.
                            let mut session = session.clone();
                            session.shape.jitter_seed ^= u64::from(rank.tp_rank) << 8;
                            let file_name = match vllm_at_ms {
                                Some(unix_ms) => rank.vllm_file_name(unix_ms),
                                None => rank.file_name(&profile_id, prefix.as_deref()),
                            };
                            if !by_stage {
                                write_kineto_session(
                                    &output_dir,
                                    &file_name,
                                    rank,
                                    &session,
                                    &options,
                                )?;
                                continue;
                            }
                            let staged: Vec<(String, Session)> = STAGES
                                .iter()
                                .map(|(stage, parity)| {
                                    let mut staged = session.clone();
                                    staged.steps.retain(|step| step.step_num % 2 == *parity);
                                    let suffix = format!("-{stage}.trace.json.gz");
                                    (file_name.replace(".trace.json.gz", &suffix), staged)
                                })
                                .collect();
                            write_kineto_files(&output_dir, rank, &staged, &options)?;
                        }
                        Ok(())
                    })
                    .await
                } else {
                    Ok(())
                }
            }
        };
        tracing::info!(
            "Profiling done. Traces are saved to: {}",
            plan.output_dir.display()
        );
        self.shared.profiling.store(false, Ordering::SeqCst);
        result
    }
}

async fn blocking(
    work: impl FnOnce() -> Result<(), SimError> + Send + 'static,
) -> Result<(), SimError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| SimError::Render(format!("the file writer stopped: {error}")))?
}
