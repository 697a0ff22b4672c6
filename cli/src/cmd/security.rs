//! The flags every client of the coordinator shares (`rankline capture`,
//! `agents`, `captures`, `stop`, `agent`): which token it sends and how it
//! checks the coordinator over TLS.

use std::path::PathBuf;

use anyhow::Context as _;
use rankline_proto::security::{read_secret_file, ClientSecurity, Secret};

/// The variable a client's token can come in, when no file is given.
const TOKEN_VARIABLE: &str = "RANKLINE_TOKEN";
/// The variable the agent's server API key can come in.
const SERVER_KEY_VARIABLE: &str = "RANKLINE_SERVER_API_KEY";

/// How this client proves itself to the coordinator.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Coordinator security")]
pub struct ClientSecurityArgs {
    /// A file holding this client's token (one line, not world-readable):
    /// one of the tokens in the coordinator's --token-file, of role
    /// `operator` for the CLI, `agent` for an agent. [default: the
    /// RANKLINE_TOKEN variable, if set]
    #[arg(long, env = "RANKLINE_TOKEN_FILE", value_name = "PATH")]
    token_file: Option<PathBuf>,

    /// CA certificates (PEM) to check the coordinator's TLS certificate
    /// against; the coordinator URL is then https://. [default for an
    /// https:// URL: the system's roots]
    #[arg(long, env = "RANKLINE_TLS_CA", value_name = "PEM")]
    tls_ca: Option<PathBuf>,

    /// This client's certificate (PEM), for a coordinator that requires
    /// mutual TLS (--tls-client-ca); an agent's must name its agent id (CN
    /// or a SAN).
    #[arg(
        long,
        env = "RANKLINE_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,

    /// The private key (PEM, not world-readable) of --tls-cert.
    #[arg(
        long,
        env = "RANKLINE_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,

    /// The name the coordinator's certificate must carry, when it is not
    /// the URL's host (e.g. a coordinator reached by IP address).
    #[arg(long, env = "RANKLINE_TLS_SERVER_NAME", value_name = "NAME")]
    tls_server_name: Option<String>,
}

impl ClientSecurityArgs {
    /// The settings these flags (and RANKLINE_TOKEN) describe; files are
    /// read now, so a wrong path fails before anything connects.
    pub fn security(&self) -> anyhow::Result<ClientSecurity> {
        let mut security = ClientSecurity::default();
        if let Some(path) = &self.token_file {
            security = security.with_token_file(path)?;
        } else if let Ok(token) = std::env::var(TOKEN_VARIABLE) {
            security = security.with_token(&token, TOKEN_VARIABLE)?;
        }
        if let Some(ca) = &self.tls_ca {
            security = security.with_tls_ca(ca)?;
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            security = security.with_tls_identity(cert, key)?;
        }
        if let Some(name) = &self.tls_server_name {
            security = security.with_tls_server_name(name);
        }
        Ok(security)
    }
}

/// The agent's key for the server's HTTP API: `--server-api-key-file`, else
/// the RANKLINE_SERVER_API_KEY variable.
pub fn server_api_key(file: Option<&PathBuf>) -> anyhow::Result<Option<Secret>> {
    if let Some(path) = file {
        let key = read_secret_file(path, "server API key file").context("--server-api-key-file")?;
        return Ok(Some(Secret::new(key)));
    }
    match std::env::var(SERVER_KEY_VARIABLE) {
        Ok(key) if !key.trim().is_empty() => Ok(Some(Secret::new(key.trim()))),
        _ => Ok(None),
    }
}
