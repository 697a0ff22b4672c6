//! The coordinator's memory: which agents exist and how to reach them, and
//! which captures run. Every method runs under one lock and never awaits,
//! so a command pushed to several agents is pushed to all of them before
//! anything else happens. Methods that end a capture return its id: the
//! caller then writes its manifest (`Shared::settle`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rankline_layout::{ProfileId, RankKey};
use rankline_proto::{
    coordinator_message, unix_now_ns, AgentIdentity, AgentInfo, CaptureEvent, CaptureSettings,
    CaptureSummary, ClockEstimate, CoordinatorMessage, Heartbeat, RankState, RankUpdate,
    StartCapture, StopCapture,
};
use tokio::sync::{broadcast, mpsc, oneshot, Notify};
use tonic::Status;

use crate::capture::{Capture, Phase};
use crate::config::CoordinatorConfig;
use crate::selection::Selection;
use crate::state::CaptureRecord;
use crate::validate;
use rankline_proto::convert::rank_name;

/// Finished captures kept in memory; older ones are still in storage
/// (`GetCapture` reads their manifest).
const FINISHED_CAPTURES_KEPT: usize = 1000;
/// Agents listed in a "nothing matches" error before "... and N more".
const AGENTS_LISTED_IN_ERRORS: usize = 20;

/// The sending half of an agent's command stream.
pub(crate) type CommandSender = mpsc::Sender<Result<CoordinatorMessage, Status>>;

/// An open `AgentLink.Join` stream.
#[derive(Debug)]
struct Connection {
    id: u64,
    commands: CommandSender,
    since_unix_ns: i64,
    /// Dropped with the connection, which tells the stream's reader task to
    /// stop (the agent was replaced, went silent, or the coordinator stops).
    _reader_stop: oneshot::Sender<()>,
}

impl Connection {
    /// Ends the agent's stream with `status` after the commands queued so far.
    fn close(self, status: Status) {
        let _ = self.commands.try_send(Err(status));
    }

    fn send(&self, kind: coordinator_message::Kind) -> bool {
        self.commands
            .try_send(Ok(CoordinatorMessage { kind: Some(kind) }))
            .is_ok()
    }
}

#[derive(Debug)]
struct AgentEntry {
    identity: AgentIdentity,
    connection: Option<Connection>,
    last_seen: Instant,
    last_seen_unix_ns: i64,
    clock: Option<ClockEstimate>,
    /// What the agent last said it works on.
    reported_profile_id: String,
    /// Known only from a restored capture: not heard from since this
    /// coordinator started, so it gets the restart grace before it is lost.
    awaited_since_restart: bool,
}

/// What `Registry::start_capture` needs, checked beforehand.
#[derive(Debug)]
pub(crate) struct CapturePlan {
    pub profile_id: ProfileId,
    pub selection: Selection,
    pub settings: CaptureSettings,
    /// As requested; 0 lets the config decide from the number of agents.
    pub lead_time_ms: u64,
    pub storage_url: String,
    /// Who asked for it, for the audit line.
    pub started_by: String,
}

/// A way to follow a capture: what happened so far, then live events
/// (none once it finished).
pub(crate) struct Follow {
    pub backlog: Vec<CaptureEvent>,
    pub live: Option<broadcast::Receiver<CaptureEvent>>,
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    agents: BTreeMap<String, AgentEntry>,
    captures: HashMap<String, Capture>,
    next_connection_id: u64,
    shutting_down: bool,
    /// Wakes the capture record writer; every capture holds a clone.
    record_changes: Arc<Notify>,
}

impl Registry {
    // ------------------------------------------------------------------
    // Agents
    // ------------------------------------------------------------------

    /// Registers a new stream for an agent; the newest stream of an agent id
    /// wins. Returns the connection id and the captures the hello's
    /// in-flight updates ended.
    pub fn connect(
        &mut self,
        identity: AgentIdentity,
        commands: CommandSender,
        reader_stop: oneshot::Sender<()>,
        in_flight: Vec<RankUpdate>,
    ) -> Result<(u64, Vec<String>), Status> {
        if self.shutting_down {
            return Err(shutting_down());
        }
        self.check_rank_free(&identity)?;
        self.next_connection_id += 1;
        let id = self.next_connection_id;
        let agent_id = identity.agent_id.clone();
        let connection = Connection {
            id,
            commands,
            since_unix_ns: unix_now_ns(),
            _reader_stop: reader_stop,
        };
        match self.agents.get_mut(&agent_id) {
            Some(entry) => {
                if let Some(old) = entry.connection.take() {
                    tracing::warn!(
                        agent = %agent_id,
                        "agent connected again while its previous connection is open; the newest \
                         connection wins (do two agents share one --agent-id?)"
                    );
                    old.close(Status::aborted(format!(
                        "replaced by a newer connection with the same agent id {agent_id:?}"
                    )));
                } else {
                    tracing::info!(agent = %agent_id, "agent reconnected");
                }
                entry.identity = identity;
                entry.connection = Some(connection);
                entry.awaited_since_restart = false;
            }
            None => {
                tracing::info!(agent = %agent_id, rank = %rank_name(&identity), host = %identity.host, "agent joined");
                self.agents.insert(
                    agent_id.clone(),
                    AgentEntry {
                        identity,
                        connection: Some(connection),
                        last_seen: Instant::now(),
                        last_seen_unix_ns: 0,
                        clock: None,
                        reported_profile_id: String::new(),
                        awaited_since_restart: false,
                    },
                );
            }
        }
        self.touch(&agent_id);
        let reported: HashSet<String> = in_flight
            .iter()
            .map(|update| update.profile_id.clone())
            .collect();
        let mut ended: Vec<String> = in_flight
            .into_iter()
            .filter_map(|update| self.apply_update(&agent_id, update))
            .collect();
        ended.extend(self.lose_unreported_ranks(&agent_id, &reported));
        Ok((id, ended))
    }

    /// Refuses a hello for a rank (role, worker, TP/EP/DP/PP) that another
    /// connected agent already has: their files would overwrite each other.
    fn check_rank_free(&self, identity: &AgentIdentity) -> Result<(), Status> {
        let coords = identity.rank_coords();
        let holder = self.agents.values().find(|entry| {
            entry.connection.is_some()
                && entry.identity.agent_id != identity.agent_id
                && entry.identity.rank_coords() == coords
        });
        let Some(holder) = holder else {
            return Ok(());
        };
        tracing::warn!(
            agent = %identity.agent_id, host = %identity.host, rank = %rank_name(identity),
            holder = %holder.identity.agent_id,
            "refused an agent: another connected agent already is this rank"
        );
        Err(Status::already_exists(format!(
            "rank {} is already taken by the connected agent {} (host {}); two agents for one \
             rank would overwrite each other's files. Fix --role/--worker/--tp-rank/--ep-rank/\
             --dp-rank/--pp-rank of one of them, or stop the other (this agent keeps retrying)",
            rank_name(identity),
            holder.identity.agent_id,
            holder.identity.host
        )))
    }

    /// Why a rank report cannot be taken (its object keys, its size), if
    /// it cannot.
    fn report_problem(&self, agent_id: &str, update: &mut RankUpdate) -> Option<String> {
        let capture = self.captures.get(&update.profile_id)?;
        let index = capture.rank_of(agent_id)?;
        validate::check_update(update, &capture.ranks[index].identity, &capture.profile_id).err()
    }

    /// Vets a rank report before it is applied. A refused report fails its
    /// rank (unless the rank already ended); the error holds the status the
    /// agent's stream ends with and the capture that ended, if one did.
    pub fn vet_update(
        &mut self,
        agent_id: &str,
        update: &mut RankUpdate,
    ) -> Result<(), (Status, Option<String>)> {
        let Some(problem) = self.report_problem(agent_id, update) else {
            return Ok(());
        };
        tracing::warn!(agent = %agent_id, capture = %update.profile_id, "refused a rank report: {problem}");
        let mut ended = None;
        if let Some(capture) = self.captures.get_mut(&update.profile_id) {
            if let Some(index) = capture.rank_of(agent_id) {
                if !capture.ranks[index].state.is_final() {
                    capture.end_rank(
                        index,
                        RankState::Failed,
                        format!("the coordinator refused its agent's report: {problem}"),
                    );
                }
                if capture.begin_finishing_if_done() {
                    ended = Some(capture.profile_id.to_string());
                }
            }
        }
        Err((
            Status::invalid_argument(format!(
                "the report for capture {} was refused: {problem}",
                update.profile_id
            )),
            ended,
        ))
    }

    /// An agent's hello lists every capture it works on or recently
    /// finished. An unfinished rank of a running capture it leaves out will
    /// never be reported: the agent never got the start (it was lost with a
    /// connection or a coordinator restart) or forgot the capture. Such ranks
    /// end `lost` now instead of at their deadline; the agent's own word
    /// still replaces that if it comes after all. Returns the captures that
    /// ended.
    fn lose_unreported_ranks(&mut self, agent_id: &str, reported: &HashSet<String>) -> Vec<String> {
        let mut ended = Vec::new();
        for capture in self.captures.values_mut() {
            if capture.phase != Phase::Running || reported.contains(capture.profile_id.as_str()) {
                continue;
            }
            let Some(index) = capture.rank_of(agent_id) else {
                continue;
            };
            let state = capture.ranks[index].state;
            if state.is_final() {
                continue;
            }
            tracing::warn!(agent = %agent_id, capture = %capture.profile_id, "agent reconnected without this capture; its rank is lost");
            capture.end_rank(
                index,
                RankState::Lost,
                format!(
                    "its agent reconnected without this capture (the rank was {}): it never \
                     received the start, or it restarted and forgot the capture",
                    state.word()
                ),
            );
            if capture.begin_finishing_if_done() {
                ended.push(capture.profile_id.to_string());
            }
        }
        ended
    }

    /// True when `connection_id` is still the agent's current stream.
    pub fn is_current(&self, agent_id: &str, connection_id: u64) -> bool {
        self.agents
            .get(agent_id)
            .and_then(|entry| entry.connection.as_ref())
            .is_some_and(|connection| connection.id == connection_id)
    }

    /// Forgets a stream that ended. The agent's ranks keep going: it may
    /// reconnect before it counts as lost.
    pub fn disconnect(&mut self, agent_id: &str, connection_id: u64) {
        if self.is_current(agent_id, connection_id) {
            if let Some(entry) = self.agents.get_mut(agent_id) {
                entry.connection = None;
                tracing::info!(agent = %agent_id, "agent disconnected");
            }
        }
    }

    /// Ends an agent's current stream with `status` (a refused report):
    /// the agent hears why and reconnects.
    pub fn close_connection(&mut self, agent_id: &str, connection_id: u64, status: Status) {
        if self.is_current(agent_id, connection_id) {
            if let Some(connection) = self
                .agents
                .get_mut(agent_id)
                .and_then(|entry| entry.connection.take())
            {
                connection.close(status);
            }
        }
    }

    /// Notes that an agent was heard from.
    pub fn touch(&mut self, agent_id: &str) {
        if let Some(entry) = self.agents.get_mut(agent_id) {
            entry.last_seen = Instant::now();
            entry.last_seen_unix_ns = unix_now_ns();
        }
    }

    pub fn heartbeat(&mut self, agent_id: &str, heartbeat: Heartbeat) {
        if let Some(entry) = self.agents.get_mut(agent_id) {
            if heartbeat.clock.is_some() {
                entry.clock = heartbeat.clock;
            }
            entry.reported_profile_id = heartbeat.active_profile_id;
        }
    }

    pub fn list_agents(&self) -> Vec<AgentInfo> {
        self.agents
            .values()
            .map(|entry| {
                let agent_id = &entry.identity.agent_id;
                let active = if entry.reported_profile_id.is_empty() {
                    self.running_capture_of(agent_id)
                        .map(str::to_string)
                        .unwrap_or_default()
                } else {
                    entry.reported_profile_id.clone()
                };
                AgentInfo {
                    identity: Some(entry.identity.clone()),
                    connected: entry.connection.is_some(),
                    last_seen_unix_ns: entry.last_seen_unix_ns,
                    clock: entry.clock,
                    active_profile_id: active,
                    connected_since_unix_ns: entry
                        .connection
                        .as_ref()
                        .map_or(0, |connection| connection.since_unix_ns),
                }
            })
            .collect()
    }

    fn running_capture_of(&self, agent_id: &str) -> Option<&str> {
        self.captures
            .values()
            .find(|capture| capture.occupies(agent_id))
            .map(|capture| capture.profile_id.as_str())
    }

    // ------------------------------------------------------------------
    // Rank updates, liveness, deadlines
    // ------------------------------------------------------------------

    /// Applies an agent's update to its rank. Returns the capture's id when
    /// its manifest must be written (it just ended, or a late update changed
    /// a rank of an ended capture).
    pub fn apply_update(&mut self, agent_id: &str, update: RankUpdate) -> Option<String> {
        let profile_id = update.profile_id.clone();
        let incoming = update.state();
        if incoming.is_final() {
            if let Some(entry) = self.agents.get_mut(agent_id) {
                // The agent is free now even if its next heartbeat still
                // names the capture; a back-to-back capture must not see it busy.
                if entry.reported_profile_id == profile_id {
                    entry.reported_profile_id.clear();
                }
            }
        }
        let Some(capture) = self.captures.get_mut(&profile_id) else {
            tracing::warn!(agent = %agent_id, capture = %profile_id, "update for a capture this coordinator does not know; ignored");
            return None;
        };
        let Some(index) = capture.rank_of(agent_id) else {
            tracing::warn!(agent = %agent_id, capture = %profile_id, "update from an agent that is not part of this capture; ignored");
            return None;
        };
        let rank = &capture.ranks[index];
        let accept = match (rank.state.is_final(), rank.decided_by_coordinator) {
            _ if incoming == RankState::Unspecified => false,
            (false, _) => true,
            // The agent's own final word stands.
            (true, false) => false,
            // The agent's truth replaces the coordinator's guess: a final
            // state always, a lost rank resumes while the capture runs.
            (true, true) => {
                incoming.is_final()
                    || (rank.state == RankState::Lost
                        && capture.phase == Phase::Running
                        && Instant::now() < rank.deadline)
            }
        };
        if !accept {
            tracing::debug!(agent = %agent_id, capture = %profile_id, state = incoming.word(), "update after the rank ended; ignored");
            return None;
        }
        let late = rank.state.is_final();
        if late {
            tracing::info!(
                agent = %agent_id, capture = %profile_id,
                was = rank.state.word(), now = incoming.word(),
                "late update from the agent replaces the coordinator's verdict"
            );
        }
        capture.apply_agent_update(index, update);
        if capture.begin_finishing_if_done() || (late && capture.phase != Phase::Running) {
            Some(profile_id)
        } else {
            None
        }
    }

    /// Disconnects agents silent for longer than `lost_after` (their
    /// unfinished ranks become `lost`) and fails ranks past their deadline.
    /// Agents of restored captures not heard from since the restart get
    /// `lost_after_restart` instead. Returns the captures that ended.
    pub fn sweep(&mut self, lost_after: Duration, lost_after_restart: Duration) -> Vec<String> {
        let now = Instant::now();
        let mut silent = Vec::new();
        for (agent_id, entry) in &mut self.agents {
            let quiet_for = now.duration_since(entry.last_seen);
            let allowed = if entry.awaited_since_restart {
                lost_after_restart
            } else {
                lost_after
            };
            if quiet_for <= allowed {
                continue;
            }
            if let Some(connection) = entry.connection.take() {
                tracing::warn!(agent = %agent_id, "agent silent for {}; disconnecting it", human(quiet_for));
                connection.close(Status::unavailable(format!(
                    "no message for {}; reconnect",
                    human(quiet_for)
                )));
            }
            silent.push((agent_id.clone(), quiet_for, entry.awaited_since_restart));
        }

        let mut ended = Vec::new();
        for capture in self.captures.values_mut() {
            if capture.phase != Phase::Running {
                continue;
            }
            for (agent_id, quiet_for, awaited_since_restart) in &silent {
                if let Some(index) = capture.rank_of(agent_id) {
                    if !capture.ranks[index].state.is_final() {
                        let state = capture.ranks[index].state.word();
                        let quiet_for = human(*quiet_for);
                        let detail = if *awaited_since_restart {
                            format!(
                                "its agent did not come back within {quiet_for} of the \
                                 coordinator restart (the rank was {state})"
                            )
                        } else {
                            format!("agent went silent in {state}: no heartbeat for {quiet_for}")
                        };
                        capture.end_rank(index, RankState::Lost, detail);
                    }
                }
            }
            for index in 0..capture.ranks.len() {
                let rank = &capture.ranks[index];
                if rank.state.is_final() || now < rank.deadline {
                    continue;
                }
                let agent_id = rank.identity.agent_id.clone();
                let detail = format!(
                    "timed out in {} (deadline {} after the start; raise it with --timeout)",
                    rank.state.word(),
                    human(Duration::from_millis(capture.settings.timeout_ms))
                );
                capture.end_rank(index, RankState::Failed, detail);
                // The agent gives up too, instead of profiling on.
                if let Some(connection) = self
                    .agents
                    .get(&agent_id)
                    .and_then(|entry| entry.connection.as_ref())
                {
                    connection.send(coordinator_message::Kind::Stop(StopCapture {
                        profile_id: capture.profile_id.to_string(),
                    }));
                }
            }
            if capture.begin_finishing_if_done() {
                ended.push(capture.profile_id.to_string());
            }
        }
        ended
    }

    // ------------------------------------------------------------------
    // Captures
    // ------------------------------------------------------------------

    pub fn has_capture(&self, profile_id: &str) -> bool {
        self.captures.contains_key(profile_id)
    }

    /// Picks the agents, checks they are free and distinct, and sends all of
    /// them the same `StartCapture`. Returns how to follow the capture, and
    /// its id when it already ended (no agent could be told).
    pub fn start_capture(
        &mut self,
        plan: CapturePlan,
        config: &CoordinatorConfig,
    ) -> Result<(Follow, Option<String>), Status> {
        if self.shutting_down {
            return Err(shutting_down());
        }
        if self.captures.contains_key(plan.profile_id.as_str()) {
            return Err(duplicate_id(&plan.profile_id));
        }
        let selected = self.select(&plan.selection)?;
        self.check_free(&selected)?;
        self.check_distinct(&plan.profile_id, &selected)?;

        let lead_time = config.lead_time(plan.lead_time_ms, selected.len());
        let rank_timeout = config.rank_timeout(&plan.settings);
        let start_at_unix_ns =
            unix_now_ns() + i64::try_from(lead_time.as_nanos()).unwrap_or(i64::MAX / 2);
        let deadline = Instant::now() + lead_time + rank_timeout;
        let mut settings = plan.settings;
        settings.timeout_ms = u64::try_from(rank_timeout.as_millis()).unwrap_or(u64::MAX);
        let start = StartCapture {
            profile_id: plan.profile_id.to_string(),
            start_at_unix_ns,
            settings: Some(settings),
            storage_url: plan.storage_url,
        };
        let mut capture = Capture::new(
            plan.profile_id.clone(),
            &start,
            selected
                .iter()
                .map(|agent_id| self.agents[agent_id].identity.clone())
                .collect(),
            deadline,
            Arc::clone(&self.record_changes),
        );
        capture.audit("started", plan.started_by.clone());
        let follow = Follow {
            backlog: vec![capture.accepted_event()],
            live: Some(capture.subscribe()),
        };

        // The fan-out: every push is a non-blocking queue insert, all done
        // before anything awaits, so no agent waits for another's network.
        let mut unreachable = Vec::new();
        for agent_id in &selected {
            let sent = self.agents[agent_id]
                .connection
                .as_ref()
                .is_some_and(|c| c.send(coordinator_message::Kind::Start(start.clone())));
            if !sent {
                unreachable.push(agent_id.clone());
            }
        }
        tracing::info!(
            capture = %plan.profile_id, ranks = selected.len(), selection = %plan.selection,
            by = %plan.started_by,
            lead_ms = lead_time.as_millis() as u64, "capture started"
        );
        for agent_id in unreachable {
            if let Some(index) = capture.rank_of(&agent_id) {
                capture.end_rank(
                    index,
                    RankState::Failed,
                    "the start command could not be queued (the agent's connection is closing or not \
                     reading); try again once `rankline agents` shows it connected"
                        .to_string(),
                );
            }
        }
        let ended = capture
            .begin_finishing_if_done()
            .then(|| plan.profile_id.to_string());
        self.captures.insert(plan.profile_id.to_string(), capture);
        Ok((follow, ended))
    }

    /// The connected agents the selection matches, or an error that lists
    /// what is there.
    fn select(&self, selection: &Selection) -> Result<Vec<String>, Status> {
        let connected: Vec<&AgentEntry> = self
            .agents
            .values()
            .filter(|entry| entry.connection.is_some())
            .collect();
        if connected.is_empty() {
            return Err(Status::failed_precondition(
                "no agent is connected to this coordinator; start one beside each server with \
                 `rankline agent --coordinator <this coordinator's URL> ...` and check with \
                 `rankline agents`",
            ));
        }
        let selected: Vec<String> = connected
            .iter()
            .filter(|entry| selection.matches(&entry.identity))
            .map(|entry| entry.identity.agent_id.clone())
            .collect();
        if selected.is_empty() {
            let mut message = format!(
                "no connected agent matches {selection}; the {} connected agents are:",
                connected.len()
            );
            for entry in connected.iter().take(AGENTS_LISTED_IN_ERRORS) {
                let _ = write!(message, "\n  {}", describe(&entry.identity));
            }
            if connected.len() > AGENTS_LISTED_IN_ERRORS {
                let _ = write!(
                    message,
                    "\n  ... and {} more (see `rankline agents`)",
                    connected.len() - AGENTS_LISTED_IN_ERRORS
                );
            }
            return Err(Status::failed_precondition(message));
        }
        Ok(selected)
    }

    /// Refuses agents that still work on a capture.
    fn check_free(&self, selected: &[String]) -> Result<(), Status> {
        for agent_id in selected {
            if let Some(busy) = self.running_capture_of(agent_id) {
                return Err(Status::failed_precondition(format!(
                    "agent {agent_id} is busy with running capture {busy}; wait for it to end \
                     (`rankline capture show {busy}`) or stop it (`rankline stop {busy}`)"
                )));
            }
            let reported = &self.agents[agent_id].reported_profile_id;
            if !reported.is_empty() {
                return Err(Status::failed_precondition(format!(
                    "agent {agent_id} reports it still works on capture {reported}; wait for it \
                     to finish (`rankline agents` shows when it is free)"
                )));
            }
        }
        Ok(())
    }

    /// Refuses two selected agents with the same role, worker and ranks:
    /// they would write the same object keys.
    fn check_distinct(&self, profile_id: &str, selected: &[String]) -> Result<(), Status> {
        let mut seen: HashMap<String, &str> = HashMap::new();
        for agent_id in selected {
            let identity = &self.agents[agent_id].identity;
            let stem = RankKey::new(profile_id, &identity.rank_coords()).stem;
            if let Some(other) = seen.insert(stem, agent_id) {
                return Err(Status::failed_precondition(format!(
                    "agents {other} and {agent_id} both say they are {}; their files would \
                     overwrite each other. Fix one agent's --role/--worker/--tp-rank/--ep-rank, \
                     or narrow --select",
                    rank_name(identity)
                )));
            }
        }
        Ok(())
    }

    /// Asks every unfinished rank of a running capture to stop on behalf of
    /// `who` (kept in the capture's audit); returns how many were told.
    pub fn stop_capture(&mut self, profile_id: &str, who: String) -> Result<u32, Status> {
        let capture = self
            .captures
            .get_mut(profile_id)
            .ok_or_else(|| unknown_capture(profile_id))?;
        if capture.phase != Phase::Running {
            return Err(Status::failed_precondition(format!(
                "capture {profile_id} already ended ({}); nothing to stop",
                capture.summary().status().word()
            )));
        }
        capture.audit("stopped", who.clone());
        let capture = &self.captures[profile_id];
        let mut told = 0;
        for rank in capture.ranks.iter().filter(|rank| !rank.state.is_final()) {
            let sent = self
                .agents
                .get(&rank.identity.agent_id)
                .and_then(|entry| entry.connection.as_ref())
                .is_some_and(|connection| {
                    connection.send(coordinator_message::Kind::Stop(StopCapture {
                        profile_id: profile_id.to_string(),
                    }))
                });
            if sent {
                told += 1;
            }
        }
        tracing::info!(capture = %profile_id, ranks = told, by = %who, "stop requested");
        Ok(told)
    }

    /// Marks a capture failed for a reason outside its ranks (see
    /// `Capture::fail`). True when its manifest is written already and
    /// must be written again to say so.
    pub fn fail_capture(
        &mut self,
        profile_id: &str,
        reason: String,
        who: String,
    ) -> Result<bool, Status> {
        if reason.trim().is_empty() {
            return Err(Status::invalid_argument(
                "give the reason the capture failed; it is what `rankline capture show` prints",
            ));
        }
        let capture = self
            .captures
            .get_mut(profile_id)
            .ok_or_else(|| unknown_capture(profile_id))?;
        tracing::warn!(capture = %profile_id, by = %who, %reason, "capture marked failed");
        capture.fail(reason, who);
        Ok(capture.phase != Phase::Running)
    }

    /// Takes a capture restored from its record. The agents of its
    /// unfinished ranks are expected back: they count as lost only after
    /// the restart grace. Returns true when the capture's manifest must be
    /// written (again).
    pub fn adopt(&mut self, mut capture: Capture) -> bool {
        if capture.phase == Phase::Running {
            let now = Instant::now();
            for rank in capture.ranks.iter().filter(|rank| !rank.state.is_final()) {
                self.agents
                    .entry(rank.identity.agent_id.clone())
                    .or_insert_with(|| AgentEntry {
                        identity: rank.identity.clone(),
                        connection: None,
                        last_seen: now,
                        last_seen_unix_ns: 0,
                        clock: None,
                        reported_profile_id: String::new(),
                        awaited_since_restart: true,
                    });
            }
        }
        let settle = match capture.phase {
            Phase::Running => capture.begin_finishing_if_done(),
            Phase::Finishing => true,
            // The manifest write failed last time: try again.
            Phase::Finished => capture.manifest_key.is_empty(),
        };
        self.captures
            .insert(capture.profile_id.to_string(), capture);
        settle
    }

    /// What the record writer waits on.
    pub fn record_changes(&self) -> Arc<Notify> {
        Arc::clone(&self.record_changes)
    }

    /// The records of captures changed since their last saved record, with
    /// the version each one captures.
    pub fn unsaved_records(&self) -> Vec<(u64, CaptureRecord)> {
        self.captures
            .values()
            .filter_map(|capture| {
                let version = capture.unsaved_version()?;
                Some((version, CaptureRecord::of(capture)))
            })
            .collect()
    }

    pub fn capture_mut(&mut self, profile_id: &str) -> Option<&mut Capture> {
        self.captures.get_mut(profile_id)
    }

    pub fn summary(&self, profile_id: &str) -> Option<CaptureSummary> {
        self.captures.get(profile_id).map(Capture::summary)
    }

    /// Every capture in memory, oldest first.
    pub fn list_captures(&self) -> Vec<CaptureSummary> {
        let mut captures: Vec<&Capture> = self.captures.values().collect();
        captures.sort_by_key(|capture| (capture.created_unix_ns, capture.profile_id.clone()));
        captures.into_iter().map(Capture::summary).collect()
    }

    /// Everything needed to follow a capture from now on. `with_accepted`
    /// leaves out the acceptance for a watcher that already has it.
    pub fn follow(&mut self, profile_id: &str, with_accepted: bool) -> Result<Follow, Status> {
        let capture = self
            .captures
            .get_mut(profile_id)
            .ok_or_else(|| unknown_capture(profile_id))?;
        let mut backlog = Vec::new();
        if with_accepted {
            backlog.push(capture.accepted_event());
        }
        backlog.extend(capture.rank_events());
        let finished = capture.phase == Phase::Finished;
        if finished {
            backlog.push(capture.finished_event());
        }
        Ok(Follow {
            backlog,
            live: (!finished).then(|| capture.subscribe()),
        })
    }

    /// Drops the oldest finished captures beyond what memory keeps.
    pub fn forget_old_captures(&mut self) {
        let mut finished: Vec<(i64, ProfileId)> = self
            .captures
            .values()
            .filter(|capture| capture.phase == Phase::Finished)
            .map(|capture| (capture.finished_unix_ns, capture.profile_id.clone()))
            .collect();
        if finished.len() <= FINISHED_CAPTURES_KEPT {
            return;
        }
        finished.sort();
        for (_, profile_id) in &finished[..finished.len() - FINISHED_CAPTURES_KEPT] {
            self.captures.remove(profile_id.as_str());
        }
    }

    /// Ends every agent stream; later connections and captures are refused.
    pub fn shut_down(&mut self) {
        self.shutting_down = true;
        for entry in self.agents.values_mut() {
            if let Some(connection) = entry.connection.take() {
                connection.close(shutting_down());
            }
        }
    }
}

/// One line about an agent for error messages.
fn describe(identity: &AgentIdentity) -> String {
    let mut line = format!(
        "{} (host {}, {}",
        identity.agent_id,
        identity.host,
        rank_name(identity)
    );
    let mut labels: Vec<_> = identity.labels.iter().collect();
    labels.sort();
    for (key, value) in labels {
        let _ = write!(line, ", label.{key}={value}");
    }
    line.push(')');
    line
}

fn human(duration: Duration) -> String {
    // Whole milliseconds read better than humantime's nanosecond tails.
    let rounded = Duration::from_millis(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
    humantime::format_duration(rounded).to_string()
}

pub(crate) fn unknown_capture(profile_id: &str) -> Status {
    Status::not_found(format!(
        "no capture {profile_id:?} on this coordinator; list them with `rankline captures`"
    ))
}

pub(crate) fn duplicate_id(profile_id: &str) -> Status {
    Status::already_exists(format!(
        "a capture named {profile_id:?} already exists; choose another --profile-id or leave it \
         out to get a fresh one"
    ))
}

fn shutting_down() -> Status {
    Status::unavailable("the coordinator is shutting down")
}
