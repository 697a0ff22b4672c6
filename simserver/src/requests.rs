//! The inference routes a workload drives: SGLang's `/generate`, OpenAI
//! `/v1/chat/completions` and `/v1/completions`, SGLang's `/v1/score`, and
//! `/v1/models`. A request joins the scheduler's running batch for as many
//! forward steps as it has output tokens (a score: one prefill step), so
//! the profiled steps show the batch it made; without requests they are
//! idle steps (`batch_size` 0).
//!
//! As on the real server, the OpenAI-style routes refuse a body without a
//! `model` field with a 400 whose message is pydantic's (seed 004).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::scheduler::Request as SchedulerRequest;
use crate::server::Shared;
use crate::unix_now_ns;

/// What a route needs from its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Generate,
    Chat,
    Completions,
    Score,
}

impl Route {
    fn requires_model(self) -> bool {
        !matches!(self, Route::Generate)
    }
}

pub(crate) async fn generate(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    serve(&shared, Route::Generate, &body).await
}

pub(crate) async fn chat_completions(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    serve(&shared, Route::Chat, &body).await
}

pub(crate) async fn completions(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    serve(&shared, Route::Completions, &body).await
}

pub(crate) async fn score(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    serve(&shared, Route::Score, &body).await
}

pub(crate) async fn models(State(shared): State<Arc<Shared>>) -> Response {
    let model = &shared.config.model_path;
    Json(json!({
        "object": "list",
        "data": [{"id": model, "object": "model", "owned_by": "sglang", "root": model}],
    }))
    .into_response()
}

/// The 400 FastAPI/pydantic gives through SGLang's OpenAI error handler.
fn bad_request(detail: &str) -> Response {
    let body = json!({
        "object": "error",
        "message": detail,
        "type": "Bad Request",
        "param": null,
        "code": 400,
    });
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

fn missing_field(field: &str, input: &Value) -> Response {
    bad_request(&format!(
        "[{{'type': 'missing', 'loc': ('body', '{field}'), 'msg': 'Field required', 'input': {input}}}]"
    ))
}

/// Words in a prompt stand for tokens; `input_ids` count as given.
fn prompt_tokens(route: Route, body: &Value) -> u64 {
    let words = |value: Option<&Value>| -> u64 {
        match value {
            Some(Value::String(text)) => text.split_whitespace().count() as u64,
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::Number(_) => 1,
                    other => words_in(other),
                })
                .sum(),
            _ => 0,
        }
    };
    let count = match route {
        Route::Generate => body
            .get("input_ids")
            .map(|ids| words(Some(ids)))
            .unwrap_or_else(|| words(body.get("text"))),
        Route::Chat => body
            .get("messages")
            .and_then(Value::as_array)
            .map(|messages| messages.iter().map(|m| words(m.get("content"))).sum())
            .unwrap_or(0),
        Route::Completions => words(body.get("prompt")),
        Route::Score => words(body.get("query")) + words(body.get("items")),
    };
    count.max(1)
}

fn words_in(value: &Value) -> u64 {
    value
        .as_str()
        .map_or(0, |t| t.split_whitespace().count() as u64)
}

/// Output tokens asked for (`max_new_tokens` / `max_tokens`, default 16).
fn output_tokens(route: Route, body: &Value) -> u64 {
    let asked = match route {
        Route::Generate => body
            .get("sampling_params")
            .and_then(|p| p.get("max_new_tokens")),
        Route::Chat | Route::Completions => body
            .get("max_tokens")
            .or_else(|| body.get("max_completion_tokens")),
        Route::Score => return 0,
    };
    asked.and_then(Value::as_u64).unwrap_or(16)
}

async fn serve(shared: &Shared, route: Route, raw: &Bytes) -> Response {
    let body: Value = match serde_json::from_slice(raw) {
        Ok(value @ Value::Object(_)) => value,
        Ok(_) | Err(_) => {
            return bad_request(
                "[{'type': 'json_invalid', 'loc': ('body',), 'msg': 'JSON decode error'}]",
            )
        }
    };
    if shared.config.faults.reject_requests {
        return missing_field("model", &body);
    }
    if route.requires_model() && body.get("model").and_then(Value::as_str).is_none() {
        return missing_field("model", &body);
    }
    if route == Route::Score && body.get("label_token_ids").is_none() {
        return missing_field("label_token_ids", &body);
    }
    let (prompt, output) = (prompt_tokens(route, &body), output_tokens(route, &body));
    // A prefill step, then one decode step per output token after the first.
    let steps = output.max(1);
    let (reply, served) = oneshot::channel();
    let request = SchedulerRequest::Generate { steps, reply };
    if shared.requests.send(request).await.is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if served.await.is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(&shared.config.model_path)
        .to_string();
    let id = format!("{:x}", unix_now_ns());
    let created = unix_now_ns() / 1_000_000_000;
    let text = "sim ".repeat(output as usize).trim_end().to_string();
    let usage = json!({
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
    });
    let answer = match route {
        Route::Generate => json!({
            "text": text,
            "meta_info": {
                "id": id,
                "prompt_tokens": prompt,
                "completion_tokens": output,
                "finish_reason": {"type": "length", "length": output},
            },
        }),
        Route::Chat => json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "length"}],
            "usage": usage,
        }),
        Route::Completions => json!({
            "id": id, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": "length"}],
            "usage": usage,
        }),
        Route::Score => {
            let items = body
                .get("items")
                .and_then(Value::as_array)
                .map_or(1, Vec::len);
            let labels = body
                .get("label_token_ids")
                .and_then(Value::as_array)
                .map_or(1, Vec::len)
                .max(1);
            let share = 1.0 / labels as f64;
            json!({
                "scores": vec![vec![share; labels]; items],
                "model": model,
                "usage": usage,
                "object": "scoring",
            })
        }
    };
    Json(answer).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_counted_from_the_body() {
        let chat = json!({"messages": [{"role": "user", "content": "a b c"}], "max_tokens": 4});
        assert_eq!(prompt_tokens(Route::Chat, &chat), 3);
        assert_eq!(output_tokens(Route::Chat, &chat), 4);
        let generate = json!({"input_ids": [1, 2, 3, 4], "sampling_params": {"max_new_tokens": 2}});
        assert_eq!(prompt_tokens(Route::Generate, &generate), 4);
        assert_eq!(output_tokens(Route::Generate, &generate), 2);
        let score = json!({"query": "is it good", "items": ["yes", "no"]});
        assert_eq!(prompt_tokens(Route::Score, &score), 5);
        assert_eq!(output_tokens(Route::Score, &score), 0);
    }
}
