//! The upload benchmark (issue 5): a 1 GiB trace file stored in a local
//! S3-compatible server (s3s-fs) through `rankline-storage` the way the
//! agent does it (streaming multipart upload hashed on the way, then the
//! read-back check of size and sha256), against one plain PUT of the same
//! bytes to the same server. Each upload runs in a child process on a
//! single-threaded runtime, like the agent, whose peak RSS (`VmHWM`) is
//! reported.
//!
//! ```text
//! cargo build --release -p rankline-bench --bin upload-bench
//! target/release/upload-bench --out bench/results/upload.md
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use object_store::aws::AmazonS3Builder;
use object_store::{ObjectStore, PutPayload, WriteMultipart};
use rankline_bench::machine;
use rankline_e2e::S3Server;
use rankline_storage::Storage;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

const BUCKET: &str = "bench";
const PREFIX: &str = "upload-bench";
const MIB: u64 = 1024 * 1024;

#[derive(Debug, Parser)]
struct Args {
    /// Size of the trace file, in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Runs of each path (alternating); medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Write the results as markdown here (they are printed too).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Internal: run one upload in this process and print its figures.
    #[arg(long, hide = true, requires_all = ["file", "key"])]
    child: Option<UploadPath>,
    #[arg(long, hide = true)]
    file: Option<PathBuf>,
    #[arg(long, hide = true)]
    key: Option<String>,
}

/// The ways of storing the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum UploadPath {
    /// `Storage::upload_file` then `Storage::verify`, as the agent does.
    Rankline,
    /// One `put` of the whole file, read into memory first (not timed).
    SinglePut,
    /// object_store's own multipart writer with rankline's part size and
    /// concurrency, without hashing: what multipart itself costs the server.
    PlainMultipart,
}

impl UploadPath {
    const ALL: [UploadPath; 3] = [
        UploadPath::Rankline,
        UploadPath::SinglePut,
        UploadPath::PlainMultipart,
    ];

    fn word(self) -> &'static str {
        match self {
            UploadPath::Rankline => "rankline",
            UploadPath::SinglePut => "single-put",
            UploadPath::PlainMultipart => "plain-multipart",
        }
    }
}

/// rankline-storage's multipart shape (storage/src/transfer.rs).
const PART_SIZE: usize = 8 * 1024 * 1024;
const PARTS_IN_FLIGHT: usize = 2;

/// What one child reported.
#[derive(Debug, Clone)]
struct Measured {
    upload: Duration,
    verify: Option<Duration>,
    peak_rss_kib: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let (Some(path), Some(file), Some(key)) = (args.child, &args.file, &args.key) {
        return child(path, file, key);
    }
    let results = run(&args)?;
    print!("{results}");
    if let Some(out) = &args.out {
        std::fs::write(out, &results).with_context(|| format!("write {}", out.display()))?;
        eprintln!("written to {}", out.display());
    }
    Ok(())
}

fn run(args: &Args) -> Result<String> {
    let s3 = S3Server::start(BUCKET)?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("trace.xplane.pb");
    eprintln!("writing a {} MiB file", args.size_mib);
    write_noise(&file, args.size_mib * MIB)?;

    let mut measured: Vec<(UploadPath, Measured)> = Vec::new();
    for run in 0..args.runs {
        for path in UploadPath::ALL {
            let key = format!("run{run}-{}.xplane.pb", path.word());
            let result = spawn_child(&s3, path, &file, &key)?;
            eprintln!(
                "run {run}: {:<15} upload {:.2} s, check {}, peak RSS {} MiB",
                path.word(),
                result.upload.as_secs_f64(),
                result
                    .verify
                    .map_or("-".to_string(), |d| format!("{:.2} s", d.as_secs_f64())),
                result.peak_rss_kib / 1024
            );
            let stored = s3.object_path(&format!("{PREFIX}/{key}"));
            let size = std::fs::metadata(&stored)
                .with_context(|| format!("{} was not stored", stored.display()))?
                .len();
            if size != args.size_mib * MIB {
                bail!("{key} has {size} bytes in storage");
            }
            // Keeps the disk use at one copy.
            std::fs::remove_file(&stored)?;
            measured.push((path, result));
        }
    }
    Ok(report(args, &measured))
}

/// Incompressible bytes (xorshift), so no layer can shortcut them.
fn write_noise(path: &Path, size: u64) -> Result<()> {
    let mut out = std::io::BufWriter::with_capacity(MIB as usize, std::fs::File::create(path)?);
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut block = vec![0u8; MIB as usize];
    let mut left = size;
    while left > 0 {
        for word in block.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let n = left.min(MIB) as usize;
        out.write_all(&block[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(())
}

fn spawn_child(s3: &S3Server, path: UploadPath, file: &Path, key: &str) -> Result<Measured> {
    let output = Command::new(std::env::current_exe()?)
        .args(["--child", path.word(), "--key", key])
        .arg("--file")
        .arg(file)
        .envs(s3.env())
        .output()?;
    if !output.status.success() {
        bail!(
            "the {} upload failed: {}",
            path.word(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let figures: Value = serde_json::from_slice(&output.stdout).context("child output")?;
    let seconds = |name: &str| figures[name].as_f64().map(Duration::from_secs_f64);
    Ok(Measured {
        upload: seconds("upload_s").context("no upload time")?,
        verify: seconds("verify_s"),
        peak_rss_kib: figures["peak_rss_kib"].as_u64().context("no peak RSS")?,
    })
}

/// One upload, in this (child) process; prints its figures as JSON.
fn child(path: UploadPath, file: &Path, key: &str) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (upload, verify) = runtime.block_on(async {
        match path {
            UploadPath::Rankline => {
                let storage = Storage::open(&format!("s3://{BUCKET}/{PREFIX}"))?;
                let started = Instant::now();
                let stored = storage.upload_file(key, file, &|_| {}).await?;
                let upload = started.elapsed();
                let started = Instant::now();
                storage.verify(key, stored.size, &stored.sha256).await?;
                anyhow::Ok((upload, Some(started.elapsed())))
            }
            UploadPath::SinglePut => {
                let bytes = tokio::fs::read(file).await?;
                let started = Instant::now();
                s3_store()?
                    .put(&location(key), PutPayload::from(bytes))
                    .await?;
                anyhow::Ok((started.elapsed(), None))
            }
            UploadPath::PlainMultipart => {
                let started = Instant::now();
                let upload = s3_store()?.put_multipart(&location(key)).await?;
                let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
                let mut source = tokio::fs::File::open(file).await?;
                let mut buf = vec![0u8; MIB as usize];
                loop {
                    let n = source.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                    writer.write(&buf[..n]);
                }
                writer.finish().await?;
                anyhow::Ok((started.elapsed(), None))
            }
        }
    })?;
    let figures = json!({
        "upload_s": upload.as_secs_f64(),
        "verify_s": verify.map(|d| d.as_secs_f64()),
        "peak_rss_kib": peak_rss_kib()?,
    });
    println!("{figures}");
    Ok(())
}

fn s3_store() -> Result<impl ObjectStore> {
    Ok(AmazonS3Builder::from_env()
        .with_bucket_name(BUCKET)
        .build()?)
}

fn location(key: &str) -> object_store::path::Path {
    object_store::path::Path::from(format!("{PREFIX}/{key}"))
}

/// `VmHWM` of this process: its peak resident set.
fn peak_rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/self/status")
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 0 {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

fn report(args: &Args, measured: &[(UploadPath, Measured)]) -> String {
    let of = |path: UploadPath| -> Vec<&Measured> {
        measured
            .iter()
            .filter(|(p, _)| *p == path)
            .map(|(_, m)| m)
            .collect()
    };
    let mib = args.size_mib as f64;
    let upload_s =
        |runs: &[&Measured]| median(runs.iter().map(|m| m.upload.as_secs_f64()).collect());
    let total_s = |runs: &[&Measured]| {
        median(
            runs.iter()
                .map(|m| (m.upload + m.verify.unwrap_or_default()).as_secs_f64())
                .collect(),
        )
    };
    let peak = |runs: &[&Measured]| runs.iter().map(|m| m.peak_rss_kib).max().unwrap_or(0) / 1024;
    let rankline = of(UploadPath::Rankline);
    let single = of(UploadPath::SinglePut);
    let multipart = of(UploadPath::PlainMultipart);
    let (r_up, r_total, s_up) = (upload_s(&rankline), total_s(&rankline), upload_s(&single));
    let m_up = upload_s(&multipart);
    let verify_s = r_total - r_up;

    let mut text = String::new();
    text.push_str("# Upload benchmark\n\n");
    text.push_str(&format!(
        "Machine: {}. Date: {}. {} build. Server: {} on loopback, its data under {}.\n\n",
        machine(),
        today(),
        if cfg!(debug_assertions) {
            "Debug"
        } else {
            "Release"
        },
        command_line("s3s-fs", &["--version"]).unwrap_or_else(|| "s3s-fs".into()),
        std::env::temp_dir().display(),
    ));
    text.push_str(&format!(
        "File: {} MiB of incompressible bytes, read from the page cache. {} runs of each path, alternating; medians (peak RSS: the largest). Load average when the runs ended (the machine is shared): {}.\n\n",
        args.size_mib,
        args.runs,
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next().map(str::to_string))
            .unwrap_or_else(|| "?".into())
    ));
    text.push_str("| path | upload | upload throughput | read back + sha256 | total | total throughput | peak RSS (VmHWM) |\n|---|---|---|---|---|---|---|\n");
    text.push_str(&format!(
        "| rankline-storage, the agent's path: multipart (8 MiB parts, ≤ 2 in flight), sha256 while streaming, then read back and checked | {r_up:.2} s | {:.0} MiB/s | {verify_s:.2} s | {r_total:.2} s | {:.0} MiB/s | {} MiB |\n",
        mib / r_up,
        mib / r_total,
        peak(&rankline)
    ));
    text.push_str(&format!(
        "| one plain PUT of the whole file (object_store `put`, file read into memory first, not timed) | {s_up:.2} s | {:.0} MiB/s | – | {s_up:.2} s | {:.0} MiB/s | {} MiB |\n",
        mib / s_up,
        mib / s_up,
        peak(&single)
    ));
    text.push_str(&format!(
        "| for reference: object_store's multipart writer alone (same 8 MiB parts, ≤ 2 in flight, no sha256, no check) | {m_up:.2} s | {:.0} MiB/s | – | {m_up:.2} s | {:.0} MiB/s | {} MiB |\n\n",
        mib / m_up,
        mib / m_up,
        peak(&multipart)
    ));
    text.push_str(&format!(
        "Throughput ratio rankline / plain PUT: upload {:.2}x; with the read-back check {:.2}x. rankline's upload against the bare multipart writer: {:.2}x.\n",
        s_up / r_up,
        s_up / r_total,
        m_up / r_up
    ));
    text
}

fn today() -> String {
    command_line("date", &["+%Y-%m-%d"]).unwrap_or_else(|| "?".into())
}

fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    Some(String::from_utf8_lossy(&output.stdout).trim().to_string()).filter(|s| !s.is_empty())
}
