//! The `Control` service the CLI talks to: start and follow captures, stop
//! them, list agents and captures.

use std::sync::Arc;

use rankline_layout::{generate_profile_id, manifest_key, ProfileId};
use rankline_proto::control_server::Control;
use rankline_proto::{
    capture_event, unix_now_ns, CaptureEvent, CaptureRequest, CaptureSettings, CaptureSummary,
    FailRequest, GetCaptureRequest, ListAgentsRequest, ListAgentsResponse, ListCapturesRequest,
    ListCapturesResponse, StopRequest, StopResponse, WatchRequest,
};
use rankline_storage::StorageError;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::registry::{duplicate_id, unknown_capture, CapturePlan, Follow};
use crate::selection::Selection;
use crate::shared::Shared;
use rankline_proto::convert::summary_from_manifest;

/// Events buffered per watcher between the coordinator and the network.
const WATCHER_QUEUE: usize = 256;

type EventStream = ReceiverStream<Result<CaptureEvent, Status>>;

pub(crate) struct ControlService {
    pub shared: Arc<Shared>,
}

#[tonic::async_trait]
impl Control for ControlService {
    type CaptureStream = EventStream;
    type WatchStream = EventStream;

    async fn capture(
        &self,
        request: Request<CaptureRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let started_by = Caller::of(&request).describe();
        let request = request.into_inner();
        let plan = self.plan(request, started_by).await?;
        let profile_id = plan.profile_id.to_string();
        let (follow, ended) = self
            .shared
            .registry()
            .start_capture(plan, &self.shared.config)?;
        self.shared.settle_all(ended.into_iter().collect());
        Ok(Response::new(forward_events(
            Arc::clone(&self.shared),
            profile_id,
            follow,
        )))
    }

    async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<EventStream>, Status> {
        let profile_id = request.into_inner().profile_id;
        let follow = self.shared.registry().follow(&profile_id, true)?;
        Ok(Response::new(forward_events(
            Arc::clone(&self.shared),
            profile_id,
            follow,
        )))
    }

    async fn stop(&self, request: Request<StopRequest>) -> Result<Response<StopResponse>, Status> {
        let stopped_by = Caller::of(&request).describe();
        let profile_id = request.into_inner().profile_id;
        let ranks = self
            .shared
            .registry()
            .stop_capture(&profile_id, stopped_by)?;
        Ok(Response::new(StopResponse { ranks }))
    }

    async fn fail(
        &self,
        request: Request<FailRequest>,
    ) -> Result<Response<CaptureSummary>, Status> {
        let failed_by = Caller::of(&request).describe();
        let FailRequest { profile_id, reason } = request.into_inner();
        let rewrite_manifest =
            self.shared
                .registry()
                .fail_capture(&profile_id, reason, failed_by)?;
        if rewrite_manifest {
            // Answered once manifest.json says so (a dropped call leaves the
            // write going; the record has the failure either way).
            let _ = self.shared.rewrite_manifest(profile_id.clone()).await;
        }
        let summary = self.shared.registry().summary(&profile_id);
        summary
            .map(Response::new)
            .ok_or_else(|| unknown_capture(&profile_id))
    }

    async fn list_agents(
        &self,
        _request: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        let agents = self.shared.registry().list_agents();
        Ok(Response::new(ListAgentsResponse { agents }))
    }

    async fn list_captures(
        &self,
        _request: Request<ListCapturesRequest>,
    ) -> Result<Response<ListCapturesResponse>, Status> {
        let captures = self.shared.registry().list_captures();
        Ok(Response::new(ListCapturesResponse { captures }))
    }

    async fn get_capture(
        &self,
        request: Request<GetCaptureRequest>,
    ) -> Result<Response<CaptureSummary>, Status> {
        let profile_id = ProfileId::parse(request.into_inner().profile_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Some(summary) = self.shared.registry().summary(&profile_id) {
            return Ok(Response::new(summary));
        }
        // Not in memory (older, or from before a restart): its manifest.
        let key = manifest_key(&profile_id);
        let manifest = match self.shared.storage.read_manifest(&key).await {
            Ok(manifest) => manifest,
            Err(error) if error.is_not_found() => return Err(unknown_capture(&profile_id)),
            Err(error @ StorageError::Document { .. }) => {
                return Err(Status::data_loss(error.to_string()))
            }
            Err(error) => {
                return Err(Status::unavailable(format!(
                "capture {profile_id} is not in memory and its manifest could not be read: {error}"
            )))
            }
        };
        Ok(Response::new(summary_from_manifest(&manifest)))
    }
}

impl ControlService {
    /// Checks a request and turns it into a plan: settings, selection, a
    /// profile id that is valid and not taken in memory or in storage, and
    /// who asked.
    async fn plan(
        &self,
        request: CaptureRequest,
        started_by: String,
    ) -> Result<CapturePlan, Status> {
        let settings = request.settings.unwrap_or_default();
        check_settings(&settings)?;
        let selection =
            Selection::new(&request.select).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let profile_id = if request.profile_id.is_empty() {
            self.fresh_profile_id()
        } else {
            ProfileId::parse(request.profile_id)
                .map_err(|e| Status::invalid_argument(e.to_string()))?
        };
        if self.shared.registry().has_capture(&profile_id) {
            return Err(duplicate_id(&profile_id));
        }
        let key = manifest_key(&profile_id);
        let storage_url = self.shared.storage.url().to_string();
        // A capture this coordinator forgot (or could not read back after a
        // restart) still has its record.
        let (manifest, record) = tokio::join!(
            self.shared.storage.head(&key),
            self.shared.records.holds(&profile_id)
        );
        let unreachable = |error: StorageError| {
            Status::unavailable(format!(
                "cannot check storage {storage_url} for an existing capture {profile_id:?}: \
                 {error}; is the storage reachable from the coordinator?"
            ))
        };
        if manifest.map_err(unreachable)?.is_some() {
            return Err(Status::already_exists(format!(
                "capture {profile_id:?} is already stored ({storage_url}/{key}); choose \
                 another --profile-id or leave it out to get a fresh one"
            )));
        }
        if record.map_err(unreachable)? {
            return Err(Status::already_exists(format!(
                "capture {profile_id:?} has a record in {} from an earlier capture; choose \
                 another --profile-id or leave it out to get a fresh one",
                self.shared.records.location()
            )));
        }
        Ok(CapturePlan {
            lead_time_ms: request.lead_time_ms,
            profile_id,
            selection,
            settings,
            storage_url,
            started_by,
        })
    }

    fn fresh_profile_id(&self) -> ProfileId {
        loop {
            let id = generate_profile_id(unix_now_ns());
            if !self.shared.registry().has_capture(&id) {
                return id;
            }
        }
    }
}

fn check_settings(settings: &CaptureSettings) -> Result<(), Status> {
    let refuse = |message: &str| Err(Status::invalid_argument(message));
    match (settings.num_steps, settings.duration_ms) {
        (Some(_), Some(_)) => refuse("give either num_steps or duration, not both"),
        (Some(0), None) => refuse("num_steps must be at least 1"),
        (None, Some(0)) => refuse("duration must be longer than 0"),
        _ => Ok(()),
    }
}

/// Streams a capture's events to one watcher: what happened so far, then
/// live events until the capture finishes, the watcher leaves, or the
/// coordinator stops.
fn forward_events(shared: Arc<Shared>, profile_id: String, follow: Follow) -> EventStream {
    let (events, stream) = mpsc::channel(WATCHER_QUEUE);
    tokio::spawn(async move {
        let Follow {
            backlog: mut pending,
            mut live,
        } = follow;
        loop {
            for event in pending.drain(..) {
                if events.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            // None once the capture finished: its summary was the last event.
            let Some(receiver) = live.as_mut() else {
                return;
            };
            let event = tokio::select! {
                event = receiver.recv() => event,
                () = events.closed() => return,
                () = shared.shutting_down() => {
                    let _ = events.send(Err(Status::unavailable(
                        "the coordinator is shutting down; the agents keep going and it \
                         catches up when it is back"
                    ))).await;
                    return;
                }
            };
            match event {
                Ok(event) => {
                    if matches!(event.kind, Some(capture_event::Kind::Finished(_))) {
                        live = None;
                    }
                    pending.push(event);
                }
                // Too slow to keep up: start over from the current state.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let again = shared.registry().follow(&profile_id, false);
                    match again {
                        Ok(again) => {
                            pending = again.backlog;
                            live = again.live;
                        }
                        Err(status) => {
                            let _ = events.send(Err(status)).await;
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    ReceiverStream::new(stream)
}
