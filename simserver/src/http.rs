//! The HTTP API, answered the way sglang-jax / SGLang answer it (GET or
//! POST, optional JSON body): bare `500 Internal Server Error` on failure,
//! `{"detail":"Not Found"}` on unknown routes, and on nodes >= 1 of a
//! multi-host server only a dummy `/health`.
//!
//! Every request is stamped the moment it reaches the router, before its
//! body is read; that instant goes to the events log and is where the start
//! delay counts from.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Extension, Json, Router};
use serde_json::json;
use tokio::sync::oneshot;

use crate::config::ServerKind;
use crate::requests;
use crate::scheduler::{ProfileError, Request as SchedulerRequest, StartParams};
use crate::server::Shared;
use crate::unix_now_ns;

/// When a request reached the server.
#[derive(Debug, Clone, Copy)]
struct Received {
    at: Instant,
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let routes = if shared.config.node_rank == 0 {
        Router::new()
            .route("/health", any(health))
            .route("/health_generate", any(health_generate))
            .route("/get_server_info", any(get_server_info))
            .route("/get_model_info", any(get_model_info))
            .route("/start_profile", any(start_profile))
            .route("/stop_profile", any(stop_profile))
            .route("/profile_status", any(profile_status))
            .route("/generate", post(requests::generate))
            .route("/v1/chat/completions", post(requests::chat_completions))
            .route("/v1/completions", post(requests::completions))
            .route("/v1/score", post(requests::score))
            .route("/v1/models", get(requests::models))
    } else {
        Router::new().route("/health", any(health))
    };
    routes
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), api_key))
        .layer(middleware::from_fn_with_state(shared.clone(), arrival))
        .with_state(shared)
}

/// SGLang's API-key middleware (`--api-key`): OPTIONS, `/health*` and
/// `/metrics*` pass; anything else without `Authorization: Bearer <key>`
/// gets `401 {"error": "Unauthorized"}`.
async fn api_key(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let Some(key) = &shared.config.api_key else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    let exempt = request.method() == axum::http::Method::OPTIONS
        || path.starts_with("/health")
        || path.starts_with("/metrics");
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    if exempt || presented == Some(format!("Bearer {key}").as_str()) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": "Unauthorized"})),
    )
        .into_response()
}

/// Stamps the request, logs profiling calls, and holds every request when
/// the server hangs (`--hang`, or a dead scheduler) until shutdown.
async fn arrival(State(shared): State<Arc<Shared>>, mut request: Request, next: Next) -> Response {
    let received = Received { at: Instant::now() };
    let received_unix_ns = unix_now_ns();
    if shared.config.node_rank == 0 {
        let event = match request.uri().path() {
            "/start_profile" => Some("start_profile"),
            "/stop_profile" => Some("stop_profile"),
            _ => None,
        };
        if let (Some(event), Some(log)) = (event, &shared.events_log) {
            log.record(event, received_unix_ns, shared.port);
        }
    }
    if shared.config.faults.hang || shared.crashed.load(Ordering::SeqCst) {
        let mut shutdown = shared.shutdown.clone();
        crate::stopped(&mut shutdown).await;
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    request.extensions_mut().insert(received);
    next.run(request).await
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

/// Starlette's answer to an unhandled exception.
fn internal_error() -> Response {
    plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"detail": "Not Found"}))).into_response()
}

async fn health() -> Response {
    Response::new(Body::empty())
}

async fn health_generate(State(shared): State<Arc<Shared>>) -> Response {
    let (reply, answer) = oneshot::channel();
    if shared
        .requests
        .send(SchedulerRequest::HealthGenerate { reply })
        .await
        .is_err()
    {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    match answer.await {
        Ok(()) => Response::new(Body::empty()),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

async fn get_server_info(State(shared): State<Arc<Shared>>) -> Response {
    let config = &shared.config;
    if config.kind == ServerKind::Vllm {
        return not_found().await;
    }
    Json(json!({
        "model_path": config.model_path,
        "tokenizer_path": config.model_path,
        "host": config.host,
        "port": shared.port,
        "tp_size": config.tp_size,
        "ep_size": config.ep_size,
        "dp_size": config.dp_size,
        "pp_size": config.pp_size,
        "nnodes": config.nnodes,
        "node_rank": config.node_rank,
        "dist_init_addr": config.dist_init_addr,
        "device": config.kind.device(),
        "disaggregation_mode": config.disaggregation_mode.map(|mode| mode.as_str()),
        "load_format": "dummy",
        "random_seed": 0,
        "version": "0.0.2",
        "simulated": true,
    }))
    .into_response()
}

async fn get_model_info(State(shared): State<Arc<Shared>>) -> Response {
    if shared.config.kind == ServerKind::Vllm {
        return not_found().await;
    }
    Json(json!({
        "model_path": shared.config.model_path,
        "tokenizer_path": shared.config.model_path,
        "is_generation": true,
    }))
    .into_response()
}

/// Parses the optional JSON body; a client's `profile_id` is dropped, as the
/// real server ignores it.
fn start_params(body: &Bytes) -> Result<StartParams, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(StartParams::default());
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if value.is_null() {
        return Ok(StartParams::default());
    }
    let mut params: StartParams = serde_json::from_value(value).map_err(|e| e.to_string())?;
    params.profile_id = None;
    Ok(params)
}

async fn start_profile(
    State(shared): State<Arc<Shared>>,
    Extension(received): Extension<Received>,
    body: Bytes,
) -> Response {
    if shared.config.kind == ServerKind::Vllm {
        return vllm_profile(&shared, true, received).await;
    }
    let params = match start_params(&body) {
        Ok(params) => params,
        Err(error) => {
            let detail = json!({"detail": [{"type": "json_invalid", "msg": error}]});
            return (StatusCode::UNPROCESSABLE_ENTITY, Json(detail)).into_response();
        }
    };
    let (reply, answer) = oneshot::channel();
    let request = SchedulerRequest::Start {
        params,
        received: received.at,
        reply,
    };
    profile_answer(&shared, request, answer, "Start profiling.\n").await
}

async fn stop_profile(
    State(shared): State<Arc<Shared>>,
    Extension(received): Extension<Received>,
) -> Response {
    if shared.config.kind == ServerKind::Vllm {
        return vllm_profile(&shared, false, received).await;
    }
    let (reply, answer) = oneshot::channel();
    let request = SchedulerRequest::Stop { reply };
    profile_answer(
        &shared,
        request,
        answer,
        "Stop profiling. This will take some time.\n",
    )
    .await
}

async fn profile_answer(
    shared: &Shared,
    request: SchedulerRequest,
    answer: oneshot::Receiver<Result<(), ProfileError>>,
    success: &'static str,
) -> Response {
    if shared.requests.send(request).await.is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    match answer.await {
        Ok(Ok(())) => plain(StatusCode::OK, success),
        Ok(Err(_)) => internal_error(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// vLLM's profiler routes: there only with a profiler dir; the body is
/// ignored (files go to that dir); a start while profiling and a stop while
/// idle are ignored too; every answer is an empty 200.
async fn vllm_profile(shared: &Shared, start: bool, received: Received) -> Response {
    if !shared.config.vllm_profiler_enabled() {
        return not_found().await;
    }
    let (reply, answer) = oneshot::channel();
    let request = if start {
        SchedulerRequest::Start {
            params: StartParams::default(),
            received: received.at,
            reply,
        }
    } else {
        SchedulerRequest::Stop { reply }
    };
    if shared.requests.send(request).await.is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    match answer.await {
        Ok(Ok(())) | Ok(Err(ProfileError::AlreadyInProgress | ProfileError::NotInProgress)) => {
            Response::new(Body::empty())
        }
        Ok(Err(_)) => internal_error(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

async fn profile_status(State(shared): State<Arc<Shared>>) -> Response {
    if shared.config.kind == ServerKind::Vllm || !shared.config.profile_status_route {
        return not_found().await;
    }
    let status = if shared.profiling.load(Ordering::SeqCst) {
        "in_progress"
    } else {
        "idle"
    };
    Json(json!({"status": status})).into_response()
}
