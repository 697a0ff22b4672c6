//! Certificates made at run time for the TLS tests and the benchmark: a CA,
//! the coordinator's certificate (for `127.0.0.1` and `localhost`), and
//! client certificates whose common name is an agent id. Private keys are
//! written with mode 0600, as rankline insists.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Result;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A certificate and its private key, as files.
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A throw-away CA and the certificates it signs, in a temporary folder.
pub struct TestPki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    ca_file: PathBuf,
}

impl TestPki {
    pub fn new(common_name: &str) -> Result<TestPki> {
        let dir = tempfile::tempdir()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem())?;
        Ok(TestPki { dir, ca, ca_file })
    }

    /// The CA certificate (PEM), for `--tls-ca` and `--tls-client-ca`.
    pub fn ca(&self) -> &Path {
        &self.ca_file
    }

    /// A coordinator certificate for `127.0.0.1` and `localhost`.
    pub fn server(&self, name: &str) -> Result<CertFiles> {
        self.issue(name, vec!["127.0.0.1".into(), "localhost".into()])
    }

    /// A client certificate whose CN is `common_name` (an agent id).
    pub fn client(&self, common_name: &str) -> Result<CertFiles> {
        self.issue(common_name, Vec::new())
    }

    fn issue(&self, common_name: &str, names: Vec<String>) -> Result<CertFiles> {
        let mut params = CertificateParams::new(names)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca)?;
        let stem: String = common_name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let files = CertFiles {
            cert: self.dir.path().join(format!("{stem}.pem")),
            key: self.dir.path().join(format!("{stem}.key")),
        };
        std::fs::write(&files.cert, cert.pem())?;
        write_private(&files.key, &key.serialize_pem())?;
        Ok(files)
    }
}

/// Writes a secret (a key, a token file) that only its owner may read.
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}
