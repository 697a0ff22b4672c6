//! A deployment on loopback: one coordinator, simulated servers and agents,
//! each a real `rankline` process, all under one temporary folder.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{run_rankline, wait_until, Proc, Spawn};

/// One coordinator plus whatever servers and agents a test adds.
pub struct Cluster {
    pub work: tempfile::TempDir,
    pub coordinator: Proc,
    pub servers: Vec<Proc>,
    pub agents: Vec<Proc>,
}

/// What `rankline capture --json` printed and how it exited.
pub struct CaptureRun {
    pub code: i32,
    /// Every JSON line, the `finished` summary last.
    pub events: Vec<Value>,
    pub stderr: String,
}

impl CaptureRun {
    /// The final summary (`"event": "finished"`).
    pub fn summary(&self) -> &Value {
        self.events
            .iter()
            .rev()
            .find(|e| e["event"] == "finished")
            .unwrap_or_else(|| panic!("no finished event; stderr:\n{}", self.stderr))
    }

    /// `(rank name, state, detail)` of every rank in the summary.
    pub fn ranks(&self) -> Vec<(String, String, String)> {
        self.summary()["ranks"]
            .as_array()
            .map(|ranks| {
                ranks
                    .iter()
                    .map(|r| {
                        (
                            r["agent"]["rank"].as_str().unwrap_or_default().to_string(),
                            r["state"].as_str().unwrap_or_default().to_string(),
                            r["detail"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Cluster {
    /// Starts a coordinator storing into `<work>/storage`. `extra` goes to
    /// `rankline coordinator` (e.g. a shorter heartbeat).
    pub fn start(extra: &[&str]) -> Result<Cluster> {
        let work = tempfile::tempdir()?;
        let coordinator = Self::spawn_coordinator(&work, "127.0.0.1:0", extra)?;
        Ok(Cluster {
            work,
            coordinator,
            servers: Vec::new(),
            agents: Vec::new(),
        })
    }

    fn spawn_coordinator(work: &tempfile::TempDir, listen: &str, extra: &[&str]) -> Result<Proc> {
        Spawn::rankline("coordinator", &["coordinator", "--listen", listen])
            .arg("--storage")
            .arg(work.path().join("storage").to_string_lossy())
            .args(extra.iter().copied())
            .wait_for_url()
            .start()
    }

    /// Stops the coordinator and starts it again on the same address and
    /// storage (state included).
    pub fn restart_coordinator(&mut self, extra: &[&str]) -> Result<()> {
        let url = self.coordinator.url().to_string();
        let listen = url.trim_start_matches("http://").to_string();
        self.coordinator.kill_hard();
        self.coordinator = Self::spawn_coordinator(&self.work, &listen, extra)?;
        Ok(())
    }

    pub fn coordinator_url(&self) -> &str {
        self.coordinator.url()
    }

    /// Where the capture files land.
    pub fn storage(&self) -> PathBuf {
        self.work.path().join("storage")
    }

    /// The agents' shared spool root (hosts of one server share the
    /// `output_dir` string, as on a real multi-host deployment).
    pub fn spool(&self) -> PathBuf {
        self.work.path().join("spool")
    }

    /// Starts `rankline sim-server --port 0 <args>`; returns its URL.
    pub fn add_server(&mut self, name: &str, args: &[&str]) -> Result<String> {
        let server = Spawn::rankline(name, &["sim-server", "--port", "0"])
            .args(args.iter().copied())
            .wait_for_url()
            .start()?;
        let url = server.url().to_string();
        self.servers.push(server);
        Ok(url)
    }

    /// Starts `rankline agent` for the server at `server_url`.
    pub fn add_agent(&mut self, name: &str, server_url: &str, args: &[&str]) -> Result<()> {
        let agent = self.agent_spawn(name, server_url, args).start()?;
        self.agents.push(agent);
        Ok(())
    }

    /// The agent command line, for tests that need to change it (faketime).
    pub fn agent_spawn(&self, name: &str, server_url: &str, args: &[&str]) -> Spawn {
        Spawn::rankline(name, &["agent"])
            .args(["--coordinator", self.coordinator_url()])
            .args(["--server", server_url])
            .arg("--spool")
            .arg(self.spool().to_string_lossy())
            .args(args.iter().copied())
    }

    /// `rankline agents --json`.
    pub fn agents_json(&self) -> Result<Vec<Value>> {
        let output = run_rankline(&["agents", "--json", "--coordinator", self.coordinator_url()])?;
        if !output.status.success() {
            bail!(
                "rankline agents failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        serde_json::from_slice(&output.stdout).context("parse rankline agents --json")
    }

    /// Waits until `n` agents are connected.
    pub fn wait_for_agents(&self, n: usize) -> Result<Vec<Value>> {
        wait_until(
            &format!("{n} connected agents"),
            Duration::from_secs(60),
            || {
                let agents = self.agents_json().ok()?;
                let connected = agents.iter().filter(|a| a["connected"] == true).count();
                (connected == n).then_some(agents)
            },
        )
    }

    /// `rankline capture --json --coordinator <url> <args>`, to the end.
    pub fn capture(&self, args: &[&str]) -> Result<CaptureRun> {
        let mut full = vec!["capture", "--json", "--coordinator", self.coordinator_url()];
        full.extend_from_slice(args);
        let output = run_rankline(&full)?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let events = stdout
            .lines()
            .filter(|l| l.trim_start().starts_with('{'))
            .map(serde_json::from_str)
            .collect::<Result<Vec<Value>, _>>()
            .with_context(|| format!("parse capture --json output:\n{stdout}"))?;
        Ok(CaptureRun {
            code: output.status.code().unwrap_or(-1),
            events,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}
