//! A real S3-compatible server for end-to-end tests: `s3s-fs` (installed by
//! `.ci/run`) on a free loopback port, storing objects as plain files under
//! a temporary root (`<root>/<bucket>/<key>`), which tests read directly.
//! It can go down (killed) and come back on the same port and root, or
//! freeze (SIGSTOP: connections are accepted, nothing is answered).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{free_port, Spawn};

const ACCESS_KEY: &str = "rankline";
const SECRET_KEY: &str = "rankline-secret";
const INSTALL_HINT: &str = "s3s-fs is not installed: run `bash .ci/run` or `cargo install s3s-fs@0.14.1 --features binary --locked`";

/// One s3s-fs process and its data, removed when dropped.
pub struct S3Server {
    bucket: String,
    port: u16,
    /// The address it binds: loopback, or every interface when processes
    /// in other network namespaces use it too.
    listen: &'static str,
    root: tempfile::TempDir,
    log_dir: tempfile::TempDir,
    child: Option<Child>,
    frozen: bool,
}

impl S3Server {
    /// Starts a server with one empty `bucket`, on loopback.
    pub fn start(bucket: &str) -> Result<S3Server> {
        Self::start_listening(bucket, "127.0.0.1")
    }

    /// Starts a server that processes in a [`crate::NetHost`] reach too
    /// (at [`S3Server::endpoint_from`]).
    pub fn start_for_net_hosts(bucket: &str) -> Result<S3Server> {
        Self::start_listening(bucket, "0.0.0.0")
    }

    fn start_listening(bucket: &str, listen: &'static str) -> Result<S3Server> {
        let root = tempfile::tempdir()?;
        std::fs::create_dir(root.path().join(bucket))?;
        let mut server = S3Server {
            bucket: bucket.to_string(),
            port: free_port(),
            listen,
            root,
            log_dir: tempfile::tempdir()?,
            child: None,
            frozen: false,
        };
        server.restart()?;
        Ok(server)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The endpoint as processes inside `host` reach it.
    pub fn endpoint_from(&self, host: &crate::NetHost) -> String {
        format!("http://{}:{}", host.gateway_ip, self.port)
    }

    /// `s3://<bucket>/<prefix>`, for `--storage`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// The `AWS_*` variables every process that talks to this server needs.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
        ]
    }

    /// `spawn` with [`S3Server::env`] added.
    pub fn with_env(&self, spawn: Spawn) -> Spawn {
        self.env()
            .into_iter()
            .fold(spawn, |spawn, (key, value)| spawn.env(key, value))
    }

    /// Where the object `<prefix>/<key>` of the bucket lives on disk.
    pub fn object_path(&self, key: &str) -> PathBuf {
        key.split('/')
            .fold(self.root.path().join(&self.bucket), |path, part| {
                path.join(part)
            })
    }

    /// Every object key under `prefix` (`/`-separated, sorted).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        collect_files(&self.object_path(prefix), &mut keys);
        let bucket = self.root.path().join(&self.bucket);
        let mut keys: Vec<String> = keys
            .iter()
            .filter_map(|path| path.strip_prefix(&bucket).ok())
            .map(|relative| {
                relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .collect();
        keys.sort();
        keys
    }

    /// Kills the server: connections are refused until [`S3Server::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            self.resume();
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// Starts the server (again) on the same port and root, and waits until
    /// it accepts connections.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = std::fs::File::create(self.log_dir.path().join("s3s-fs.log"))?;
            let mut child = Command::new("s3s-fs")
                .args(["--host", self.listen, "--port", &self.port.to_string()])
                .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                .arg(self.root.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context(INSTALL_HINT)?;
            loop {
                if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    self.child = Some(child);
                    return Ok(());
                }
                // The port may still be held by the previous process's sockets.
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    child.kill().ok();
                    child.wait().ok();
                    bail!("s3s-fs did not start on port {}: {}", self.port, self.log());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if Instant::now() > deadline {
                bail!("s3s-fs kept exiting on port {}: {}", self.port, self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Freezes the server (SIGSTOP): requests hang instead of failing.
    pub fn freeze(&mut self) {
        if let Some(child) = &self.child {
            signal(child, libc::SIGSTOP);
            self.frozen = true;
        }
    }

    /// Thaws a frozen server (SIGCONT); what it was sent meanwhile is answered.
    pub fn resume(&mut self) {
        if let (Some(child), true) = (&self.child, self.frozen) {
            signal(child, libc::SIGCONT);
        }
        self.frozen = false;
    }

    /// What the server wrote to stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_dir.path().join("s3s-fs.log")).unwrap_or_default()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on a child this process started and has not reaped.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}
