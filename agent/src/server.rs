//! The local server's profiling HTTP API (SERVERS.md), over one keep-alive
//! connection so that `/start_profile` leaves at once when the instant comes.

use std::path::Path;
use std::time::Duration;

use rankline_proto::security::Secret;
use rankline_proto::CaptureSettings;
use serde_json::{Map, Value};
use thiserror::Error;

use crate::discovery::{Discovered, ServerFacts};

/// Why a server call did not give the answer the agent needed.
#[derive(Debug, Error)]
pub enum ServerError {
    #[error(
        "cannot reach the server at {url} ({call}): {reason}; is it running and is --server right?"
    )]
    Unreachable {
        url: String,
        call: &'static str,
        reason: String,
    },
    #[error(
        "the server at {url} did not answer {call} within {after:?}; it may be hung: check its log, restart it if needed"
    )]
    Timeout {
        url: String,
        call: &'static str,
        after: Duration,
    },
    #[error(
        "the server at {url} refused {call} with HTTP {status}: it requires an API key{}. Give \
         the agent the server's key (SGLang's --api-key or --admin-api-key) with \
         --server-api-key-file PATH or the RANKLINE_SERVER_API_KEY variable",
        if *.sent_key { " and refused the one this agent sent" } else { " and this agent sent none" }
    )]
    Unauthorized {
        url: String,
        call: &'static str,
        status: u16,
        sent_key: bool,
    },
    #[error("the server at {url} answered {call} with HTTP {status}: {body}")]
    Status {
        url: String,
        call: &'static str,
        status: u16,
        body: String,
    },
}

impl ServerError {
    /// The HTTP status of an answer that came back with an error code.
    pub fn status(&self) -> Option<u16> {
        match self {
            ServerError::Status { status, .. } | ServerError::Unauthorized { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
}

/// What `/profile_status` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileStatus {
    InProgress,
    Idle,
    /// The route does not exist (older builds): watch the files instead.
    Unsupported,
}

/// What `/stop_profile` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// 200: the files are written.
    Stopped,
    /// 500: nothing was profiling, e.g. `num_steps` already stopped it.
    WasNotProfiling,
}

/// A client for one server's HTTP API.
#[derive(Debug, Clone)]
pub struct ServerApi {
    base: String,
    http: reqwest::Client,
    request_timeout: Duration,
    stop_timeout: Duration,
    /// Sent as `Authorization: Bearer` with every call.
    api_key: Option<Secret>,
}

impl ServerApi {
    pub fn new(
        base_url: &str,
        connect_timeout: Duration,
        request_timeout: Duration,
        stop_timeout: Duration,
        api_key: Option<Secret>,
    ) -> Result<ServerApi, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            // One warm connection is all a start needs; uvicorn keeps an idle
            // one for 5 s, so the agent warms it just before the instant.
            .pool_max_idle_per_host(1)
            .no_proxy()
            .build()?;
        Ok(ServerApi {
            base: base_url.trim_end_matches('/').to_string(),
            http,
            request_timeout,
            stop_timeout,
            api_key,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET /health`; also opens the keep-alive connection a start reuses.
    pub async fn health(&self) -> Result<(), ServerError> {
        self.call(reqwest::Method::GET, "/health", None, self.request_timeout)
            .await
            .map(drop)
    }

    /// Asks the server who it is: its facts when it serves the API, a
    /// secondary node when only `/health` answers.
    pub async fn discover(&self) -> Result<Discovered, ServerError> {
        match self
            .call(
                reqwest::Method::GET,
                "/get_server_info",
                None,
                self.request_timeout,
            )
            .await
        {
            Ok(body) => {
                let info: Value = serde_json::from_str(&body).map_err(|e| ServerError::Status {
                    url: self.base.clone(),
                    call: "GET /get_server_info",
                    status: 200,
                    body: format!("not JSON ({e})"),
                })?;
                Ok(Discovered::ApiNode(ServerFacts::from_server_info(&info)))
            }
            Err(error) if error.status() == Some(404) => {
                self.health().await?;
                Ok(Discovered::SecondaryNode)
            }
            Err(error) => Err(error),
        }
    }

    pub async fn start_profile(&self, body: &Map<String, Value>) -> Result<(), ServerError> {
        let body = Value::Object(body.clone());
        self.call(
            reqwest::Method::POST,
            "/start_profile",
            Some(body),
            self.request_timeout,
        )
        .await
        .map(drop)
    }

    pub async fn stop_profile(&self) -> Result<StopOutcome, ServerError> {
        match self
            .call(
                reqwest::Method::POST,
                "/stop_profile",
                None,
                self.stop_timeout,
            )
            .await
        {
            Ok(_) => Ok(StopOutcome::Stopped),
            Err(error) if error.status() == Some(500) => Ok(StopOutcome::WasNotProfiling),
            Err(error) => Err(error),
        }
    }

    pub async fn profile_status(&self) -> Result<ProfileStatus, ServerError> {
        match self
            .call(
                reqwest::Method::GET,
                "/profile_status",
                None,
                self.request_timeout,
            )
            .await
        {
            Ok(body) => {
                let status = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v.get("status").and_then(Value::as_str).map(str::to_string));
                // Anything but an explicit "idle" means the profile still runs.
                Ok(match status.as_deref() {
                    Some("idle") => ProfileStatus::Idle,
                    _ => ProfileStatus::InProgress,
                })
            }
            Err(error) if error.status() == Some(404) => Ok(ProfileStatus::Unsupported),
            Err(error) => Err(error),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &'static str,
        body: Option<Value>,
        timeout: Duration,
    ) -> Result<String, ServerError> {
        let call = match (method.as_str(), path) {
            ("GET", "/health") => "GET /health",
            ("GET", "/get_server_info") => "GET /get_server_info",
            ("GET", "/profile_status") => "GET /profile_status",
            ("POST", "/start_profile") => "POST /start_profile",
            ("POST", "/stop_profile") => "POST /stop_profile",
            _ => path,
        };
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(timeout);
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(key) = &self.api_key {
            // reqwest marks the header sensitive: it stays out of its logs.
            request = request.bearer_auth(key.expose());
        }
        let failed = |error: reqwest::Error| {
            if error.is_timeout() {
                ServerError::Timeout {
                    url: self.base.clone(),
                    call,
                    after: timeout,
                }
            } else {
                ServerError::Unreachable {
                    url: self.base.clone(),
                    call,
                    reason: root_cause(&error),
                }
            }
        };
        let response = request.send().await.map_err(failed)?;
        let status = response.status();
        let text = response.text().await.map_err(failed)?;
        if status.is_success() {
            Ok(text)
        } else if status == reqwest::StatusCode::UNAUTHORIZED
            || status == reqwest::StatusCode::FORBIDDEN
        {
            Err(ServerError::Unauthorized {
                url: self.base.clone(),
                call,
                status: status.as_u16(),
                sent_key: self.api_key.is_some(),
            })
        } else {
            Err(ServerError::Status {
                url: self.base.clone(),
                call,
                status: status.as_u16(),
                body: text.trim().chars().take(200).collect(),
            })
        }
    }
}

/// The innermost cause ("Connection refused (os error 111)"): the outer
/// layers only repeat the URL the message already names.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

/// The `/start_profile` JSON body: the capture's server arguments (values
/// that parse as JSON are sent as JSON, the rest as strings), then the
/// settings rankline knows, then the agent's own `output_dir`, which nothing
/// from the wire may replace.
pub fn start_body(settings: &CaptureSettings, output_dir: &Path) -> Map<String, Value> {
    let mut body = Map::new();
    for (key, raw) in &settings.server_args {
        let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.clone()));
        body.insert(key.clone(), value);
    }
    let numbers = [
        ("num_steps", settings.num_steps),
        ("start_step", settings.start_step),
        ("host_tracer_level", settings.host_tracer_level),
        ("python_tracer_level", settings.python_tracer_level),
    ];
    for (key, value) in numbers {
        if let Some(value) = value {
            body.insert(key.to_string(), Value::from(value));
        }
    }
    body.insert(
        "output_dir".to_string(),
        Value::String(output_dir.to_string_lossy().into_owned()),
    );
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_settings_server_args_and_our_output_dir() {
        let settings = CaptureSettings {
            num_steps: Some(5),
            host_tracer_level: Some(2),
            server_args: [
                ("output_dir".to_string(), "/etc".to_string()),
                ("activities".to_string(), r#"["CPU","GPU"]"#.to_string()),
                ("profile_prefix".to_string(), "run-a".to_string()),
                ("with_stack".to_string(), "true".to_string()),
            ]
            .into_iter()
            .collect(),
            ..CaptureSettings::default()
        };
        let body = start_body(&settings, Path::new("/spool/captures/c/unified-0"));
        assert_eq!(body["output_dir"], "/spool/captures/c/unified-0");
        assert_eq!(body["num_steps"], 5);
        assert_eq!(body["host_tracer_level"], 2);
        assert!(!body.contains_key("start_step"));
        assert_eq!(body["activities"], serde_json::json!(["CPU", "GPU"]));
        assert_eq!(body["profile_prefix"], "run-a");
        assert_eq!(body["with_stack"], true);
    }
}
