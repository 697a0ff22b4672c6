//! Writes the merge benchmark's inputs: N JAX ranks of about M events each
//! (the simulated server's synthetic writer, as sglang-jax lays them out:
//! `jax/rank-<i>/plugins/profile/<run>/host-<i>.trace.json.gz` + `.xplane.pb`),
//! and the same traces as SGLang-named files without JAX's trailing `{}`
//! (`sglang/bench-TP-<i>.trace.json.gz`), which SGLang's `profile_merger.py`
//! needs: it drops every file whose events include that element.
//!
//! `cargo run --release -p rankline-merge --example bench_capture -- OUT [RANKS] [EVENTS]`

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use rankline_simserver::synthetic::{write_jax_rank, SyntheticRank};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args.next().ok_or("usage: bench_capture OUT [RANKS] [EVENTS]")?;
    let ranks: u32 = args.next().map_or(Ok(8), |a| a.parse())?;
    let events: usize = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let out = Path::new(&out);
    let sglang_dir = out.join("sglang");
    fs::create_dir_all(&sglang_dir)?;
    // A capture started now, the ranks' profiles starting up to ~7 ms apart.
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as i64;
    for rank in 0..ranks {
        let host = format!("host-{rank}");
        let spec = SyntheticRank::new(&host, start + i64::from(rank) * 830_411, events, rank);
        let files = write_jax_rank(&out.join("jax").join(format!("rank-{rank}")), &spec)?;
        let merger_copy = sglang_dir.join(format!("bench-TP-{rank}.trace.json.gz"));
        let stripped = strip_trailing_empty_event(&files.trace_json_gz, &merger_copy)?;
        println!(
            "rank {rank}: {} ({} bytes gz), merger copy {} ({stripped} bytes of JSON)",
            files.trace_json_gz.display(),
            fs::metadata(&files.trace_json_gz)?.len(),
            merger_copy.display()
        );
    }
    Ok(())
}

/// Copies a gzipped JAX trace without its final `{}` element.
fn strip_trailing_empty_event(from: &Path, to: &Path) -> Result<usize, Box<dyn std::error::Error>> {
    let mut text = String::new();
    GzDecoder::new(BufReader::new(File::open(from)?)).read_to_string(&mut text)?;
    let trimmed = text.trim_end();
    let without = trimmed
        .strip_suffix(",{}]}")
        .map(|head| format!("{head}]}}"))
        .ok_or("the trace does not end with JAX's `,{}]}`")?;
    let mut gz = GzEncoder::new(BufWriter::new(File::create(to)?), Compression::fast());
    gz.write_all(without.as_bytes())?;
    gz.finish()?.flush()?;
    Ok(without.len())
}
