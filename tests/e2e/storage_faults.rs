//! Storage and faults end to end (issue 5): captures into a real
//! S3-compatible server (s3s-fs) through the whole CLI, an agent killed
//! mid-upload, the S3 server down past the capture's deadline, and a full
//! spool. Every test checks that no trace was lost (each stored object has
//! the size and sha256 its sidecar says, and equals the file the server
//! wrote into the spool) and that the manifest tells the truth.
//!
//! Figures for docs/RELIABILITY.md are printed on stderr (`--no-capture`).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rankline_e2e::{run_rankline, wait_until, Cluster, NetHost, S3Server, Spawn};
use rankline_layout::{Manifest, Sidecar};
use serde_json::Value;
use sha2::{Digest, Sha256};

const BUCKET: &str = "traces";
const PREFIX: &str = "team-a";
/// Long enough for a slow, loaded test machine; every wait ends on a condition.
const LONG_WAIT: Duration = Duration::from_secs(120);

fn sha256_of(path: &Path) -> String {
    let mut file = std::fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).unwrap();
    hex::encode(hasher.finalize())
}

/// A coordinator storing into s3s-fs, with simulated servers and agents
/// whose AWS_* variables point at it.
struct S3Deployment {
    // Dropped in this order: the processes go before the S3 server they use.
    cluster: Cluster,
    s3: S3Server,
    agent_args: Vec<(String, String, Vec<String>)>,
}

impl S3Deployment {
    fn start() -> S3Deployment {
        Self::start_with(S3Server::start(BUCKET).unwrap(), "127.0.0.1:0", &[])
    }

    /// A coordinator on `listen` (with `extra` options) storing into `s3`.
    fn start_with(s3: S3Server, listen: &str, extra: &[&str]) -> S3Deployment {
        let work = tempfile::tempdir().unwrap();
        let coordinator = s3
            .with_env(Spawn::rankline(
                "coordinator",
                &["coordinator", "--listen", listen],
            ))
            .args(["--storage", &s3.url(PREFIX)])
            .args(extra.iter().copied())
            .wait_for_url()
            .start()
            .unwrap();
        S3Deployment {
            cluster: Cluster {
                work,
                coordinator,
                servers: Vec::new(),
                agents: Vec::new(),
            },
            s3,
            agent_args: Vec::new(),
        }
    }

    /// A simulated server (logging the profiling calls it gets) and its
    /// agent, both for `host` at TP rank `tp`.
    fn add_rank(&mut self, host: &str, tp: u32, server_args: &[&str]) {
        let log = self.events_log(host);
        let mut args = vec!["--hostname", host, "--events-log", log.to_str().unwrap()];
        args.extend_from_slice(server_args);
        let url = self.cluster.add_server(host, &args).unwrap();
        let agent_args = vec![
            "--host".to_string(),
            host.to_string(),
            "--tp-rank".to_string(),
            tp.to_string(),
        ];
        self.agent_args.push((host.to_string(), url, agent_args));
        let agent = self.agent_spawn(self.agent_args.len() - 1).start().unwrap();
        self.cluster.agents.push(agent);
    }

    fn agent_spawn(&self, index: usize) -> Spawn {
        let (name, url, args) = &self.agent_args[index];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.s3.with_env(self.cluster.agent_spawn(name, url, &args))
    }

    /// Starts agent `index` again with the same command line.
    fn restart_agent(&mut self, index: usize) {
        self.cluster.agents[index] = self.agent_spawn(index).start().unwrap();
    }

    fn events_log(&self, host: &str) -> PathBuf {
        self.cluster
            .work
            .path()
            .join(format!("{host}.events.jsonl"))
    }

    fn profiling_started(&self, host: &str) -> bool {
        std::fs::read_to_string(self.events_log(host))
            .unwrap_or_default()
            .contains("\"start_profile\"")
    }

    /// `rankline capture --json` in the background, to its end.
    fn capture_in_background(&self, args: &[&str]) -> JoinHandle<Output> {
        let mut full: Vec<String> = ["capture", "--json", "--coordinator"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        full.push(self.cluster.coordinator_url().to_string());
        full.extend(args.iter().map(|s| s.to_string()));
        std::thread::spawn(move || {
            let args: Vec<&str> = full.iter().map(String::as_str).collect();
            run_rankline(&args).unwrap()
        })
    }

    /// The agent's journal of a capture (what survives a `kill -9`).
    fn journal(&self, host: &str, tp: u32, profile_id: &str) -> Value {
        let path = self.cluster.spool().join(format!(
            "agents/{host}_unified-0_TP-{tp}-EP-0/captures/{profile_id}.json"
        ));
        std::fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or(Value::Null)
    }

    fn wait_journal_state(&self, host: &str, tp: u32, profile_id: &str, state: &str) {
        wait_until(
            &format!("{host}'s journal of {profile_id} to say {state}"),
            LONG_WAIT,
            || (self.journal(host, tp, profile_id)["state"] == state).then_some(()),
        )
        .unwrap();
    }

    fn manifest(&self, profile_id: &str) -> Option<Manifest> {
        let path = self
            .s3
            .object_path(&format!("{PREFIX}/{profile_id}/manifest.json"));
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// Waits until the manifest in S3 says `complete`.
    fn wait_complete(&self, profile_id: &str) -> Manifest {
        wait_until(
            &format!("the manifest of {profile_id} to say complete"),
            LONG_WAIT,
            || self.manifest(profile_id).filter(|m| m.status == "complete"),
        )
        .unwrap()
    }

    /// No trace lost: every rank is `ok`, its sidecar lists a trace and an
    /// xplane whose objects have the recorded size and sha256 and equal the
    /// files the server wrote into the spool; storage holds exactly the
    /// manifest plus three objects per rank. Returns (objects, bytes).
    fn assert_nothing_lost(&self, manifest: &Manifest, ranks: usize) -> (usize, u64) {
        let profile_id = &manifest.profile_id;
        assert_eq!(manifest.ranks.len(), ranks);
        let mut expected = vec![format!("{PREFIX}/{profile_id}/manifest.json")];
        let mut bytes = 0;
        for rank in &manifest.ranks {
            assert_eq!(rank.status, "ok", "{:?}", rank.reason);
            let meta_key = rank.objects.meta.clone().expect("a sidecar");
            let meta_path = self.s3.object_path(&format!("{PREFIX}/{meta_key}"));
            let sidecar: Sidecar = serde_json::from_slice(&std::fs::read(&meta_path).unwrap())
                .expect("the sidecar is valid JSON");
            bytes += std::fs::metadata(&meta_path).unwrap().len();
            expected.push(format!("{PREFIX}/{meta_key}"));
            assert_eq!(sidecar.files.len(), 2, "trace and xplane");
            for file in &sidecar.files {
                let stored = self.s3.object_path(&format!("{PREFIX}/{}", file.key));
                assert_eq!(std::fs::metadata(&stored).unwrap().len(), file.size);
                assert_eq!(sha256_of(&stored), file.sha256, "{}", file.key);
                let written = find_file(
                    &self
                        .cluster
                        .spool()
                        .join("captures")
                        .join(profile_id.as_str()),
                    &file.source_name,
                )
                .expect("the server's file is still in the spool");
                assert_eq!(sha256_of(&written), file.sha256, "{} as written", file.key);
                expected.push(format!("{PREFIX}/{}", file.key));
                bytes += file.size;
            }
        }
        expected.sort();
        assert_eq!(
            self.s3.keys(&format!("{PREFIX}/{profile_id}")),
            expected,
            "storage holds exactly the capture's objects"
        );
        (expected.len(), bytes)
    }
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
    }
    None
}

/// The ranks of `rankline capture show ID --json`: (rank, state, detail).
fn shown_ranks(coordinator: &str, profile_id: &str) -> Vec<(String, String, String)> {
    let Ok(output) = run_rankline(&[
        "capture",
        "show",
        profile_id,
        "--json",
        "--coordinator",
        coordinator,
    ]) else {
        return Vec::new();
    };
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    summary["ranks"]
        .as_array()
        .map(|ranks| {
            ranks
                .iter()
                .map(|r| {
                    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
                    (
                        text(&r["agent"]["rank"]),
                        text(&r["state"]),
                        text(&r["detail"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A trace big enough for multipart uploads (several 8 MiB parts).
const BIG_TRACE: [&str; 2] = ["--events-per-step", "30000"];

#[test]
fn a_capture_lands_in_s3_through_the_whole_cli() {
    let mut deployment = S3Deployment::start();
    deployment.add_rank("host0", 0, &[]);
    deployment.add_rank("host1", 1, &BIG_TRACE);
    deployment.cluster.wait_for_agents(2).unwrap();

    let run = deployment
        .cluster
        .capture(&["--profile-id", "s3happy", "--duration", "300ms"])
        .unwrap();
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert_eq!(run.summary()["status"], "complete");
    let manifest = deployment.manifest("s3happy").expect("a manifest in S3");
    assert_eq!(manifest.status, "complete");
    assert_eq!(manifest.storage_url, format!("s3://{BUCKET}/{PREFIX}"));
    let (objects, bytes) = deployment.assert_nothing_lost(&manifest, 2);
    eprintln!("figures: happy path: {objects} objects, {bytes} bytes");
}

#[test]
fn an_agent_killed_mid_upload_finishes_the_upload_after_a_restart() {
    let mut deployment = S3Deployment::start();
    deployment.add_rank("victim", 0, &BIG_TRACE);
    deployment.add_rank("bystander", 1, &[]);
    deployment.cluster.wait_for_agents(2).unwrap();

    let capture =
        deployment.capture_in_background(&["--profile-id", "killed", "--duration", "300ms"]);
    wait_until("both servers to profile", LONG_WAIT, || {
        (deployment.profiling_started("victim") && deployment.profiling_started("bystander"))
            .then_some(())
    })
    .unwrap();
    // A frozen S3 answers nothing: the upload cannot end before the kill.
    deployment.s3.freeze();
    deployment.wait_journal_state("victim", 0, "killed", "uploading");
    deployment.cluster.agents[0].kill_hard();
    let killed = Instant::now();
    deployment.s3.resume();
    deployment.restart_agent(0);

    let manifest = deployment.wait_complete("killed");
    let recovered = killed.elapsed();
    let (objects, bytes) = deployment.assert_nothing_lost(&manifest, 2);
    assert_eq!(deployment.journal("victim", 0, "killed")["state"], "ok");
    let output = capture.join().unwrap();
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "the capture command ends: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!(
        "figures: kill -9 mid-upload: {objects} objects, {bytes} bytes, manifest complete {:.1} s after the kill",
        recovered.as_secs_f64()
    );
}

#[test]
fn an_s3_outage_past_the_deadline_delays_the_upload_but_loses_nothing() {
    let mut deployment = S3Deployment::start();
    // A small trace: its files are complete long before the deadline, so
    // the deadline always falls in the upload, which cannot end while S3 is down.
    deployment.add_rank("solo", 0, &[]);
    deployment.cluster.wait_for_agents(1).unwrap();
    let coordinator = deployment.cluster.coordinator_url().to_string();

    let capture = deployment.capture_in_background(&[
        "--profile-id",
        "outage",
        "--duration",
        "300ms",
        "--timeout",
        "10s",
    ]);
    wait_until("the server to profile", LONG_WAIT, || {
        deployment.profiling_started("solo").then_some(())
    })
    .unwrap();
    deployment.s3.stop();
    let down = Instant::now();
    deployment.wait_journal_state("solo", 0, "outage", "uploading");
    // The coordinator gives up on the rank at its deadline...
    let (_, state, detail) = wait_until("the rank's deadline", LONG_WAIT, || {
        shown_ranks(&coordinator, "outage")
            .into_iter()
            .next()
            .filter(|(_, state, _)| state == "failed")
    })
    .unwrap();
    assert_eq!(state, "failed");
    assert!(detail.contains("timed out in uploading"), "{detail}");
    // ... while the agent keeps trying.
    assert_eq!(
        deployment.journal("solo", 0, "outage")["state"],
        "uploading"
    );
    // The capture command does not wait for storage: it ends at the deadline.
    let output = capture.join().unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "the capture command ends failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(deployment.manifest("outage").is_none(), "S3 is still down");
    // With its agent gone too, only the coordinator's own retries can write
    // the manifest once S3 is back.
    deployment.cluster.agents[0].kill_hard();

    deployment.s3.restart().unwrap();
    let back = Instant::now();
    let down_for = back - down;
    let verdict = wait_until("the coordinator's manifest", LONG_WAIT, || {
        deployment.manifest("outage")
    })
    .unwrap();
    let manifest_after = back.elapsed();
    assert_eq!(
        verdict.status, "failed",
        "the truth while the files are missing"
    );
    assert!(verdict.ranks[0]
        .reason
        .as_deref()
        .is_some_and(|r| r.contains("timed out in uploading")));

    // The restarted agent delivers, and the manifest follows.
    deployment.restart_agent(0);
    let manifest = deployment.wait_complete("outage");
    let recovered = back.elapsed();
    let (objects, bytes) = deployment.assert_nothing_lost(&manifest, 1);
    eprintln!(
        "figures: S3 down {:.1} s (past the 10 s deadline): manifest written by the coordinator's retry {:.1} s after S3 came back; \
         {objects} objects, {bytes} bytes, manifest complete {:.1} s after S3 came back (agent restarted)",
        down_for.as_secs_f64(),
        manifest_after.as_secs_f64(),
        recovered.as_secs_f64()
    );
}

/// A small tmpfs, unmounted when dropped (also when the test fails).
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success(), "mount a tmpfs (this test needs root)");
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    /// Fills the file system but for about `leave` bytes.
    fn fill(&self, leave: u64) -> PathBuf {
        use std::io::Write;
        let ballast = self.path.join("ballast");
        let mut file = std::fs::File::create(&ballast).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        let mut written = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling {}: {e}", ballast.display()),
            }
        }
        file.set_len(written.saturating_sub(leave)).unwrap();
        ballast
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = std::process::Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Something still holds it open: detach it now, it goes when released.
            std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.path)
                .status()
                .ok();
        }
    }
}

#[test]
fn a_full_spool_fails_only_its_capture_with_a_clear_error() {
    // Declared first, so it is unmounted after every process is gone.
    let mount_point = tempfile::tempdir().unwrap();
    let tight_spool = Tmpfs::mount(&mount_point.path().join("spool"), "4m");
    let mut cluster = Cluster::start(&[]).unwrap();
    let roomy_url = cluster
        .add_server("roomy", &["--hostname", "roomy"])
        .unwrap();
    cluster
        .add_agent("roomy", &roomy_url, &["--host", "roomy", "--tp-rank", "0"])
        .unwrap();
    let tight_url = cluster
        .add_server(
            "tight",
            &["--hostname", "tight", "--events-per-step", "300"],
        )
        .unwrap();
    let tight = Spawn::rankline("tight", &["agent", "--host", "tight", "--tp-rank", "1"])
        .args(["--coordinator", cluster.coordinator_url()])
        .args(["--server", &tight_url, "--keep-captures", "1"])
        .arg("--spool")
        .arg(tight_spool.path.to_string_lossy())
        .start()
        .unwrap();
    cluster.agents.push(tight);
    cluster.wait_for_agents(2).unwrap();
    let capture = |id: &str| {
        cluster
            .capture(&["--profile-id", id, "--duration", "300ms"])
            .unwrap()
    };
    let manifest = |id: &str| -> Manifest {
        let path = cluster.storage().join(id).join("manifest.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let rank = |manifest: &Manifest, tp: u32| {
        manifest
            .ranks
            .iter()
            .find(|r| r.identity.coords.tp_rank == tp)
            .cloned()
            .unwrap()
    };
    // Every object a manifest names has its sidecar's size and sha256.
    let assert_stored = |manifest: &Manifest, tp: u32| {
        let meta = rank(manifest, tp).objects.meta.unwrap();
        let sidecar: Sidecar =
            serde_json::from_slice(&std::fs::read(cluster.storage().join(meta)).unwrap()).unwrap();
        for file in &sidecar.files {
            let stored = cluster.storage().join(&file.key);
            assert_eq!(std::fs::metadata(&stored).unwrap().len(), file.size);
            assert_eq!(sha256_of(&stored), file.sha256);
        }
    };

    let first = capture("roomy1");
    assert_eq!(first.code, 0, "{}", first.stderr);
    let tight_first = tight_spool.path.join("captures/roomy1");
    assert!(tight_first.is_dir(), "kept after its verified upload");

    // No room even for the agent's journal.
    let ballast = tight_spool.fill(0);
    let journal_full = capture("full1");
    assert_eq!(journal_full.code, 1);
    let m = manifest("full1");
    assert_eq!(m.status, "partial");
    assert_eq!(rank(&m, 0).status, "ok");
    assert_stored(&m, 0);
    let failed = rank(&m, 1);
    assert_eq!(failed.status, "failed");
    let reason = failed.reason.unwrap();
    for words in ["spool's file system is full", "--spool", "Free space"] {
        assert!(reason.contains(words), "{words:?} in {reason}");
    }
    eprintln!("figures: full spool (journal): {reason}");

    // Room for the journal, none for the server's files.
    std::fs::remove_file(&ballast).unwrap();
    tight_spool.fill(32 * 1024);
    let server_full = capture("full2");
    assert_eq!(server_full.code, 1);
    let m = manifest("full2");
    assert_eq!(rank(&m, 0).status, "ok");
    assert_stored(&m, 0);
    let reason = rank(&m, 1).reason.unwrap();
    for words in [
        "spool's file system is full",
        "could not finish writing",
        "--spool",
    ] {
        assert!(reason.contains(words), "{words:?} in {reason}");
    }
    eprintln!("figures: full spool (server): {reason}");

    // Space again: the same agent process serves the next capture, and the
    // first capture is intact in storage.
    std::fs::remove_file(&ballast).unwrap();
    cluster.wait_for_agents(2).unwrap();
    let after = capture("roomy2");
    assert_eq!(after.code, 0, "{}", after.stderr);
    let m = manifest("roomy2");
    assert_stored(&m, 0);
    assert_stored(&m, 1);
    let first_manifest = manifest("roomy1");
    assert_eq!(first_manifest.status, "complete");
    assert_stored(&first_manifest, 0);
    assert_stored(&first_manifest, 1);
    // --keep-captures 1: the older verified capture's spool files are gone,
    // the newest stays.
    assert!(!tight_first.exists());
    assert!(tight_spool.path.join("captures/roomy2").is_dir());
}

/// Fault (4): one host's network link goes down during a capture. Its
/// server and agent run in their own network namespace and reach the
/// coordinator and S3 only over that link, so while it is down the host can
/// neither report nor upload. The coordinator gives up on the silent rank
/// (`lost`), the capture ends with the others `ok`, and when the link comes
/// back the agent reconnects, uploads, and the manifest becomes complete.
#[test]
fn a_host_cut_off_mid_capture_is_lost_then_delivers_when_its_link_returns() {
    let cut_host = NetHost::create().unwrap();
    let s3 = S3Server::start_for_net_hosts(BUCKET).unwrap();
    // Lost after 2 s of silence, so the capture ends while the link is down.
    let mut deployment = S3Deployment::start_with(
        s3,
        "0.0.0.0:0",
        &["--heartbeat-interval", "250ms", "--lost-after", "8"],
    );
    deployment.add_rank("near-a", 0, &[]);
    deployment.add_rank("near-b", 1, &[]);

    let log = deployment.events_log("cut");
    let server = cut_host
        .spawn(Spawn::rankline(
            "cut-server",
            &["sim-server", "--port", "0"],
        ))
        .args(["--hostname", "cut", "--events-log", log.to_str().unwrap()])
        .wait_for_url()
        .start()
        .unwrap();
    let port = deployment
        .cluster
        .coordinator_url()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let agent = cut_host
        .spawn(
            deployment
                .s3
                .with_env(Spawn::rankline("cut-agent", &["agent"])),
        )
        .env("AWS_ENDPOINT_URL", deployment.s3.endpoint_from(&cut_host))
        .args([
            "--coordinator",
            &format!("http://{}:{port}", cut_host.gateway_ip),
        ])
        .args(["--server", server.url(), "--host", "cut", "--tp-rank", "2"])
        .arg("--spool")
        .arg(deployment.cluster.spool().to_string_lossy())
        .start()
        .unwrap();
    deployment.cluster.servers.push(server);
    deployment.cluster.agents.push(agent);
    deployment.cluster.wait_for_agents(3).unwrap();

    let capture =
        deployment.capture_in_background(&["--profile-id", "netcut", "--duration", "500ms"]);
    wait_until("the cut host's server to profile", LONG_WAIT, || {
        deployment.profiling_started("cut").then_some(())
    })
    .unwrap();
    cut_host.cut().unwrap();
    let cut_at = Instant::now();

    // The capture ends without the cut host: it is lost, the others are ok.
    let output = capture.join().unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "a partial capture: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let ended_after = cut_at.elapsed();
    let partial = deployment
        .manifest("netcut")
        .expect("a manifest while cut off");
    assert_eq!(partial.status, "partial");
    for rank in &partial.ranks {
        let expected = if rank.identity.host == "cut" {
            "lost"
        } else {
            "ok"
        };
        assert_eq!(
            rank.status, expected,
            "{}: {:?}",
            rank.identity.host, rank.reason
        );
    }
    // The cut host's files are safe in its spool, waiting for the link.
    assert_ne!(deployment.journal("cut", 2, "netcut")["state"], "ok");

    cut_host.restore().unwrap();
    let restored = Instant::now();
    let manifest = deployment.wait_complete("netcut");
    let delivered_after = restored.elapsed();
    let (objects, bytes) = deployment.assert_nothing_lost(&manifest, 3);
    assert_eq!(deployment.journal("cut", 2, "netcut")["state"], "ok");
    eprintln!(
        "figures: link cut: capture ended {:.1} s after the cut with the host lost; link down {:.1} s; \
         manifest complete {:.1} s after the link came back; {objects} objects, {bytes} bytes",
        ended_after.as_secs_f64(),
        (restored - cut_at).as_secs_f64(),
        delivered_after.as_secs_f64()
    );
}
