//! The harness of rankline's end-to-end tests: real `rankline` processes on
//! loopback, started, awaited and always cleaned up.
//!
//! Every process is spawned from the `rankline` binary cargo built for the
//! test run, waits for its `listening on <url>` line, keeps its stderr in
//! a log file that is printed if the test fails, and is killed (process
//! group included) when its [`Proc`] is dropped.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

mod cluster;
mod netns;
mod pki;
mod s3;
mod trace_processor;

pub use cluster::{CaptureRun, Cluster};
pub use netns::NetHost;
pub use pki::{write_private, CertFiles, TestPki};
pub use s3::S3Server;
pub use trace_processor::{Import, Problem, Table, TraceProcessor};

/// The `rankline` binary the tests run: `RANKLINE_BIN` if set (the
/// benchmarks point it at a release build), else the one cargo built for
/// this test run. The e2e tests are a test target of the `rankline` package
/// (cli/Cargo.toml), so cargo builds that binary, fresh, into the folder
/// above the test executable's `deps/` before any test starts.
pub fn rankline_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("RANKLINE_BIN") {
            return PathBuf::from(bin);
        }
        let test_exe = std::env::current_exe().expect("the test executable's path");
        let profile_dir = test_exe
            .parent()
            .and_then(Path::parent)
            .expect("the test executable lives in <target>/<profile>/deps");
        let bin = profile_dir.join(format!("rankline{}", std::env::consts::EXE_SUFFIX));
        assert!(
            bin.is_file(),
            "{} is missing: run the e2e tests through cargo (`cargo nextest run -p rankline`), \
             which builds it, or set RANKLINE_BIN",
            bin.display()
        );
        bin
    })
}

/// The workspace's root folder.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

/// `tests/fixtures/real-jax/<rest>`: real JAX and sglang-jax output.
pub fn fixture(rest: &str) -> PathBuf {
    workspace_root().join("tests/fixtures/real-jax").join(rest)
}

/// A running child process that is killed when dropped.
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    /// The URL from the process's `listening on <url>` line, if it printed one.
    pub url: Option<String>,
    _log_dir: tempfile::TempDir,
}

/// How to start one process.
pub struct Spawn {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    wrapper: Vec<String>,
    wait_for_url: bool,
}

impl Spawn {
    /// `rankline <args>`.
    pub fn rankline(name: &str, args: &[&str]) -> Spawn {
        Spawn {
            name: name.to_string(),
            program: rankline_bin().to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
            envs: Vec::new(),
            wrapper: Vec::new(),
            wait_for_url: false,
        }
    }

    /// Any program (e.g. an S3 server).
    pub fn program(name: &str, program: impl Into<PathBuf>, args: &[&str]) -> Spawn {
        Spawn {
            program: program.into(),
            ..Spawn::rankline(name, args)
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Spawn {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Spawn {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: &str, value: impl Into<String>) -> Spawn {
        self.envs.push((key.to_string(), value.into()));
        self
    }

    /// Runs the program under `faketime` with this offset (e.g. `+37ms` is
    /// written `"+0.037s"`, or any libfaketime spec), on the real monotonic
    /// clock so timers still work.
    pub fn faketime(mut self, spec: &str) -> Spawn {
        self.wrapper
            .extend(["faketime".into(), "-f".into(), spec.to_string()]);
        self.envs
            .push(("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()));
        self
    }

    /// Runs the program through `prefix` (e.g. `ip netns exec NAME`), outside
    /// any wrapper already set.
    pub fn wrapped(mut self, prefix: &[&str]) -> Spawn {
        let inner = std::mem::take(&mut self.wrapper);
        self.wrapper = prefix.iter().map(|s| s.to_string()).chain(inner).collect();
        self
    }

    /// Waits for a `listening on <url>` line on stdout before returning.
    pub fn wait_for_url(mut self) -> Spawn {
        self.wait_for_url = true;
        self
    }

    pub fn start(self) -> Result<Proc> {
        let log_dir = tempfile::tempdir()?;
        let log = log_dir.path().join(format!("{}.log", self.name));
        let stderr = std::fs::File::create(&log)?;
        let mut command = match self.wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&self.program);
                c
            }
            None => Command::new(&self.program),
        };
        command
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        // Own process group, so dropping kills wrappers' children too.
        use std::os::unix::process::CommandExt;
        command.process_group(0);
        let mut child = command
            .spawn()
            .with_context(|| match self.wrapper.first() {
                // The wrapper is what is missing, most likely: say which and how to get it.
                Some(wrapper) => format!(
                    "start {} ({} under {wrapper}; is {wrapper} installed? `.ci/run` installs \
                 what tests need)",
                    self.name,
                    self.program.display()
                ),
                None => format!("start {} ({})", self.name, self.program.display()),
            })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut proc = Proc {
            name: self.name,
            child,
            log,
            url: None,
            _log_dir: log_dir,
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut sent = false;
            for line in lines.by_ref().map_while(Result::ok) {
                if !sent {
                    if let Some(url) = line.trim().strip_prefix("listening on ") {
                        tx.send(url.to_string()).ok();
                        sent = true;
                    }
                }
            }
        });
        if self.wait_for_url {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(url) => proc.url = Some(url),
                Err(_) => bail!(
                    "{} printed no `listening on` line; its log:\n{}",
                    proc.name,
                    proc.log_text()
                ),
            }
        }
        Ok(proc)
    }
}

impl Proc {
    pub fn url(&self) -> &str {
        self.url
            .as_deref()
            .expect("process was started with wait_for_url")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process wrote to stderr so far.
    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            f.read_to_string(&mut text).ok();
        }
        text
    }

    /// Waits up to `limit` for the process to exit by itself; its exit
    /// status, or `None` while it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill_hard(&mut self) {
        signal_group(self.child.id(), libc::SIGKILL);
        self.child.wait().ok();
    }

    /// SIGTERM, then SIGKILL if it is still there after five seconds.
    pub fn stop(&mut self) {
        signal_group(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill_hard();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
        if std::thread::panicking() {
            eprintln!("----- log of {} -----\n{}", self.name, self.log_text());
        }
    }
}

fn signal_group(pid: u32, signal: i32) {
    // SAFETY: kill(2) on a process group we created; no memory is touched.
    unsafe {
        libc::kill(-(pid as i32), signal);
    }
}

/// Runs `rankline <args>` to completion.
pub fn run_rankline(args: &[&str]) -> Result<Output> {
    let output = Command::new(rankline_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run rankline {}", args.join(" ")))?;
    Ok(output)
}

/// `rankline merge <capture> -o <out> --json <extra>`, which must succeed:
/// its summary.
pub fn merge_json(capture: &Path, out: &Path, extra: &[&str]) -> Result<serde_json::Value> {
    let (capture, out) = (capture.display().to_string(), out.display().to_string());
    let mut args = vec!["merge", capture.as_str(), "-o", out.as_str(), "--json"];
    args.extend_from_slice(extra);
    let output = run_rankline(&args)?;
    if !output.status.success() {
        bail!(
            "rankline {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    serde_json::from_slice(&output.stdout).context("parse rankline merge --json")
}

/// Polls `check` every 50 ms until it returns `Some`, or fails after `limit`
/// with `what` in the message.
pub fn wait_until<T>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("gave up after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free loopback TCP port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_wrapper_is_named_with_where_to_get_it() {
        let wrapper = "/nonexistent/rankline-test-wrapper";
        let error = Spawn::program("host0", "true", &[])
            .wrapped(&[wrapper])
            .start()
            .err()
            .expect("no such wrapper");
        let message = format!("{error:#}");
        assert!(
            message.contains(&format!("under {wrapper}; is {wrapper} installed?")),
            "{message}"
        );
        assert!(message.contains(".ci/run"), "{message}");
    }
}
