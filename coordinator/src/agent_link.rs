//! The `AgentLink` service: each agent's long-lived `Join` stream, and the
//! clock probe.

use std::sync::Arc;

use rankline_proto::agent_link_server::AgentLink;
use rankline_proto::{
    agent_message, coordinator_message, unix_now_ns, AgentHello, AgentMessage, ClockProbeRequest,
    ClockProbeResponse, CoordinatorMessage, Welcome,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Caller;
use crate::registry::CommandSender;
use crate::shared::Shared;
use crate::validate;
use rankline_proto::convert::default_agent_id;

/// Commands queued for one agent. A capture sends one or two; the room is
/// for bursts while the agent's network is slow.
const COMMAND_QUEUE: usize = 64;

pub(crate) struct AgentLinkService {
    pub shared: Arc<Shared>,
}

#[tonic::async_trait]
impl AgentLink for AgentLinkService {
    type JoinStream = ReceiverStream<Result<CoordinatorMessage, Status>>;

    async fn join(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::JoinStream>, Status> {
        let caller = Caller::of(&request);
        let (commands, outbound) = mpsc::channel(COMMAND_QUEUE);
        tokio::spawn(run_link(
            Arc::clone(&self.shared),
            request.into_inner(),
            commands,
            caller,
        ));
        Ok(Response::new(ReceiverStream::new(outbound)))
    }

    async fn clock_probe(
        &self,
        request: Request<ClockProbeRequest>,
    ) -> Result<Response<ClockProbeResponse>, Status> {
        let t2_unix_ns = unix_now_ns();
        let t1_unix_ns = request.into_inner().t1_unix_ns;
        Ok(Response::new(ClockProbeResponse {
            t1_unix_ns,
            t2_unix_ns,
            t3_unix_ns: unix_now_ns(),
        }))
    }
}

/// Reads one agent's stream until it ends, is replaced, goes silent or the
/// coordinator stops.
async fn run_link(
    shared: Arc<Shared>,
    mut inbound: Streaming<AgentMessage>,
    commands: CommandSender,
    caller: Caller,
) {
    let peer = caller.describe();
    let hello = tokio::select! {
        hello = read_hello(&shared, &mut inbound) => hello,
        () = shared.shutting_down() => return,
    };
    let mut hello = match hello {
        Ok(hello) => hello,
        Err(status) => {
            tracing::warn!(%peer, "refused an agent stream: {}", status.message());
            let _ = commands.try_send(Err(status));
            return;
        }
    };
    let Some(mut identity) = hello.identity else {
        let _ = commands.try_send(Err(Status::invalid_argument(
            "AgentHello has no identity; the agent must say who it is",
        )));
        return;
    };
    if identity.agent_id.is_empty() {
        identity.agent_id = default_agent_id(&identity);
    }
    let admitted = validate::check_identity(&identity)
        .map_err(|reason| Status::invalid_argument(format!("refused the agent's hello: {reason}")))
        .and_then(|()| {
            caller.check_agent_id(&identity.agent_id, shared.config.security.mutual_tls())
        });
    if let Err(status) = admitted {
        tracing::warn!(%peer, "refused an agent: {}", status.message());
        let _ = commands.try_send(Err(status));
        return;
    }
    let agent_id = identity.agent_id.clone();
    let vetted = {
        let mut registry = shared.registry();
        hello
            .in_flight
            .iter_mut()
            .try_for_each(|update| registry.vet_update(&agent_id, update))
    };
    if let Err((status, ended)) = vetted {
        shared.settle_all(ended.into_iter().collect());
        let _ = commands.try_send(Err(status));
        return;
    }

    // Welcome goes first into the fresh queue, before registration lets a
    // capture queue a start behind it.
    let welcome = coordinator_message::Kind::Welcome(Welcome {
        coordinator_id: shared.config.coordinator_id.clone(),
        heartbeat_interval_ms: u32::try_from(shared.config.heartbeat_interval.as_millis())
            .unwrap_or(u32::MAX),
    });
    let _ = commands.try_send(Ok(CoordinatorMessage {
        kind: Some(welcome),
    }));
    let (reader_stop, mut stopped) = oneshot::channel();
    let connected =
        shared
            .registry()
            .connect(identity, commands.clone(), reader_stop, hello.in_flight);
    let connection_id = match connected {
        Ok((connection_id, ended)) => {
            shared.settle_all(ended);
            connection_id
        }
        Err(status) => {
            let _ = commands.try_send(Err(status));
            return;
        }
    };
    // The registry holds the sender now; the stream ends when it lets go.
    drop(commands);
    tracing::debug!(agent = %agent_id, %peer, "agent stream open");

    let mut refused = None;
    loop {
        let message = tokio::select! {
            message = inbound.message() => message,
            _ = &mut stopped => break,
            () = shared.shutting_down() => break,
        };
        match message {
            Ok(Some(message)) => {
                let ended = {
                    let mut registry = shared.registry();
                    if !registry.is_current(&agent_id, connection_id) {
                        break;
                    }
                    registry.touch(&agent_id);
                    match message.kind {
                        Some(agent_message::Kind::Heartbeat(heartbeat)) => {
                            registry.heartbeat(&agent_id, heartbeat);
                            None
                        }
                        Some(agent_message::Kind::Update(mut update)) => {
                            match registry.vet_update(&agent_id, &mut update) {
                                Ok(()) => registry.apply_update(&agent_id, update),
                                Err((status, ended)) => {
                                    refused = Some(status);
                                    ended
                                }
                            }
                        }
                        Some(agent_message::Kind::Hello(_)) => {
                            tracing::warn!(agent = %agent_id, "second AgentHello on one stream; ignored");
                            None
                        }
                        None => None,
                    }
                };
                shared.settle_all(ended.into_iter().collect());
                if let Some(status) = refused.take() {
                    // The registry still holds this stream's sender: end it
                    // with the reason, then forget the connection.
                    shared
                        .registry()
                        .close_connection(&agent_id, connection_id, status);
                    return;
                }
            }
            Ok(None) => {
                tracing::debug!(agent = %agent_id, "agent closed its stream");
                break;
            }
            Err(status) => {
                tracing::debug!(agent = %agent_id, "agent stream broke: {status}");
                break;
            }
        }
    }
    shared.registry().disconnect(&agent_id, connection_id);
}

/// The first message of a stream, which must be a hello, within the time
/// an agent may stay silent.
async fn read_hello(
    shared: &Shared,
    inbound: &mut Streaming<AgentMessage>,
) -> Result<AgentHello, Status> {
    let wait = shared.config.lost_after();
    let first = tokio::time::timeout(wait, inbound.message())
        .await
        .map_err(|_| {
            Status::deadline_exceeded(format!(
                "no AgentHello within {wait:?}; the first message must be a hello"
            ))
        })??;
    match first.and_then(|message| message.kind) {
        Some(agent_message::Kind::Hello(hello)) => Ok(hello),
        _ => Err(Status::invalid_argument(
            "the first message on AgentLink.Join must be an AgentHello",
        )),
    }
}
