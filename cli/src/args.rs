//! The flags several subcommands share, each defined once and flattened
//! where needed: where the coordinator is and how a client proves itself
//! to it (`capture`, `stop`, `agents`, `captures`, `agent`), and the TLS
//! certificate a process presents (those clients and `coordinator`).

use std::path::{Path, PathBuf};

use rankline_client::{self as client, Client, DEFAULT_COORDINATOR_URL};
use rankline_proto::security::ClientSecurity;

/// The variable a client's token can come in, when no file is given.
const TOKEN_VARIABLE: &str = "RANKLINE_TOKEN";

/// Where the coordinator is and how to prove who this is, for every
/// subcommand that talks to it.
#[derive(Debug, clap::Args)]
pub(crate) struct CoordinatorArg {
    /// The coordinator's URL (what `rankline coordinator` printed).
    #[arg(
        long,
        env = "RANKLINE_COORDINATOR",
        value_name = "URL",
        default_value = DEFAULT_COORDINATOR_URL,
        // First in every command's options, though flattened last.
        display_order = 0
    )]
    pub(crate) coordinator: String,

    #[command(flatten, next_help_heading = "Coordinator security")]
    pub(crate) security: ClientSecurityArgs,
}

impl CoordinatorArg {
    pub(crate) async fn connect(&self) -> anyhow::Result<Client> {
        let security = self.security.security()?;
        Ok(client::connect_with(&self.coordinator, &security).await?)
    }

    /// A failed call as an error that says what to do.
    pub(crate) fn failed(&self, status: &tonic::Status) -> anyhow::Error {
        anyhow::anyhow!(self.hint(&client::explain_status(&self.coordinator, status)))
    }

    /// `text` with `--coordinator URL` added to every `rankline <command>`
    /// it names that talks to the coordinator, when the URL is not the
    /// default: a printed next step then runs as printed.
    pub(crate) fn hint(&self, text: &str) -> String {
        if self.coordinator == DEFAULT_COORDINATOR_URL {
            return text.to_string();
        }
        with_coordinator_flag(text, &self.coordinator)
    }
}

/// The flags of a command that lists what the coordinator knows
/// (`agents`, `captures`).
#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    /// A JSON array instead of a table.
    #[arg(long)]
    pub(crate) json: bool,

    // Last: its security flags open their own help section.
    #[command(flatten)]
    pub(crate) coordinator: CoordinatorArg,
}

/// Adds ` --coordinator URL` inside each backquoted client command of `text`.
fn with_coordinator_flag(text: &str, url: &str) -> String {
    const CLIENT_COMMANDS: [&str; 4] = ["capture", "stop ", "agents", "captures"];
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    while let Some(start) = rest.find("`rankline ") {
        let (before, from) = rest.split_at(start + 1);
        out.push_str(before);
        let Some(end) = from.find('`') else {
            rest = from;
            break;
        };
        let command = &from[..end];
        out.push_str(command);
        let words = &command["rankline ".len()..];
        if CLIENT_COMMANDS.iter().any(|c| words.starts_with(c))
            && !command.contains("--coordinator")
        {
            out.push_str(" --coordinator ");
            out.push_str(url);
        }
        rest = &from[end..];
    }
    out.push_str(rest);
    out
}

/// How this client proves itself to the coordinator.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct ClientSecurityArgs {
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

    #[command(flatten)]
    identity: TlsIdentityArgs,

    /// The name the coordinator's certificate must carry, when it is not
    /// the URL's host (e.g. a coordinator reached by IP address).
    #[arg(long, env = "RANKLINE_TLS_SERVER_NAME", value_name = "NAME")]
    tls_server_name: Option<String>,
}

impl ClientSecurityArgs {
    /// The settings these flags (and RANKLINE_TOKEN) describe; files are
    /// read now, so a wrong path fails before anything connects.
    pub(crate) fn security(&self) -> anyhow::Result<ClientSecurity> {
        let mut security = ClientSecurity::default();
        if let Some(path) = &self.token_file {
            security = security.with_token_file(path)?;
        } else if let Ok(token) = std::env::var(TOKEN_VARIABLE) {
            security = security.with_token(&token, TOKEN_VARIABLE)?;
        }
        if let Some(ca) = &self.tls_ca {
            security = security.with_tls_ca(ca)?;
        }
        if let Some((cert, key)) = self.identity.pair() {
            security = security.with_tls_identity(cert, key)?;
        }
        if let Some(name) = &self.tls_server_name {
            security = security.with_tls_server_name(name);
        }
        Ok(security)
    }
}

/// The certificate this process presents over TLS and its key: the
/// coordinator's own, or a client's for mutual TLS.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct TlsIdentityArgs {
    /// This process's TLS certificate chain (PEM): a coordinator's own
    /// (clients then use https:// with --tls-ca), or a client's for a
    /// coordinator that requires mutual TLS (--tls-client-ca; an agent's
    /// must name its agent id, CN or a SAN).
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
}

impl TlsIdentityArgs {
    /// The certificate and key, when both are given (clap requires both or
    /// neither).
    pub(crate) fn pair(&self) -> Option<(&Path, &Path)> {
        Some((self.tls_cert.as_deref()?, self.tls_key.as_deref()?))
    }
}

#[cfg(test)]
mod tests {
    use super::with_coordinator_flag;

    #[test]
    fn printed_client_commands_carry_the_coordinator() {
        let url = "http://10.0.0.1:9000";
        assert_eq!(
            with_coordinator_flag("see `rankline capture show c1 --follow` or `rankline stop c1`", url),
            "see `rankline capture show c1 --follow --coordinator http://10.0.0.1:9000` or `rankline stop c1 --coordinator http://10.0.0.1:9000`"
        );
        let untouched = "start it with `rankline coordinator --listen 0.0.0.0:7471`; merge with `rankline merge c1 -o c.pftrace`";
        assert_eq!(with_coordinator_flag(untouched, url), untouched);
        assert_eq!(
            with_coordinator_flag("`rankline agents --coordinator x`, `rankline", url),
            "`rankline agents --coordinator x`, `rankline"
        );
    }
}
