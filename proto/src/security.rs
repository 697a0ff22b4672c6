//! The client side of the coordinator's security: a bearer token in every
//! call's `authorization` metadata, and TLS (the coordinator's certificate
//! checked against a CA; a client certificate for mutual TLS). The CLI,
//! agents, benchmarks and tests all build their channels through
//! [`ClientSecurity`], so they agree on URLs, files and error messages.
//!
//! Secrets are read from files that only their owner (and group) may read:
//! [`read_secret_file`] refuses a file every user on the machine can read,
//! since a token there is a token for anyone with a shell.

use std::fmt;
use std::path::{Path, PathBuf};

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

/// The metadata key a token travels in (`authorization: Bearer <token>`).
pub const AUTHORIZATION: &str = "authorization";

/// Where a client's token can come from, for messages that say what to set.
pub const TOKEN_HINT: &str = "--token-file PATH (or the RANKLINE_TOKEN variable)";

/// A channel whose every call carries the client's token.
pub type SecureChannel = InterceptedService<Channel, Authorization>;

/// Why a client's security settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("cannot read the {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the {what} {} can be read by every user of this machine (mode {mode:o}); make it \
         private first: `chmod 600 {}` (on Kubernetes: defaultMode: 0400 on the Secret volume)",
        path.display(),
        path.display()
    )]
    WorldReadable {
        what: &'static str,
        path: PathBuf,
        mode: u32,
    },
    #[error("the {what} {} is empty", path.display())]
    Empty { what: &'static str, path: PathBuf },
    #[error("the token from {origin} cannot be sent: {reason}")]
    BadToken { origin: String, reason: String },
    #[error(
        "{url} is plain http:// but TLS is configured (--tls-ca, --tls-cert); write https://{rest}"
    )]
    PlainUrlWithTls { url: String, rest: String },
    #[error("--tls-cert and --tls-key go together; give both or neither")]
    HalfIdentity,
    #[error("{url:?} is not a coordinator URL ({reason}); write e.g. https://10.0.0.1:7471")]
    InvalidUrl { url: String, reason: String },
}

/// Reads a secret (a token, a key, a token table) from `path`, trimmed.
/// Refuses a file that every user may read, and an empty one.
pub fn read_secret_file(path: &Path, what: &'static str) -> Result<String, SecurityError> {
    let read_error = |source| SecurityError::Read {
        what,
        path: path.to_path_buf(),
        source,
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(read_error)?
            .permissions()
            .mode();
        if mode & 0o004 != 0 {
            return Err(SecurityError::WorldReadable {
                what,
                path: path.to_path_buf(),
                mode: mode & 0o7777,
            });
        }
    }
    let text = std::fs::read_to_string(path).map_err(read_error)?;
    let text = text.trim();
    if text.is_empty() {
        return Err(SecurityError::Empty {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(text.to_string())
}

/// A secret value (an API key) that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A PEM file (certificate or CA bundle; not secret, so any mode is fine).
fn read_pem(path: &Path, what: &'static str) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|source| SecurityError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// A private key's PEM, which must not be world-readable.
fn read_key(path: &Path) -> Result<Vec<u8>, SecurityError> {
    Ok(read_secret_file(path, "TLS private key")?.into_bytes())
}

/// The PEM of a certificate and its key, for a process's own identity.
pub fn read_identity(cert: &Path, key: &Path) -> Result<Identity, SecurityError> {
    Ok(Identity::from_pem(
        read_pem(cert, "TLS certificate")?,
        read_key(key)?,
    ))
}

/// A CA bundle to check peers' certificates against.
pub fn read_ca(path: &Path, what: &'static str) -> Result<Certificate, SecurityError> {
    Ok(Certificate::from_pem(read_pem(path, what)?))
}

/// How a client talks to a coordinator: which token it sends and how it
/// checks the coordinator. `Default` is a plain, anonymous client.
#[derive(Clone, Default)]
pub struct ClientSecurity {
    token: Option<MetadataValue<Ascii>>,
    tls: Option<ClientTls>,
}

#[derive(Clone, Default)]
struct ClientTls {
    ca: Option<Certificate>,
    identity: Option<Identity>,
    server_name: Option<String>,
}

impl fmt::Debug for ClientSecurity {
    // Never print the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSecurity")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("tls", &self.tls.is_some())
            .field(
                "client_certificate",
                &self.tls.as_ref().is_some_and(|tls| tls.identity.is_some()),
            )
            .finish()
    }
}

impl ClientSecurity {
    /// Sends `token` (from `origin`, named in errors) with every call.
    pub fn with_token(mut self, token: &str, origin: &str) -> Result<Self, SecurityError> {
        let bad = |reason: &str| SecurityError::BadToken {
            origin: origin.to_string(),
            reason: reason.to_string(),
        };
        let token = token.trim();
        if token.is_empty() {
            return Err(bad("it is empty"));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad("it must be printable ASCII without spaces"));
        }
        let mut value: MetadataValue<Ascii> = format!("Bearer {token}")
            .parse()
            .map_err(|_| bad("it is not a valid header value"))?;
        // Keeps it out of hyper's and h2's debug output.
        value.set_sensitive(true);
        self.token = Some(value);
        Ok(self)
    }

    /// Sends the token kept in `path` (one line; the file must not be
    /// world-readable).
    pub fn with_token_file(self, path: &Path) -> Result<Self, SecurityError> {
        let token = read_secret_file(path, "token file")?;
        self.with_token(&token, &path.display().to_string())
    }

    /// Checks the coordinator's certificate against the CA in `path`
    /// (instead of the system's roots).
    pub fn with_tls_ca(mut self, path: &Path) -> Result<Self, SecurityError> {
        self.tls.get_or_insert_with(ClientTls::default).ca = Some(read_ca(path, "TLS CA")?);
        Ok(self)
    }

    /// Presents this certificate (mutual TLS).
    pub fn with_tls_identity(mut self, cert: &Path, key: &Path) -> Result<Self, SecurityError> {
        self.tls.get_or_insert_with(ClientTls::default).identity = Some(read_identity(cert, key)?);
        Ok(self)
    }

    /// Expects the coordinator's certificate to name `name` rather than the
    /// URL's host (a coordinator reached by IP whose certificate names it).
    pub fn with_tls_server_name(mut self, name: &str) -> Self {
        self.tls.get_or_insert_with(ClientTls::default).server_name = Some(name.to_string());
        self
    }

    /// True when TLS settings were given (the URL must then be https://).
    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// True when a token goes with every call.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// `host:port` gets the scheme these settings call for; a URL with a
    /// scheme stays as it is (without a trailing slash).
    pub fn normalize_url(&self, url: &str) -> String {
        let url = url.trim().trim_end_matches('/');
        if url.contains("://") {
            url.to_string()
        } else if self.uses_tls() {
            format!("https://{url}")
        } else {
            format!("http://{url}")
        }
    }

    /// An endpoint for the coordinator at `url`: TLS for https:// (with the
    /// given CA, else the system's roots), plain for http://.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, SecurityError> {
        let url = self.normalize_url(url);
        let invalid = |reason: String| SecurityError::InvalidUrl {
            url: url.clone(),
            reason,
        };
        let endpoint = Endpoint::from_shared(url.clone()).map_err(|e| invalid(e.to_string()))?;
        if let Some(rest) = url.strip_prefix("http://") {
            if self.uses_tls() {
                return Err(SecurityError::PlainUrlWithTls {
                    url: url.clone(),
                    rest: rest.to_string(),
                });
            }
            return Ok(endpoint);
        }
        if !url.starts_with("https://") {
            return Err(invalid(
                "the scheme must be http:// or https://".to_string(),
            ));
        }
        let tls = self.tls.clone().unwrap_or_default();
        let mut config = ClientTlsConfig::new();
        config = match tls.ca {
            Some(ca) => config.ca_certificate(ca),
            None => config.with_native_roots(),
        };
        if let Some(identity) = tls.identity {
            config = config.identity(identity);
        }
        if let Some(name) = tls.server_name {
            config = config.domain_name(name);
        }
        endpoint
            .tls_config(config)
            .map_err(|e| invalid(crate::error_chain(&e)))
    }

    /// What adds the token to every call of a client built on a channel.
    pub fn authorization(&self) -> Authorization {
        Authorization(self.token.clone())
    }

    /// `channel` with the token added to every call.
    pub fn wrap(&self, channel: Channel) -> SecureChannel {
        InterceptedService::new(channel, self.authorization())
    }
}

/// Adds `authorization: Bearer <token>` to every call (nothing without a
/// token).
#[derive(Clone)]
pub struct Authorization(Option<MetadataValue<Ascii>>);

impl Interceptor for Authorization {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert(AUTHORIZATION, token.clone());
        }
        Ok(request)
    }
}

/// A refusal by the coordinator's security (UNAUTHENTICATED,
/// PERMISSION_DENIED) for a person; `None` for any other status. The
/// coordinator's messages already say which flag to set.
pub fn refusal_advice(status: &Status) -> Option<String> {
    match status.code() {
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => Some(format!(
            "the coordinator refused the call ({:?}): {}",
            status.code(),
            status.message()
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_the_scheme_the_settings_call_for() {
        let plain = ClientSecurity::default();
        assert_eq!(plain.normalize_url("h:1/"), "http://h:1");
        let tls = ClientSecurity::default().with_tls_server_name("coord");
        assert_eq!(tls.normalize_url("h:1"), "https://h:1");
        assert_eq!(tls.normalize_url("https://h:1/"), "https://h:1");
        let error = tls.endpoint("http://h:1").unwrap_err().to_string();
        assert!(error.contains("write https://h:1"), "{error}");
    }

    #[test]
    fn tokens_must_be_sendable_and_never_print() {
        let error = ClientSecurity::default()
            .with_token("two words", "RANKLINE_TOKEN")
            .unwrap_err();
        assert!(error.to_string().contains("RANKLINE_TOKEN"), "{error}");
        let security = ClientSecurity::default()
            .with_token("s3cret-token-value", "test")
            .unwrap();
        assert!(!format!("{security:?}").contains("s3cret"));
        let mut interceptor = security.authorization();
        let request = interceptor.call(Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get(AUTHORIZATION).unwrap(),
            "Bearer s3cret-token-value"
        );
    }

    #[cfg(unix)]
    #[test]
    fn world_readable_secrets_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("rankline-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "abc\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = read_secret_file(&path, "token file")
            .unwrap_err()
            .to_string();
        assert!(error.contains("chmod 600"), "{error}");
        // Group-readable is fine (Kubernetes fsGroup, systemd credentials).
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(read_secret_file(&path, "token file").unwrap(), "abc");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
