//! Following a capture: one line per rank state change and a final table
//! for people, every event as a JSON line for scripts; the first Ctrl-C
//! asks every rank to stop, the second stops waiting.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::bail;
use rankline_client::{render as report, Client};
use rankline_proto::{
    capture_event, unix_now_ns, CaptureEvent, CaptureStatus, RankState, StopRequest,
};
use tokio::sync::mpsc;
use tonic::Streaming;

use super::workload::Workload;
use crate::args::CoordinatorArg;
use crate::exit;
use crate::output::print_json_line;

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
            Outcome::Finished(_) => ExitCode::from(exit::FAILED),
            Outcome::StoppedWaiting => ExitCode::from(exit::STOPPED_WAITING),
        }
    }
}

/// Prints a capture's events as they come: one line per rank state change
/// and a final table for people, every event as a JSON line for scripts.
pub(super) struct Follower {
    json: bool,
    since: Instant,
    profile_id: String,
    shown: HashMap<String, RankState>,
    /// Ctrl-C came before the capture had an id.
    stop_wanted: bool,
    /// Sees every event (`--workload`).
    pub(super) workload: Option<Workload>,
}

impl Follower {
    pub(super) fn new(json: bool) -> Follower {
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
    pub(super) async fn follow(
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
            print_json_line(&report::event_json(event))?;
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
}
