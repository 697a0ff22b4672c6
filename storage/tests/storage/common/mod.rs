//! Shared by the real-server tests: starting a storage server process on a
//! free loopback port, and the calls the agent and coordinator make, checked
//! against the bytes that went in.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rankline_storage::Storage;
use sha2::{Digest, Sha256};

/// One server process and its scratch folder, both gone when dropped.
pub struct ServerProcess {
    child: Child,
    port: u16,
    _data: tempfile::TempDir,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl ServerProcess {
    /// Fills a scratch folder with `prepare`, starts `program` with the
    /// arguments `args(port, folder)` builds, and waits until it accepts
    /// connections. Returns None, after saying so on stderr, when `program`
    /// is not installed: `.ci/run` installs the servers, and a plain
    /// `cargo test` elsewhere must still pass without them.
    pub fn start(
        program: &str,
        install_hint: &str,
        prepare: impl FnOnce(&Path),
        args: impl FnOnce(u16, &Path) -> Vec<String>,
    ) -> Option<ServerProcess> {
        let data = tempfile::tempdir().unwrap();
        prepare(data.path());
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let spawned = Command::new(program)
            .args(args(port, data.path()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("SKIPPED: {program} is not installed: {install_hint}");
                return None;
            }
            Err(error) => panic!("cannot start {program}: {error}"),
        };
        let server = ServerProcess {
            child,
            port,
            _data: data,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{program} did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// An object the tests store and read back, by key relative to the storage root.
pub struct Sample {
    pub key: &'static str,
    pub data: Vec<u8>,
}

/// Two rank traces (one small enough for a single PUT, one of 20 MiB that
/// goes up in parts) and a sidecar, all under `cap/`, plus one object
/// outside it that listing `cap` must leave out.
pub fn samples() -> Vec<Sample> {
    // Bytes that differ from offset to offset, so a misplaced part shows.
    let patterned = |len: usize| (0..len).map(|i| (i % 253) as u8).collect();
    vec![
        Sample {
            key: "cap/cap-TP-0-EP-0.trace.json.gz",
            data: patterned(64 * 1024 + 3),
        },
        Sample {
            key: "cap/cap-TP-1-EP-0.trace.json.gz",
            data: patterned(20 * 1024 * 1024 + 7),
        },
        Sample {
            key: "cap/cap-TP-0-EP-0.meta.json",
            data: b"{\"rank\":0}".to_vec(),
        },
        Sample {
            key: "other/x.json",
            data: b"[]".to_vec(),
        },
    ]
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Stores the samples the way rankline does: traces with `upload_file`
/// (verified after), small JSON with `put_bytes`.
pub async fn store_samples(storage: &Storage, samples: &[Sample]) {
    let dir = tempfile::tempdir().unwrap();
    for sample in samples {
        let stored = if sample.key.ends_with(".json") {
            storage
                .put_bytes(sample.key, sample.data.clone())
                .await
                .unwrap()
        } else {
            let local = dir.path().join("upload.bin");
            std::fs::write(&local, &sample.data).unwrap();
            let stored = storage
                .upload_file(sample.key, &local, &|_| {})
                .await
                .unwrap();
            storage
                .verify(&stored.key, stored.size, &stored.sha256)
                .await
                .unwrap();
            stored
        };
        assert_eq!(stored.key, sample.key);
        assert_eq!(stored.size, sample.data.len() as u64, "{}", sample.key);
        assert_eq!(stored.sha256, sha256_hex(&sample.data), "{}", sample.key);
    }
}

/// Reads every sample back through every read call, lists `cap`, and checks
/// how a missing object answers.
pub async fn read_samples_back(storage: &Storage, samples: &[Sample]) {
    let dir = tempfile::tempdir().unwrap();
    for sample in samples {
        let size = sample.data.len() as u64;
        assert_eq!(storage.head(sample.key).await.unwrap(), Some(size));
        storage
            .verify(sample.key, size, &sha256_hex(&sample.data))
            .await
            .unwrap();
        let back = dir.path().join("back.bin");
        assert_eq!(storage.download_to(sample.key, &back).await.unwrap(), size);
        assert!(
            std::fs::read(&back).unwrap() == sample.data,
            "{} downloads differently",
            sample.key
        );
        if sample.key.ends_with(".json") {
            assert_eq!(storage.get_bytes(sample.key).await.unwrap(), sample.data);
        }
    }

    let listed: Vec<(String, u64)> = storage
        .list("cap")
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    let mut expected: Vec<(String, u64)> = samples
        .iter()
        .filter(|s| s.key.starts_with("cap/"))
        .map(|s| (s.key.to_string(), s.data.len() as u64))
        .collect();
    expected.sort();
    assert_eq!(listed, expected);

    assert_eq!(storage.head("cap/missing.json").await.unwrap(), None);
    let missing = storage.get_bytes("cap/missing.json").await.unwrap_err();
    assert!(missing.is_not_found(), "{missing}");
    // An object not there yet may be one still uploading: worth asking again.
    assert!(missing.is_transient(), "{missing}");
}
