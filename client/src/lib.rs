//! The client side of the coordinator's `Control` service, as the CLI and
//! the tests use it: connecting (with errors that say what to do next) and,
//! in [`render`], what the answers look like for people and for scripts.
//! The coordinator crate holds only the server side.

pub mod render;

use std::error::Error as _;
use std::time::Duration;

use rankline_proto::control_client::ControlClient;
use rankline_proto::error_chain;
use rankline_proto::security::{refusal_advice, ClientSecurity, SecureChannel, SecurityError};
use tonic::{Code, Status};

pub use rankline_proto::DEFAULT_COORDINATOR_URL;

/// How long to wait for a coordinator to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connected `Control` client (its calls carry the token, if any).
pub type Client = ControlClient<SecureChannel>;

/// Why the CLI could not talk to a coordinator.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error(
        "cannot reach the coordinator at {url} ({reason}). Is `rankline coordinator` running \
         there? Start it with `rankline coordinator --listen {listen}`, or point to another one \
         with --coordinator URL (or RANKLINE_COORDINATOR)"
    )]
    Unreachable {
        url: String,
        listen: String,
        reason: String,
    },
}

/// Connects to the coordinator at `url` as an anonymous plain client.
pub async fn connect(url: &str) -> Result<Client, ClientError> {
    connect_with(url, &ClientSecurity::default()).await
}

/// Connects to the coordinator at `url` with `security` (eagerly, so a
/// coordinator that is not there is reported now, not at the first call).
pub async fn connect_with(url: &str, security: &ClientSecurity) -> Result<Client, ClientError> {
    let url = security.normalize_url(url);
    let endpoint = security
        .endpoint(&url)?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| ClientError::Unreachable {
            listen: listen_address(&url),
            url: url.clone(),
            reason: error_chain(&e),
        })?;
    Ok(ControlClient::new(security.wrap(channel)))
}

/// A failed call, for a person: the coordinator's message, plus what to do
/// when the coordinator itself went away.
pub fn explain_status(url: &str, status: &Status) -> String {
    match status.code() {
        Code::Unavailable if status.message().contains("shutting down") => format!(
            "{} (coordinator {url}); start it again with `rankline coordinator`",
            status.message()
        ),
        Code::Unavailable | Code::Unknown | Code::Cancelled => format!(
            "lost the coordinator at {url} ({}); is `rankline coordinator` still running? \
             Start it with `rankline coordinator --listen {}`",
            status_text(status),
            listen_address(url)
        ),
        Code::Unauthenticated | Code::PermissionDenied => {
            refusal_advice(status).unwrap_or_else(|| status.message().to_string())
        }
        _ => status.message().to_string(),
    }
}

fn status_text(status: &Status) -> String {
    match status.source() {
        Some(source) => format!("{}: {}", status.message(), error_chain(source)),
        None => status.message().to_string(),
    }
}

/// `http://host:port` → `host:port`, for the `--listen` hint.
fn listen_address(url: &str) -> String {
    url.split_once("://")
        .map_or(url, |(_, rest)| rest)
        .trim_end_matches('/')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_hints_drop_the_scheme() {
        assert_eq!(listen_address("http://h:1"), "h:1");
        assert_eq!(listen_address("h:1/"), "h:1");
    }

    #[tokio::test]
    async fn an_absent_coordinator_says_how_to_start_one() {
        // Bind then drop: the port is (almost surely) closed afterwards.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let error = connect(&format!("127.0.0.1:{port}")).await.unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("rankline coordinator --listen 127.0.0.1:"),
            "{text}"
        );
    }
}
