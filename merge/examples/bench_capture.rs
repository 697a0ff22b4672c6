//! Writes the merge benchmark's inputs (`bench/merge/run.sh` runs it):
//!
//! * `capture/<id>/`: a rankline capture of N sglang-jax ranks of about M
//!   events each, laid out as `rankline capture` stores one
//!   (`<id>-TP-<n>-EP-0.trace.json.gz`, `.xplane.pb`, `.meta.json` sidecar,
//!   `manifest.json`). The traces come from the simulated server's synthetic
//!   writer, so they are what sglang-jax writes, trailing `{}` included; the
//!   ranks' profiles start up to ~6 ms apart and their hosts' clocks differ
//!   by tens of microseconds, as on a real deployment.
//! * `sglang/bench-TP-<n>.trace.json.gz`: the same traces without JAX's
//!   trailing `{}`, which SGLang's `profile_merger.py` needs (it drops every
//!   file whose events include that element).
//!
//! `cargo run --release -p rankline-merge --example bench_capture -- OUT [RANKS] [EVENTS]`

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use rankline_layout::{
    CaptureStatus, ClockFit, FileKind, FileRecord, Manifest, ManifestRank, RankCoords,
    RankIdentity, RankKey, RankObjects, ServerKind, SettingsRecord, Sidecar, TimeBase,
    TimeBaseSource, MANIFEST_FORMAT, MANIFEST_NAME, SIDECAR_FORMAT,
};
use rankline_simserver::synthetic::{write_jax_rank, SyntheticRank};

type Error = Box<dyn std::error::Error>;

const PROFILE_ID: &str = "bench";

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let out = args
        .next()
        .ok_or("usage: bench_capture OUT [RANKS] [EVENTS]")?;
    let ranks: u32 = args.next().map_or(Ok(8), |a| a.parse())?;
    let events: usize = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let out = Path::new(&out);
    let root = out.join("capture");
    let capture = root.join(PROFILE_ID);
    let spool = out.join("spool");
    let sglang = out.join("sglang");
    for dir in [&capture, &spool, &sglang] {
        fs::create_dir_all(dir)?;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as i64;
    let start_at = now + 300_000_000;
    let mut manifest_ranks = Vec::new();
    for rank in 0..ranks {
        let host = format!("host-{rank}");
        let profile_start = start_at + 18_700_000 + i64::from(rank % 7) * 830_411;
        let spec = SyntheticRank::new(&host, profile_start, events, rank);
        let written = write_jax_rank(&spool.join(&host), &spec)?;

        let coords = RankCoords::unified(rank, 0);
        let key = RankKey::new(PROFILE_ID, &coords);
        let trace = root.join(key.trace());
        let xplane = root.join(key.xplane());
        fs::rename(&written.trace_json_gz, &trace)?;
        fs::rename(&written.xplane_pb, &xplane)?;
        let identity = RankIdentity {
            agent_id: format!("{host}/unified-0/{}", coords.rank_label()),
            host: host.clone(),
            coords,
            server_url: format!("http://{host}:30000"),
            server_kind: ServerKind::SglangJax,
            trigger: rank == 0,
            node_rank: Some(rank),
            labels: Default::default(),
        };
        let record =
            |kind, key: String, path: &Path, source_name: &str| -> Result<FileRecord, Error> {
                Ok(FileRecord {
                    kind,
                    key,
                    size: fs::metadata(path)?.len(),
                    sha256: String::new(),
                    source_name: source_name.into(),
                })
            };
        let sidecar = Sidecar {
            format: SIDECAR_FORMAT.into(),
            profile_id: PROFILE_ID.parse()?,
            identity: identity.clone(),
            start_requested_unix_ns: start_at,
            stop_requested_unix_ns: None,
            stop_observed_unix_ns: None,
            time_base: TimeBase {
                source: TimeBaseSource::XplaneProfileStartTime,
                unix_ns: profile_start,
            },
            profile_stop_unix_ns: None,
            clock: Some(ClockFit {
                offset_ns: (i64::from(rank) - 4) * 23_000,
                error_bound_ns: 40_000,
                drift_ppm: 0.0,
                at_unix_ns: start_at,
                samples: vec![],
            }),
            files: vec![
                record(
                    FileKind::Trace,
                    key.trace(),
                    &trace,
                    &format!("{host}.trace.json.gz"),
                )?,
                record(
                    FileKind::Xplane,
                    key.xplane(),
                    &xplane,
                    &format!("{host}.xplane.pb"),
                )?,
            ],
            agent_version: "bench".into(),
        };
        fs::write(
            root.join(key.sidecar()),
            serde_json::to_vec_pretty(&sidecar)?,
        )?;
        manifest_ranks.push(ManifestRank::ok(identity, RankObjects::stored(&key, true)));

        let merger_copy = sglang.join(format!("{PROFILE_ID}-TP-{rank}.trace.json.gz"));
        let json_bytes = strip_trailing_empty_event(&trace, &merger_copy)?;
        println!(
            "rank {rank}: {} ({} MB of JSON, {:.1} MB gzipped)",
            trace.display(),
            json_bytes / 1_000_000,
            fs::metadata(&trace)?.len() as f64 / 1e6
        );
    }
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        profile_id: PROFILE_ID.parse()?,
        status: CaptureStatus::Complete,
        reason: None,
        storage_url: root.display().to_string(),
        created_unix_ns: now,
        start_at_unix_ns: start_at,
        finished_unix_ns: start_at + 12_000_000_000,
        settings: Some(SettingsRecord {
            num_steps: u32::try_from(events / 1000).ok(),
            ..Default::default()
        }),
        ranks: manifest_ranks,
        audit: Vec::new(),
    };
    fs::write(
        capture.join(MANIFEST_NAME),
        serde_json::to_vec_pretty(&manifest)?,
    )?;
    fs::remove_dir_all(&spool)?;
    println!("capture: {}", capture.display());
    Ok(())
}

/// Copies a gzipped JAX trace without its final `{}` element; returns the
/// JSON's size.
fn strip_trailing_empty_event(from: &Path, to: &Path) -> Result<usize, Error> {
    let mut text = String::new();
    GzDecoder::new(BufReader::new(File::open(from)?)).read_to_string(&mut text)?;
    let without = text
        .trim_end()
        .strip_suffix(",{}]}")
        .map(|head| format!("{head}]}}"))
        .ok_or("the trace does not end with JAX's `,{}]}`")?;
    let mut gz = GzEncoder::new(BufWriter::new(File::create(to)?), Compression::fast());
    gz.write_all(without.as_bytes())?;
    gz.finish()?.flush()?;
    Ok(text.len())
}
