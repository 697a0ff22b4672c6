//! Test captures: the objects a coordinator and its agents store (manifest,
//! sidecars, real JAX xplanes from the shared fixtures), written to a
//! folder or to any storage.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rankline_layout::{
    CaptureStatus, ClockFit, FileKind, FileRecord, Manifest, ManifestRank, RankCoords,
    RankIdentity, RankKey, RankObjects, RankStatus, ServerKind, Sidecar, TimeBase, TimeBaseSource,
    MANIFEST_FORMAT, MANIFEST_NAME, SIDECAR_FORMAT,
};
use rankline_storage::Storage;
use sha2::{Digest, Sha256};

/// 2026-11-22T21:47:17.5Z, the start of the jax_multi2 fixture.
pub const START_NS: i64 = 1_795_384_037_500_000_000;
pub const RUN: &str = "2026_11_22_21_47_17";

/// What a test rank stored.
#[derive(Clone)]
pub enum Stored {
    /// sglang-jax: a trace and this xplane.
    Xplane(Vec<u8>),
    /// SGLang (Kineto): a trace only.
    Kineto,
    /// The rank failed: nothing stored.
    Failed,
}

#[derive(Clone)]
pub struct TestRank {
    pub coords: RankCoords,
    pub host: String,
    pub stored: Stored,
    pub clock_offset_ns: Option<i64>,
}

impl TestRank {
    pub fn jax(role: &str, worker: u32, tp: u32, host: &str, proc: usize) -> TestRank {
        TestRank {
            coords: RankCoords {
                role: role.parse().unwrap(),
                worker,
                ..RankCoords::unified(tp, 0)
            },
            host: host.into(),
            stored: Stored::Xplane(fixture_xplane(proc)),
            clock_offset_ns: Some(1_000_000 * (proc as i64 + 1)),
        }
    }
}

/// A real JAX xplane: `jax_multi2/proc<n>`'s.
pub fn fixture_xplane(proc: usize) -> Vec<u8> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/real-jax/jax_multi2")
        .join(format!(
            "proc{proc}/plugins/profile/2026_11_22_21_47_17/vm.xplane.pb"
        ));
    std::fs::read(&dir).unwrap_or_else(|e| panic!("fixture {}: {e}", dir.display()))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Every object of a capture `id` (keys relative to the storage root):
/// the manifest, and per rank its trace, xplane and sidecar.
pub fn capture_objects(id: &str, ranks: &[TestRank]) -> Vec<(String, Vec<u8>)> {
    let mut objects = Vec::new();
    let mut manifest_ranks = Vec::new();
    for rank in ranks {
        let key = RankKey::new(id, &rank.coords);
        let identity = RankIdentity {
            agent_id: format!("{}/{}", rank.host, rank.coords.display_name()),
            host: rank.host.clone(),
            coords: rank.coords.clone(),
            server_url: "http://127.0.0.1:1".into(),
            server_kind: match rank.stored {
                Stored::Kineto => ServerKind::Sglang,
                _ => ServerKind::SglangJax,
            },
            trigger: true,
            node_rank: None,
            labels: Default::default(),
        };
        let xplane = match &rank.stored {
            Stored::Failed => {
                manifest_ranks.push(ManifestRank {
                    identity,
                    status: RankStatus::Failed,
                    reason: Some("timed out in collecting".into()),
                    objects: RankObjects::default(),
                });
                continue;
            }
            Stored::Kineto => None,
            Stored::Xplane(bytes) => Some(bytes.clone()),
        };
        let trace = b"{\"traceEvents\":[]}".to_vec();
        let mut files = vec![FileRecord {
            kind: FileKind::Trace,
            key: key.trace(),
            size: trace.len() as u64,
            sha256: sha256_hex(&trace),
            source_name: format!("{}.trace.json.gz", rank.host),
        }];
        objects.push((key.trace(), trace));
        if let Some(bytes) = &xplane {
            files.push(FileRecord {
                kind: FileKind::Xplane,
                key: key.xplane(),
                size: bytes.len() as u64,
                sha256: sha256_hex(bytes),
                source_name: format!("{}.xplane.pb", rank.host),
            });
            objects.push((key.xplane(), bytes.clone()));
        }
        let sidecar = Sidecar {
            format: SIDECAR_FORMAT.into(),
            profile_id: id.parse().unwrap(),
            identity: identity.clone(),
            start_requested_unix_ns: START_NS,
            stop_requested_unix_ns: None,
            stop_observed_unix_ns: None,
            time_base: TimeBase {
                source: TimeBaseSource::XplaneProfileStartTime,
                unix_ns: START_NS + 1_000,
            },
            profile_stop_unix_ns: None,
            clock: rank.clock_offset_ns.map(|offset_ns| ClockFit {
                offset_ns,
                error_bound_ns: 50_000,
                drift_ppm: 0.0,
                at_unix_ns: START_NS,
                samples: vec![],
            }),
            files,
            agent_version: "test".into(),
        };
        objects.push((key.sidecar(), serde_json::to_vec(&sidecar).unwrap()));
        manifest_ranks.push(ManifestRank::ok(
            identity,
            RankObjects::stored(&key, xplane.is_some()),
        ));
    }
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        profile_id: id.parse().unwrap(),
        status: CaptureStatus::Partial,
        reason: None,
        storage_url: "file:///elsewhere".into(),
        created_unix_ns: START_NS - 1_000_000_000,
        start_at_unix_ns: START_NS,
        finished_unix_ns: START_NS + 3_000_000_000,
        settings: None,
        ranks: manifest_ranks,
        audit: Vec::new(),
    };
    objects.push((
        format!("{id}/{MANIFEST_NAME}"),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    ));
    objects
}

/// Writes the objects under a storage folder; returns the capture folder.
pub fn write_folder(root: &Path, id: &str, objects: &[(String, Vec<u8>)]) -> PathBuf {
    for (key, bytes) in objects {
        let path = root.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    root.join(id)
}

/// Stores the objects in a storage.
pub async fn put_all(storage: &Storage, objects: &[(String, Vec<u8>)]) {
    for (key, bytes) in objects {
        storage.put_bytes(key, bytes.clone()).await.unwrap();
    }
}

/// A PD capture: prefill (2 JAX ranks), decode (1 JAX rank, 1 failed) and
/// one SGLang (Kineto) rank.
pub fn mixed_capture() -> Vec<TestRank> {
    let jax = |role, tp, host, proc| TestRank::jax(role, 0, tp, host, proc);
    vec![
        jax("prefill", 0, "tpu-a.zone.internal", 0),
        jax("prefill", 1, "tpu-b", 1),
        jax("decode", 0, "tpu-c", 0),
        TestRank {
            stored: Stored::Failed,
            ..jax("decode", 1, "tpu-d", 1)
        },
        TestRank {
            stored: Stored::Kineto,
            clock_offset_ns: None,
            ..jax("unified", 0, "gpu-e", 0)
        },
    ]
}
