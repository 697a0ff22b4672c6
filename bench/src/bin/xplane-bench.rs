//! The xplane conversion benchmark (issue 6): `rankline merge` reading a
//! generated `.xplane.pb` of at least 300 MB straight to `.pftrace`, timed
//! against merely reading the same file (`cat file > /dev/null`) in the
//! same run (the read floor), with the merge's peak RSS against the
//! streaming bound (workers x (2 x the largest `XLine` + 16 MB) + 16 MB), and the same
//! merge on one worker for the scaling of converting lines in parallel.
//!
//! ```text
//! cargo build --release -p rankline -p rankline-bench --bin xplane-bench
//! RANKLINE_BIN=target/release/rankline target/release/xplane-bench --out bench/results/xplane.md
//! ```
//!
//! The file comes from `rankline_xplane::synth` (TPU-shaped device planes,
//! a host plane, `Task Environment`), sized by two small probes, written by
//! a child process so this one stays small (Linux counts the spawning
//! process's peak RSS in every child's `ru_maxrss`). It is
//! read once to warm the page cache (caches cannot be dropped here), then
//! `cat` and the merge each run `--runs` times, alternating; wall time is
//! the median, CPU time (user + system) the median, peak RSS (`ru_maxrss`
//! from `wait4`) the largest.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use rankline_bench::{load_average, machine};
use rankline_e2e::rankline_bin;
use rankline_xplane::synth::{write_synthetic_space, SynthCounts, SynthSpec};

const MB: f64 = 1e6;
/// The merge on one worker (lines one after another), for the scaling.
const ONE_WORKER: &str = "the same, `-j 1` (one line at a time)";
/// Issue 15's target on this machine's two cores, MB/s of input.
const TARGET_MB_PER_S: f64 = 250.0;

#[derive(Debug, Parser)]
struct Args {
    /// Folder for the generated xplane and the merge output.
    #[arg(long, default_value = "/tmp/rankline-xplane-bench")]
    dir: PathBuf,
    /// Size of the generated xplane, in MB (10^6 bytes).
    #[arg(long, default_value_t = 320)]
    size_mb: u64,
    /// `/device:TPU:<n>` planes.
    #[arg(long, default_value_t = 4)]
    planes: u32,
    /// Lines per device plane (Steps, XLA Modules, XLA Ops, ...).
    #[arg(long, default_value_t = 3)]
    lines: u32,
    /// Stats per device event.
    #[arg(long, default_value_t = 4)]
    stats: u32,
    /// Events on the host plane.
    #[arg(long, default_value_t = 200_000)]
    host_events: u64,
    /// Timed runs of each command; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// How `rankline merge` is told to read the xplane itself.
    #[arg(long, default_value = "--source xplane", allow_hyphen_values = true)]
    merge_args: String,
    /// Write the results as markdown here (they are printed too).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Skip the JSON path (merging the same events from a Chrome JSON twin).
    #[arg(long)]
    no_json: bool,
    /// Keep the generated files afterwards.
    #[arg(long)]
    keep: bool,
    /// Internal: size and write the xplane here, print its counts as JSON.
    #[arg(long, hide = true)]
    generate: Option<PathBuf>,
}

/// One finished child process.
struct Measured {
    wall: Duration,
    cpu: Duration,
    max_rss_bytes: u64,
    stdout: Vec<u8>,
}

/// The runs of one command.
#[derive(Default)]
struct Timings {
    runs: Vec<Measured>,
}

/// A command timed in every run.
struct Timed {
    /// How the results table names it.
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    keep_stdout: bool,
    timings: Timings,
}

impl Timings {
    fn median_wall(&self) -> Duration {
        median(self.runs.iter().map(|r| r.wall).collect())
    }
    fn median_cpu(&self) -> Duration {
        median(self.runs.iter().map(|r| r.cpu).collect())
    }
    fn peak_rss_mb(&self) -> f64 {
        self.runs.iter().map(|r| r.max_rss_bytes).max().unwrap_or(0) as f64 / MB
    }
    fn walls(&self) -> String {
        let walls: Vec<String> = self
            .runs
            .iter()
            .map(|r| format!("{:.3}", r.wall.as_secs_f64()))
            .collect();
        walls.join(", ")
    }
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(file) = &args.generate {
        return generate(&args, file);
    }
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let rankline = rankline_bin();
    if rankline.components().any(|c| c.as_os_str() == "debug") {
        eprintln!(
            "warning: timing a debug build ({}); set RANKLINE_BIN=target/release/rankline",
            rankline.display()
        );
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    let input = args.dir.join("bench-TP-0-EP-0.xplane.pb");
    let output = args.dir.join("bench.pftrace");

    // Generating takes memory (a line at a time, up to tens of MB); a
    // child does it, so this process stays small: Linux counts the
    // spawning process's peak in each child's ru_maxrss.
    eprintln!("generating {} ...", input.display());
    let generated = Command::new(std::env::current_exe()?)
        .args(spec_args(&args))
        .arg("--generate")
        .arg(&input)
        .stderr(Stdio::inherit())
        .output()
        .context("run the generator")?;
    if !generated.status.success() {
        bail!("generating {} failed", input.display());
    }
    let (spec, counts, generated_in) = parse_generated(&args, &generated.stdout)?;
    eprintln!(
        "  {:.1} MB, {} spans + {} aggregates, largest line {:.1} MB, in {:.1} s",
        counts.bytes as f64 / MB,
        counts.events,
        counts.aggregated,
        counts.largest_line_bytes as f64 / MB,
        generated_in.as_secs_f64()
    );

    let merge_supported = merge_reads_xplanes(rankline, &args.merge_args)?;
    let merge_xplane = |output: &Path| -> Vec<OsString> {
        let mut command: Vec<OsString> = vec!["merge".into()];
        command.extend(args.merge_args.split_whitespace().map(OsString::from));
        command.extend([
            input.clone().into_os_string(),
            "-o".into(),
            output.into(),
            "--json".into(),
        ]);
        command
    };
    // The JSON path on the same events: the rank's events as a Chrome JSON
    // trace (written by the xplane path, untimed), in a folder of its own
    // so merge does not take the xplane beside it for its time base.
    let json_dir = args.dir.join("json");
    let twin = json_dir.join("bench-TP-0-EP-0.trace.json.gz");
    let twin_bytes = if merge_supported && !args.no_json {
        eprintln!("writing the JSON twin {} (untimed) ...", twin.display());
        std::fs::create_dir_all(&json_dir)?;
        measure(rankline, &merge_xplane(&twin), true)?;
        Some(std::fs::metadata(&twin)?.len())
    } else {
        None
    };
    let json_output = args.dir.join("bench-json.pftrace");
    let merge_json: Vec<OsString> = vec![
        "merge".into(),
        twin.clone().into_os_string(),
        "-o".into(),
        json_output.clone().into_os_string(),
        "--json".into(),
    ];

    let mut commands = vec![Timed {
        name: "`cat file > /dev/null` (read only)".into(),
        program: PathBuf::from("cat"),
        args: vec![input.clone().into_os_string()],
        keep_stdout: false,
        timings: Timings::default(),
    }];
    if merge_supported {
        commands.push(Timed {
            name: format!(
                "**`rankline merge {} file -o out.pftrace`**",
                args.merge_args
            ),
            program: rankline.to_path_buf(),
            args: merge_xplane(&output),
            keep_stdout: true,
            timings: Timings::default(),
        });
    }
    if merge_supported {
        let mut one_worker = merge_xplane(&output);
        one_worker.extend(["-j".into(), "1".into()]);
        commands.push(Timed {
            name: ONE_WORKER.into(),
            program: rankline.to_path_buf(),
            args: one_worker,
            keep_stdout: true,
            timings: Timings::default(),
        });
    }
    if twin_bytes.is_some() {
        commands.push(Timed {
            name: "JSON path, same events: `rankline merge twin.trace.json.gz -o out.pftrace`"
                .into(),
            program: rankline.to_path_buf(),
            args: merge_json,
            keep_stdout: true,
            timings: Timings::default(),
        });
    }

    eprintln!("warming the page cache ...");
    measure(Path::new("cat"), &commands[0].args, false)?;
    let load_before = load_average();
    for run in 1..=args.runs {
        for command in &mut commands {
            let measured = measure(&command.program, &command.args, command.keep_stdout)?;
            eprintln!(
                "  run {run}: {:.3} s, peak RSS {:.0} MB: {}",
                measured.wall.as_secs_f64(),
                measured.max_rss_bytes as f64 / MB,
                command.name
            );
            command.timings.runs.push(measured);
        }
    }
    let load_after = load_average();

    let report = Report {
        args: &args,
        spec: &spec,
        counts,
        generated_in,
        commands: &commands,
        output_bytes: std::fs::metadata(&output).map(|m| m.len()).ok(),
        twin_bytes,
        load: (load_before, load_after),
    }
    .markdown()?;
    print!("{report}");
    if let Some(path) = &args.out {
        std::fs::write(path, &report).with_context(|| format!("write {}", path.display()))?;
        eprintln!("results: {}", path.display());
    }
    if !args.keep {
        for file in [&input, &output, &twin, &json_output] {
            std::fs::remove_file(file).ok();
        }
        std::fs::remove_dir(&json_dir).ok();
    }
    Ok(())
}

/// The spec the arguments ask for, before sizing.
fn base_spec(args: &Args) -> SynthSpec {
    SynthSpec {
        device_planes: args.planes,
        lines_per_plane: args.lines,
        stats_per_event: args.stats,
        host_events: args.host_events,
        ..SynthSpec::default()
    }
}

/// The arguments that choose the spec, to hand to the generator child.
fn spec_args(args: &Args) -> Vec<String> {
    vec![
        format!("--size-mb={}", args.size_mb),
        format!("--planes={}", args.planes),
        format!("--lines={}", args.lines),
        format!("--stats={}", args.stats),
        format!("--host-events={}", args.host_events),
    ]
}

/// The generator child: sizes the spec, writes the file, prints what it wrote.
fn generate(args: &Args, file: &Path) -> Result<()> {
    let spec = sized_spec(base_spec(args), args.size_mb * 1_000_000)?;
    let started = Instant::now();
    let out = File::create(file).with_context(|| format!("create {}", file.display()))?;
    let counts = write_synthetic_space(out, &spec)?;
    let report = serde_json::json!({
        "events_per_line": spec.events_per_line,
        "events": counts.events,
        "aggregated": counts.aggregated,
        "largest_line_bytes": counts.largest_line_bytes,
        "bytes": counts.bytes,
        "seconds": started.elapsed().as_secs_f64(),
    });
    println!("{report}");
    Ok(())
}

/// What the generator child printed.
fn parse_generated(args: &Args, stdout: &[u8]) -> Result<(SynthSpec, SynthCounts, Duration)> {
    let report: serde_json::Value =
        serde_json::from_slice(stdout).context("reading the generator's report")?;
    let number = |key: &str| {
        report[key]
            .as_u64()
            .with_context(|| format!("the generator's report has no {key}"))
    };
    let spec = SynthSpec {
        events_per_line: number("events_per_line")?,
        ..base_spec(args)
    };
    let counts = SynthCounts {
        events: number("events")?,
        aggregated: number("aggregated")?,
        largest_line_bytes: number("largest_line_bytes")?,
        bytes: number("bytes")?,
        ..SynthCounts::default()
    };
    let seconds = report["seconds"].as_f64().unwrap_or(0.0);
    Ok((spec, counts, Duration::from_secs_f64(seconds)))
}

/// The base spec with as many events per device line as make the file at
/// least `target` bytes: two small probes give the bytes per event.
fn sized_spec(base: SynthSpec, target: u64) -> Result<SynthSpec> {
    let probe = |events_per_line: u64| -> Result<SynthCounts> {
        let spec = SynthSpec {
            events_per_line,
            ..base.clone()
        };
        Ok(write_synthetic_space(std::io::sink(), &spec)?)
    };
    const SMALL: u64 = 4_000;
    let (one, two) = (probe(SMALL)?.bytes, probe(2 * SMALL)?.bytes);
    let per_event = (two - one) as f64 / SMALL as f64;
    let needed = target.saturating_sub(one) as f64 / per_event;
    // 1% over, so rounding never leaves the file short of the target.
    let events_per_line = SMALL + (needed * 1.01).ceil() as u64;
    Ok(SynthSpec {
        events_per_line,
        ..base
    })
}

/// Whether this `rankline merge` has the option that makes it read the
/// xplane itself (its --help mentions the first word of `merge_args`).
fn merge_reads_xplanes(rankline: &Path, merge_args: &str) -> Result<bool> {
    let help = Command::new(rankline)
        .args(["merge", "--help"])
        .output()
        .with_context(|| format!("run {} merge --help", rankline.display()))?;
    let flag = merge_args.split_whitespace().next().unwrap_or("");
    let supported = String::from_utf8_lossy(&help.stdout).contains(flag);
    if !supported {
        eprintln!(
            "warning: `rankline merge` has no {flag} here: timing cat and the generator only"
        );
    }
    Ok(supported)
}

/// Runs a command to its end: wall time, CPU time and peak RSS from
/// `wait4`. Its stdout is kept when `keep_stdout`, else it goes straight
/// to /dev/null (as `> /dev/null` would).
fn measure(program: &Path, args: &[OsString], keep_stdout: bool) -> Result<Measured> {
    let stdout = if keep_stdout {
        Stdio::piped()
    } else {
        Stdio::from(File::create("/dev/null")?)
    };
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {}", program.display()))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                pipe.read_to_end(&mut bytes).ok();
            }
            bytes
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let (status, usage) = wait4(child.id())?;
    let wall = started.elapsed();
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!(
            "{} {:?} failed (wait status {status}):\n{}",
            program.display(),
            args,
            String::from_utf8_lossy(&stderr)
        );
    }
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(Measured {
        wall,
        cpu: time(usage.ru_utime) + time(usage.ru_stime),
        // Linux reports kilobytes.
        max_rss_bytes: usage.ru_maxrss as u64 * 1024,
        stdout,
    })
}

/// Reaps a child and returns its wait status and resource usage.
fn wait4(pid: u32) -> Result<(i32, libc::rusage)> {
    let mut status = 0;
    // SAFETY: rusage is plain data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waits for our own child; both pointers are valid for the call.
        let reaped = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
        if reaped == pid as i32 {
            return Ok((status, usage));
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error).context("wait4");
        }
    }
}

/// Everything the results page says.
struct Report<'a> {
    args: &'a Args,
    spec: &'a SynthSpec,
    counts: SynthCounts,
    generated_in: Duration,
    /// `cat`, then the xplane merge and the JSON merge when they ran.
    commands: &'a [Timed],
    output_bytes: Option<u64>,
    twin_bytes: Option<u64>,
    load: (String, String),
}

impl Report<'_> {
    fn markdown(&self) -> Result<String> {
        let (args, spec, counts) = (self.args, self.spec, self.counts);
        let input_mb = counts.bytes as f64 / MB;
        let throughput = |t: &Timings| input_mb / t.median_wall().as_secs_f64();
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let bound_mb = workers as f64 * (2.0 * counts.largest_line_bytes as f64 / MB + 16.0) + 16.0;
        let commit = Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let date = Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();

        let mut md = String::new();
        writeln!(md, "# XPlane conversion benchmark\n")?;
        writeln!(
            md,
            "`target/release/xplane-bench --size-mb {} --runs {}` (see \
             [../README.md](../README.md)), run on {date}, commit `{commit}` plus the working \
             tree.\n",
            args.size_mb, args.runs
        )?;
        writeln!(
            md,
            "Machine: {}. Load average (1 min) before/after the timed runs: {} / {} (the \
             machine is shared with other engineers' builds and tests).\n",
            machine(),
            self.load.0,
            self.load.1
        )?;
        writeln!(
            md,
            "Input: one `.xplane.pb` of **{input_mb:.1} MB** written by \
             `rankline_xplane::synth` in {:.1} s: {} `/device:TPU:n` planes x {} lines x {} \
             events ({} stats each: `hlo_op`/`hlo_module` refs, `run_id`, ...), a `/host:CPU` \
             plane of {} events, `Task Environment`. {} spans and {} aggregates \
             (`num_occurrences`); the largest `XLine` is {:.1} MB.\n",
            self.generated_in.as_secs_f64(),
            spec.device_planes,
            spec.lines_per_plane,
            spec.events_per_line,
            spec.stats_per_event,
            spec.host_events,
            counts.events,
            counts.aggregated,
            counts.largest_line_bytes as f64 / MB
        )?;
        writeln!(
            md,
            "The file was read once to warm the page cache, then each command ran {} times, \
             alternating. Wall and CPU time (user + system): medians; peak RSS (`ru_maxrss` \
             from `wait4`): the largest. `ru_maxrss` includes the spawning process's pages at \
             the exec (Linux records them), so it is never below this harness's own peak, \
             {:.0} MB.\n",
            args.runs,
            own_peak_rss_mb()
        )?;
        writeln!(
            md,
            "| run | wall (s) | runs (s) | CPU (s) | peak RSS (MB) | MB/s of input |"
        )?;
        writeln!(md, "|---|---:|---|---:|---:|---:|")?;
        for command in self.commands {
            let t = &command.timings;
            writeln!(
                md,
                "| {} | {:.3} | {} | {:.2} | {:.0} | {:.0} |",
                command.name,
                t.median_wall().as_secs_f64(),
                t.walls(),
                t.median_cpu().as_secs_f64(),
                t.peak_rss_mb(),
                throughput(t)
            )?;
        }
        writeln!(md)?;
        let cat = &self.commands[0].timings;
        let Some(merge) = self.commands.get(1).map(|c| &c.timings) else {
            writeln!(
                md,
                "`rankline merge {}` was not run: this binary's merge has no such option.",
                args.merge_args
            )?;
            return Ok(md);
        };
        writeln!(
            md,
            "- Conversion throughput: **{:.0} MB/s** of input ({workers} workers; target \
             {TARGET_MB_PER_S:.0} MB/s: {}), {:.1}x the time of reading the file with `cat` \
             (the read floor). Per CPU-second: {:.0} MB of input.",
            throughput(merge),
            if throughput(merge) >= TARGET_MB_PER_S {
                "met"
            } else {
                "NOT met"
            },
            merge.median_wall().as_secs_f64() / cat.median_wall().as_secs_f64(),
            input_mb / merge.median_cpu().as_secs_f64()
        )?;
        if let Some(single) = self.commands.iter().find(|c| c.name == ONE_WORKER) {
            writeln!(
                md,
                "- One worker: {:.0} MB/s; {workers} workers (each line its own packet \
                 sequence) are {:.2}x as fast in wall time.",
                throughput(&single.timings),
                single.timings.median_wall().as_secs_f64() / merge.median_wall().as_secs_f64()
            )?;
        }
        writeln!(
            md,
            "- Peak RSS **{:.0} MB** against the bound {workers} workers x (2 x largest line + \
             16 MB) + 16 MB = {bound_mb:.0} MB: {}.",
            merge.peak_rss_mb(),
            if merge.peak_rss_mb() <= bound_mb {
                "within"
            } else {
                "OVER"
            }
        )?;
        writeln!(
            md,
            "- Output: {}, {} events out (input: {} spans, {} aggregates).",
            self.output_bytes
                .map(|b| format!("{:.1} MB of `.pftrace`", b as f64 / MB))
                .unwrap_or_else(|| "no file".into()),
            events_out(&merge.runs[0].stdout).map_or("?".into(), |n| n.to_string()),
            counts.events,
            counts.aggregated
        )?;
        let json = self
            .commands
            .iter()
            .find(|c| c.name.starts_with("JSON path"));
        match (json, self.twin_bytes) {
            (Some(json), Some(twin_bytes)) => writeln!(
                md,
                "- JSON path on the same rank: the same events as a Chrome JSON trace \
                 (`trace.json.gz` of {:.1} MB, written by the xplane path, untimed; {} events \
                 out) take {:.2} s and {:.0} MB to merge: the xplane path is {:.1}x faster. A \
                 real JAX `trace.json.gz` holds at most ~1M events; the xplane has them all.",
                twin_bytes as f64 / MB,
                events_out(&json.timings.runs[0].stdout).map_or("?".into(), |n| n.to_string()),
                json.timings.median_wall().as_secs_f64(),
                json.timings.peak_rss_mb(),
                json.timings.median_wall().as_secs_f64() / merge.median_wall().as_secs_f64()
            )?,
            _ => writeln!(md, "- JSON path: not run (`--no-json`).")?,
        }
        Ok(md)
    }
}

/// This process's peak RSS (`VmHWM`), in MB.
fn own_peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
            line.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| kib * 1024.0 / MB)
}

/// The merge summary's event count (`ranks[].events_out`, summed).
fn events_out(summary: &[u8]) -> Option<u64> {
    let summary: serde_json::Value = serde_json::from_slice(summary).ok()?;
    summary["ranks"]
        .as_array()?
        .iter()
        .map(|r| r["events_out"].as_u64())
        .sum()
}
