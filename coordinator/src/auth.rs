//! Who may talk to the coordinator, and who did.
//!
//! * [`TokenTable`]: the `--token-file`, one token per line with a name and
//!   the roles it grants (`agent`: AgentLink; `operator`: Control). Tokens
//!   are compared in constant time and never logged; only their names are.
//! * [`ServerTls`]: the coordinator's certificate and, for mutual TLS, the
//!   CA that agents' certificates must chain to.
//! * [`Gate`]: a tonic interceptor per service that checks every call
//!   (UNAUTHENTICATED without a known token or a required certificate,
//!   PERMISSION_DENIED for a token of the wrong role) and leaves a
//!   [`Caller`] in the request for the audit lines and the agent-id check.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rankline_proto::security::{read_ca, read_identity, read_secret_file, SecurityError};
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::{Request, Status};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Tokens shorter than this are refused: a token is a password for the
/// whole fleet.
pub const MIN_TOKEN_LENGTH: usize = 16;
/// Longest token name (it goes into audit lines).
const MAX_NAME_LENGTH: usize = 64;

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRole {
    /// `AgentLink`: join as an agent, report ranks, probe the clock.
    Agent,
    /// `Control`: list agents and captures, start and stop captures.
    Operator,
}

impl TokenRole {
    pub fn word(self) -> &'static str {
        match self {
            TokenRole::Agent => "agent",
            TokenRole::Operator => "operator",
        }
    }

    fn service(self) -> &'static str {
        match self {
            TokenRole::Agent => "AgentLink (agents)",
            TokenRole::Operator => "Control (the CLI)",
        }
    }
}

/// Why the coordinator's security settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    File(#[from] SecurityError),
    #[error("{origin} line {line}: {reason}. Lines are `NAME ROLE TOKEN` (ROLE: agent, operator or agent,operator); `#` starts a comment")]
    Line {
        origin: String,
        line: usize,
        reason: String,
    },
    #[error("{origin} holds no token; add lines `NAME ROLE TOKEN`")]
    NoTokens { origin: String },
}

struct TokenEntry {
    name: String,
    roles: Vec<TokenRole>,
    token: Vec<u8>,
}

/// The tokens a coordinator accepts.
pub struct TokenTable {
    entries: Vec<TokenEntry>,
}

impl fmt::Debug for TokenTable {
    // Names only, never the tokens.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|entry| &entry.name))
            .finish()
    }
}

impl TokenTable {
    /// Reads a token table; the file must not be world-readable.
    pub fn load(path: &Path) -> Result<TokenTable, AuthError> {
        let text = read_secret_file(path, "token file")?;
        TokenTable::parse(&text, &path.display().to_string())
    }

    /// Parses lines `NAME ROLE TOKEN` (blank lines and `#` comments
    /// skipped). Names and tokens must be unique.
    pub fn parse(text: &str, origin: &str) -> Result<TokenTable, AuthError> {
        let mut entries: Vec<TokenEntry> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let bad = |reason: String| AuthError::Line {
                origin: origin.to_string(),
                line: index + 1,
                reason,
            };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, roles, token] = fields[..] else {
                return Err(bad(format!("{} fields instead of 3", fields.len())));
            };
            if name.len() > MAX_NAME_LENGTH
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c))
            {
                return Err(bad(format!(
                    "name {name:?} must be at most {MAX_NAME_LENGTH} letters, digits, '.', '_', '@' or '-'"
                )));
            }
            let roles = roles
                .split(',')
                .map(|word| match word {
                    "agent" => Ok(TokenRole::Agent),
                    "operator" => Ok(TokenRole::Operator),
                    other => Err(bad(format!("unknown role {other:?}"))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            if token.len() < MIN_TOKEN_LENGTH || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad(format!(
                    "the token of {name} must be at least {MIN_TOKEN_LENGTH} printable characters \
                     (e.g. `openssl rand -hex 32`)"
                )));
            }
            if entries.iter().any(|entry| entry.name == name) {
                return Err(bad(format!("the name {name} is used twice")));
            }
            if entries.iter().any(|entry| entry.token == token.as_bytes()) {
                return Err(bad(format!(
                    "the token of {name} is also another name's; give each holder its own"
                )));
            }
            entries.push(TokenEntry {
                name: name.to_string(),
                roles,
                token: token.as_bytes().to_vec(),
            });
        }
        if entries.is_empty() {
            return Err(AuthError::NoTokens {
                origin: origin.to_string(),
            });
        }
        Ok(TokenTable { entries })
    }

    /// How many tokens the table holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the table holds no token (never for a parsed table).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry whose token is `presented`. Every entry is compared, each
    /// in constant time, so the time taken says nothing about how close a
    /// guess was.
    fn find(&self, presented: &[u8]) -> Option<&TokenEntry> {
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.token.as_slice().ct_eq(presented)) {
                found = Some(entry);
            }
        }
        found
    }
}

/// The coordinator's TLS identity and, for mutual TLS, the CA that client
/// certificates must chain to.
#[derive(Clone)]
pub struct ServerTls {
    identity: Identity,
    client_ca: Option<Certificate>,
}

impl fmt::Debug for ServerTls {
    // The identity holds the private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("mutual", &self.client_ca.is_some())
            .finish()
    }
}

impl ServerTls {
    /// Reads the certificate, its key (not world-readable) and the optional
    /// client CA.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<ServerTls, AuthError> {
        Ok(ServerTls {
            identity: read_identity(cert, key)?,
            client_ca: client_ca
                .map(|path| read_ca(path, "TLS client CA"))
                .transpose()?,
        })
    }

    pub(crate) fn config(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new().identity(self.identity.clone());
        match &self.client_ca {
            // Optional at the TLS level: the gate decides which service
            // needs a certificate (agents always; the CLI when there are no
            // tokens), so a CLI with a token needs none.
            Some(ca) => config.client_ca_root(ca.clone()).client_auth_optional(true),
            None => config,
        }
    }
}

/// Everything about who may connect. `Default`: anyone (plain gRPC).
#[derive(Debug, Clone, Default)]
pub struct Security {
    pub tokens: Option<Arc<TokenTable>>,
    pub tls: Option<ServerTls>,
}

impl Security {
    /// True when agents must present a certificate (mutual TLS).
    pub fn mutual_tls(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| tls.client_ca.is_some())
    }

    /// True when some call is refused without a token or a certificate.
    pub fn authenticates(&self) -> bool {
        self.tokens.is_some() || self.mutual_tls()
    }

    /// What is on, for the start-up log line: e.g. `3 tokens, mutual TLS`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(tokens) = &self.tokens {
            parts.push(format!("{} tokens", tokens.len()));
        }
        match &self.tls {
            Some(tls) if tls.client_ca.is_some() => parts.push("mutual TLS".to_string()),
            Some(_) => parts.push("TLS".to_string()),
            None => {}
        }
        if parts.is_empty() {
            "none (plain, no authentication)".to_string()
        } else {
            parts.join(", ")
        }
    }

    /// `https` with TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The interceptor for the service `role` may use.
    pub(crate) fn gate(&self, role: TokenRole) -> Gate {
        Gate {
            role,
            tokens: self.tokens.clone(),
            // Agents prove their id with their certificate; the CLI does
            // when there is no token to prove anything with.
            certificate_required: self.mutual_tls()
                && (role == TokenRole::Agent || self.tokens.is_none()),
        }
    }
}

/// What a client certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CertificateIdentity {
    /// The subject, e.g. `CN=host0/unified-0/TP-0-EP-0`.
    pub subject: String,
    /// Its common names, DNS names and URIs: the ids it may use.
    pub names: Vec<String>,
}

impl CertificateIdentity {
    fn parse(der: &[u8]) -> Option<CertificateIdentity> {
        let (_, certificate) = X509Certificate::from_der(der).ok()?;
        let mut names: Vec<String> = certificate
            .subject()
            .iter_common_name()
            .filter_map(|name| name.as_str().ok().map(str::to_string))
            .collect();
        if let Ok(Some(alternatives)) = certificate.subject_alternative_name() {
            for name in &alternatives.value.general_names {
                match name {
                    GeneralName::DNSName(name) | GeneralName::URI(name) => {
                        names.push((*name).to_string())
                    }
                    _ => {}
                }
            }
        }
        Some(CertificateIdentity {
            subject: certificate.subject().to_string(),
            names,
        })
    }
}

/// Who made a call, as the gate established it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Caller {
    /// The name of the token it presented.
    pub token: Option<String>,
    pub certificate: Option<CertificateIdentity>,
    pub peer: Option<SocketAddr>,
}

impl Caller {
    /// The caller of `request` (anonymous when no gate ran).
    pub fn of<T>(request: &Request<T>) -> Caller {
        request
            .extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or_else(|| Caller {
                peer: request.remote_addr(),
                ..Caller::default()
            })
    }

    /// For an audit line: `token alice from 10.0.0.5:41234`,
    /// `certificate CN=ops from ...`, or `anonymous from ...`.
    pub fn describe(&self) -> String {
        let mut who = match (&self.token, &self.certificate) {
            (Some(token), _) => format!("token {token}"),
            (None, Some(certificate)) => format!("certificate {}", certificate.subject),
            (None, None) => "anonymous".to_string(),
        };
        if let Some(peer) = self.peer {
            who.push_str(&format!(" from {peer}"));
        }
        who
    }

    /// Under mutual TLS an agent may only use an id its certificate names.
    pub fn check_agent_id(&self, agent_id: &str, mutual_tls: bool) -> Result<(), Status> {
        if !mutual_tls {
            return Ok(());
        }
        let Some(certificate) = &self.certificate else {
            return Err(Status::unauthenticated(
                "this coordinator requires agents to present a client certificate; give the \
                 agent --tls-cert and --tls-key",
            ));
        };
        if certificate.names.iter().any(|name| name == agent_id) {
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "the client certificate ({}) names {:?}, not the agent id {agent_id:?} this agent \
             claims; issue the agent a certificate whose CN or a SAN is its id, or pass \
             --agent-id with one of those names",
            certificate.subject, certificate.names
        )))
    }
}

/// Checks every call of one service; see the module comment.
#[derive(Clone)]
pub(crate) struct Gate {
    role: TokenRole,
    tokens: Option<Arc<TokenTable>>,
    certificate_required: bool,
}

impl Interceptor for Gate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let certificate = request.peer_certs().and_then(|chain| {
            chain
                .first()
                .and_then(|der| CertificateIdentity::parse(der))
        });
        let token = match &self.tokens {
            Some(table) => Some(self.check_token(table, request.metadata())?),
            None => None,
        };
        if self.certificate_required && certificate.is_none() {
            return Err(Status::unauthenticated(format!(
                "{} on this coordinator requires a client certificate signed by its client CA; \
                 give --tls-cert and --tls-key",
                self.role.service()
            )));
        }
        let caller = Caller {
            token,
            certificate,
            peer: request.remote_addr(),
        };
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

impl Gate {
    /// The name of the token the call carries, if it may use this service.
    fn check_token(&self, table: &TokenTable, metadata: &MetadataMap) -> Result<String, Status> {
        let presented = metadata
            .get(rankline_proto::security::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
            })
            .map(str::trim);
        let Some(presented) = presented else {
            return Err(Status::unauthenticated(format!(
                "this coordinator requires a token and the call carried none; give a {} token \
                 with {}",
                self.role.word(),
                rankline_proto::security::TOKEN_HINT
            )));
        };
        let Some(entry) = table.find(presented.as_bytes()) else {
            tracing::warn!(
                role = self.role.word(),
                "refused a call with an unknown token"
            );
            return Err(Status::unauthenticated(format!(
                "the token is not one this coordinator knows; give a {} token from its token \
                 file with {}",
                self.role.word(),
                rankline_proto::security::TOKEN_HINT
            )));
        };
        if !entry.roles.contains(&self.role) {
            tracing::warn!(token = %entry.name, service = self.role.service(), "refused a token of another role");
            return Err(Status::permission_denied(format!(
                "token {} may not use {}: it has the role {}, this needs {}",
                entry.name,
                self.role.service(),
                entry
                    .roles
                    .iter()
                    .map(|role| role.word())
                    .collect::<Vec<_>>()
                    .join(","),
                self.role.word()
            )));
        }
        Ok(entry.name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
# who      role            token
node-agents agent          0123456789abcdef0123
alice       operator       fedcba9876543210fedc
ci          agent,operator aaaaaaaaaaaaaaaaaaaa
";

    fn call(gate: &mut Gate, token: Option<&str>) -> Result<Caller, Status> {
        let mut request = Request::new(());
        if let Some(token) = token {
            request.metadata_mut().insert(
                rankline_proto::security::AUTHORIZATION,
                format!("Bearer {token}").parse().unwrap(),
            );
        }
        let request = gate.call(request)?;
        Ok(Caller::of(&request))
    }

    fn security() -> Security {
        Security {
            tokens: Some(Arc::new(TokenTable::parse(TABLE, "test").unwrap())),
            tls: None,
        }
    }

    #[test]
    fn tokens_grant_their_roles_only() {
        let security = security();
        let mut control = security.gate(TokenRole::Operator);
        let mut link = security.gate(TokenRole::Agent);
        let caller = call(&mut control, Some("fedcba9876543210fedc")).unwrap();
        assert_eq!(caller.describe(), "token alice");
        assert_eq!(
            call(&mut control, Some("0123456789abcdef0123"))
                .unwrap_err()
                .code(),
            tonic::Code::PermissionDenied
        );
        assert!(call(&mut link, Some("0123456789abcdef0123")).is_ok());
        assert!(call(&mut link, Some("aaaaaaaaaaaaaaaaaaaa")).is_ok());
        assert!(call(&mut control, Some("aaaaaaaaaaaaaaaaaaaa")).is_ok());
        let missing = call(&mut control, None).unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
        assert!(missing.message().contains("RANKLINE_TOKEN"), "{missing:?}");
        let wrong = call(&mut link, Some("0123456789abcdef0124")).unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn bad_tables_say_which_line() {
        for (text, expected) in [
            ("a agent short", "at least 16"),
            ("a admin 0123456789abcdef0123", "unknown role"),
            ("a agent", "2 fields"),
            (
                "a agent 0123456789abcdef0123\na operator 0123456789abcdef9999",
                "used twice",
            ),
            (
                "a agent 0123456789abcdef0123\nb operator 0123456789abcdef0123",
                "also another",
            ),
            ("# nothing", "holds no token"),
        ] {
            let error = TokenTable::parse(text, "t").unwrap_err().to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
        let table = TokenTable::parse(TABLE, "t").unwrap();
        assert_eq!(table.len(), 3);
        assert!(!format!("{table:?}").contains("0123456789"));
    }

    #[test]
    fn a_certificate_names_its_holder_by_cn_and_sans() {
        let mut params = rcgen::CertificateParams::new(vec!["agent.example".to_string()]).unwrap();
        params.subject_alt_names.push(rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from("spiffe://fleet/agent-7").unwrap(),
        ));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "h0/unified-0/TP-0-EP-0");
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        let identity = CertificateIdentity::parse(certificate.der()).unwrap();
        assert_eq!(
            identity.names,
            [
                "h0/unified-0/TP-0-EP-0",
                "agent.example",
                "spiffe://fleet/agent-7"
            ]
        );
        assert!(
            identity.subject.contains("CN=h0/unified-0/TP-0-EP-0"),
            "{}",
            identity.subject
        );
        assert_eq!(CertificateIdentity::parse(b"not a certificate"), None);
    }

    #[test]
    fn under_mutual_tls_the_certificate_must_name_the_agent_id() {
        let caller = Caller {
            certificate: Some(CertificateIdentity {
                subject: "CN=h0/unified-0/TP-0-EP-0".into(),
                names: vec!["h0/unified-0/TP-0-EP-0".into()],
            }),
            ..Caller::default()
        };
        assert!(caller
            .check_agent_id("h0/unified-0/TP-0-EP-0", true)
            .is_ok());
        let refused = caller
            .check_agent_id("h1/unified-0/TP-1-EP-0", true)
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(caller.check_agent_id("anything", false).is_ok());
        assert_eq!(
            Caller::default()
                .check_agent_id("a", true)
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );
    }
}
