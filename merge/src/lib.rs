//! Merge N per-rank traces onto one clock, as one Perfetto `.pftrace` (or
//! Chrome JSON, or a Perfetto archive), with a summary of what went where.
//!
//! ```no_run
//! use rankline_merge::{merge, MergeOptions};
//! let options = MergeOptions::new(vec!["captures/cap1".into()], "cap1.pftrace");
//! let summary = merge(&options)?;
//! print!("{}", summary.render());
//! # Ok::<(), rankline_merge::MergeError>(())
//! ```
//!
//! The pipeline: discovery turns inputs (capture folders or URLs, trace
//! files, `.xplane.pb` files, JAX log dirs) into ranks; each rank's time
//! base and clock are decided, and which of its files is read
//! ([`SourceMode`]); every rank is then read (its `.xplane.pb` line by line,
//! or its Chrome JSON by a streaming reader) and converted on a bounded
//! rayon pool (as many ranks in memory as threads) into the shared output.
//! [`merge`] blocks; from async code call it in `spawn_blocking`.
//! [`prepare`] hands the same ranks, on the same clock, to analyses that
//! read events without writing a trace (`rankline report`).

mod error;
mod events;
#[doc(hidden)]
pub mod fuzzing;
mod input;
mod options;
mod output;
mod time;

use std::io::{self, Read};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant as Clock;

use rayon::prelude::*;
use tracing::debug;

pub use error::{InputError, InputProblem, MergeError};
pub use events::{IdKey, RankStats, XplaneCounts};
pub use input::discover::MissingRank;
pub use input::rank::{Location, NamedBy, RankInput, RankName, REQUESTS_TRACK};
pub use input::scan::{prepare, CollectiveId, PreparedRank, PreparedRanks, Span, TraceItem};
pub use input::source::SourceKind;
pub use options::{
    parse_duration_ns, AlignMode, Filters, Instant, MergeOptions, OutputFormat, RankSelector,
    RoleSelector, SourceMode, Stage, Window,
};
pub use output::fit::SizeFit;
pub use output::summary::{rank_column_width, MergeSummary, RankSummary, SkippedRank};
pub use rankline_units::parse_size;
pub use time::align::{jax_family as jax_collective_family, RankRefinement, RefineOutcome};
pub use time::timebase::{BaseSource, ClockStatus};

use events::{reason, EventFilter};
use input::chrome::Element;
use input::source::RankSource;
use input::xplane::{OpenXplane, XplaneFailure};
use input::{chrome, discover, source};
use output::sink::{ChunkSink, OutputFile, TextOutput};
use output::{archive, fit, json_out, packets, pftrace};
use time::timebase::RankTime;
use time::{align, timebase};

/// XProf's JSON export keeps at most about this many events.
const XPROF_EVENT_CAP: u64 = 1_000_000;

/// One rank ready to convert.
struct Work {
    ordinal: u32,
    input: RankInput,
    /// The file it is read from.
    source: RankSource,
    time: RankTime,
    process_name: String,
    /// What `--align collectives` did with the rank.
    collectives: Option<RankRefinement>,
}

/// Why converting one rank stopped.
enum RankFailure {
    Input(InputError),
    Output(io::Error),
    /// Another rank failed first (without `--keep-going`).
    Cancelled,
}

/// Merges the inputs of `options` into its output and says what it did.
pub fn merge(options: &MergeOptions) -> Result<MergeSummary, MergeError> {
    if let (Some(max_bytes), None) = (options.max_size, options.stop_after) {
        return fit::merge_within(options, max_bytes);
    }
    let started = Clock::now();
    let format = match options.stop_after {
        Some(_) => OutputFormat::from_path(&options.output).unwrap_or(OutputFormat::Pftrace),
        None => OutputFormat::from_path(&options.output)?,
    };
    let (pool, jobs) = worker_pool(options.jobs)?;
    let Planned {
        work,
        mut skipped,
        filtered_out,
        mut found,
    } = plan(options, &pool)?;
    // Local copies of URL inputs stay until the merge is done.
    let _fetched = std::mem::take(&mut found.fetched);

    let origin = Planned::origin(found.capture_start_ns, &work);
    let window = options.filters.window.map(|w| {
        (
            w.start.map_or(i64::MIN, |s| s.resolve(origin)),
            w.end.map_or(i64::MAX, |e| e.resolve(origin)),
        )
    });
    let filter = EventFilter::new(&options.filters, window);
    debug!(ranks = work.len(), ?format, jobs, "merging");

    let run = Run {
        pool: &pool,
        filter: &filter,
        cancel: AtomicBool::new(false),
        keep_going: options.keep_going,
        ranks: work.len() as u32,
    };
    let (results, finish) = match (options.stop_after, format) {
        (Some(stage), _) => (run.each(&work, |w| run.diagnose_rank(w, stage)), None),
        (None, OutputFormat::Pftrace) => run.convert_pftrace(&work, &options.output)?,
        (None, OutputFormat::Json | OutputFormat::JsonGz) => run.convert_json(
            &work,
            origin,
            &options.output,
            format == OutputFormat::JsonGz,
        )?,
        (None, OutputFormat::Zip) => run.convert_zip(&work, &options.output)?,
    };

    let mut ranks = Vec::new();
    let mut first_error = None;
    for (w, result) in work.iter().zip(results) {
        match result {
            Ok(stats) => ranks.push(rank_summary(w, stats)),
            Err(RankFailure::Cancelled) => {}
            Err(RankFailure::Output(e)) => {
                return Err(MergeError::Output {
                    path: options.output.clone(),
                    source: e,
                })
            }
            Err(RankFailure::Input(error)) => {
                if options.keep_going {
                    skipped.push(SkippedRank {
                        rank: Some(w.input.name.label()),
                        error: error.to_string(),
                    });
                } else if first_error.is_none() {
                    first_error = Some(error);
                }
            }
        }
    }
    if let Some(error) = first_error {
        return Err(error.into());
    }
    if ranks.is_empty() {
        return Err(MergeError::NothingToMerge(
            "every rank failed to convert".into(),
        ));
    }
    let window_missed = ranks.iter().all(|r| r.stats.events_out == 0)
        && ranks
            .iter()
            .any(|r| r.stats.dropped.contains_key(reason::WINDOW));
    if let Some(window) = window.filter(|_| window_missed) {
        // The output (still under its temporary name) is dropped unwritten.
        return Err(run.window_missed(&work, window, origin));
    }
    let bytes_written = match finish {
        Some(finish) => finish().map_err(output_error(&options.output))?,
        None => 0,
    };

    let mut warnings = found.warnings;
    warnings.extend(rank_warnings(&ranks, options.align));
    warnings.extend(align::warnings(&ranks));
    Ok(MergeSummary {
        output: options.stop_after.is_none().then(|| options.output.clone()),
        format,
        bytes_written,
        elapsed_ms: started.elapsed().as_millis() as u64,
        align: options.align,
        origin_unix_ns: origin,
        window_unix_ns: window,
        ranks,
        skipped,
        missing: found.missing,
        filtered_out,
        warnings,
        stopped_after: options.stop_after,
        size_fit: None,
    })
}

/// The pool ranks are read on: `jobs` threads, default one per CPU.
fn worker_pool(jobs: Option<usize>) -> Result<(rayon::ThreadPool, usize), MergeError> {
    let jobs = jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .thread_name(|i| format!("merge-{i}"))
        .build()
        .map_err(|e| MergeError::Options(format!("cannot start {jobs} worker threads: {e}")))?;
    Ok((pool, jobs))
}

/// The ranks of a merge before any is converted: discovered, selected by
/// the filters, each with its time base, clock and file to read (refined by
/// `--align collectives` when asked).
pub(crate) struct Planned {
    work: Vec<Work>,
    skipped: Vec<SkippedRank>,
    filtered_out: Vec<String>,
    /// The rest of the discovery (warnings, missing ranks, fetched copies).
    found: discover::Discovery,
}

impl Planned {
    /// The output's time zero: the capture's start, else the earliest
    /// rank's time base.
    fn origin(capture_start_ns: Option<i64>, work: &[Work]) -> i64 {
        capture_start_ns.unwrap_or_else(|| {
            work.iter()
                .filter(|w| w.time.source != BaseSource::None)
                .map(|w| w.time.aligned_base())
                .min()
                .unwrap_or(0)
        })
    }
}

/// Discovers and prepares the ranks of `options` (see [`Planned`]).
fn plan(options: &MergeOptions, pool: &rayon::ThreadPool) -> Result<Planned, MergeError> {
    if options.inputs.is_empty() {
        return Err(MergeError::Options(
            "no inputs: give capture folders, trace files or JAX log dirs".into(),
        ));
    }
    let mut found = discover::discover(
        &options.inputs,
        &options.filters,
        options.source != SourceMode::Json,
    );
    let mut skipped = Vec::new();
    for error in std::mem::take(&mut found.unusable) {
        if !options.keep_going {
            return Err(error.into());
        }
        skipped.push(SkippedRank {
            rank: None,
            error: error.to_string(),
        });
    }
    let (mut selected, filtered): (Vec<RankInput>, Vec<RankInput>) =
        std::mem::take(&mut found.ranks)
            .into_iter()
            .partition(|r| r.name.is_requests() || options.filters.selects(&r.name.coords));
    let filtered_out: Vec<String> = filtered.iter().map(|r| r.name.label()).collect();
    if selected.is_empty() {
        return Err(MergeError::NothingToMerge(if filtered_out.is_empty() {
            with_first_skip("no readable rank in the inputs", &skipped)
        } else {
            format!(
                "--ranks/--roles left out every rank ({})",
                filtered_out.join(", ")
            )
        }));
    }
    selected.sort_by(|a, b| a.name.sort_key().cmp(&b.name.sort_key()));

    let times: Vec<Result<RankTime, InputError>> = pool.install(|| {
        selected
            .par_iter()
            .map(|rank| timebase::resolve(rank, options.align))
            .collect()
    });
    let mut work = Vec::with_capacity(selected.len());
    for (input, time) in selected.into_iter().zip(times) {
        let ready = time.and_then(|time| Ok((source::choose(&input, options.source)?, time)));
        match ready {
            Ok((source, time)) => work.push(Work {
                ordinal: work.len() as u32,
                process_name: input.name.display_name(),
                input,
                source,
                time,
                collectives: None,
            }),
            Err(error) if options.keep_going => skipped.push(SkippedRank {
                rank: Some(input.name.label()),
                error: error.to_string(),
            }),
            Err(error) => return Err(error.into()),
        }
    }
    if work.is_empty() {
        return Err(MergeError::NothingToMerge(with_first_skip(
            "no rank could be read",
            &skipped,
        )));
    }
    if options.align == AlignMode::Collectives {
        align::apply(pool, &mut work);
    }
    Ok(Planned {
        work,
        skipped,
        filtered_out,
        found,
    })
}

/// `what`, and the first reason a rank was skipped, if any.
fn with_first_skip(what: &str, skipped: &[SkippedRank]) -> String {
    match skipped.first() {
        Some(first) => format!("{what} (the first: {})", first.error),
        None => what.to_string(),
    }
}

/// Per-rank results, and what finishes the output once they are all good.
type Converted<'a> = (
    Vec<Result<RankStats, RankFailure>>,
    Option<Box<dyn FnOnce() -> io::Result<u64> + 'a>>,
);

fn output_error(path: &Path) -> impl Fn(io::Error) -> MergeError + '_ {
    move |source| MergeError::Output {
        path: path.to_path_buf(),
        source,
    }
}

/// The shared state of one merge's conversions.
struct Run<'a> {
    pool: &'a rayon::ThreadPool,
    filter: &'a EventFilter,
    /// Set when a rank failed and the others should stop (no `--keep-going`).
    cancel: AtomicBool,
    keep_going: bool,
    /// Ranks being merged (packet sequence ids are numbered past them).
    ranks: u32,
}

impl Run<'_> {
    /// Runs `convert` on every rank, as many at once as the pool has threads.
    fn each<F>(&self, work: &[Work], convert: F) -> Vec<Result<RankStats, RankFailure>>
    where
        F: Fn(&Work) -> Result<RankStats, RankFailure> + Sync,
    {
        self.pool.install(|| {
            work.par_iter()
                .map(|w| {
                    if self.cancelled() {
                        return Err(RankFailure::Cancelled);
                    }
                    let result = convert(w);
                    if matches!(
                        result,
                        Err(RankFailure::Input(_)) | Err(RankFailure::Output(_))
                    ) && !self.keep_going
                    {
                        self.cancel.store(true, Ordering::Relaxed);
                    }
                    result
                })
                .collect()
        })
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// The error for a `window` that kept no event, with the span of the
    /// events it missed (found by reading the ranks again, unfiltered: this
    /// is the rare case of a mistyped window).
    fn window_missed(&self, work: &[Work], window: (i64, i64), origin: i64) -> MergeError {
        let everything = EventFilter::default();
        let unfiltered = Run {
            pool: self.pool,
            filter: &everything,
            cancel: AtomicBool::new(false),
            keep_going: true,
            ranks: self.ranks,
        };
        let span = unfiltered
            .each(work, |w| unfiltered.diagnose_rank(w, Stage::Parse))
            .into_iter()
            .flatten()
            .filter_map(|stats| Some((stats.first_ns?, stats.last_ns?)))
            .reduce(|(a, b), (c, d)| (a.min(c), b.max(d)));
        let ms = |ns: i64| match ns {
            i64::MIN | i64::MAX => String::new(),
            ns => format!("{:.3}", (ns - origin) as f64 / 1e6),
        };
        let missed = match span {
            Some((first, last)) => format!(
                "lies outside the capture span {}..{} ms (after the origin)",
                ms(first),
                ms(last)
            ),
            None => "lies outside every event".into(),
        };
        MergeError::WindowSelectsNothing(format!(
            "--window {}..{} ms {missed}: nothing selected, nothing written",
            ms(window.0),
            ms(window.1)
        ))
    }

    fn convert_pftrace(
        &self,
        work: &[Work],
        path: &Path,
    ) -> Result<Converted<'static>, MergeError> {
        let out = OutputFile::create(path).map_err(output_error(path))?;
        let results = self.each(work, |w| match w.source.kind {
            // Parsed whole before its first packet is written.
            SourceKind::Json => self.pftrace_rank(w, &out),
            // Written as it is read: with --keep-going, a damaged line
            // further on must not leave the lines before it in the output
            // (without it, a failure leaves no output at all).
            SourceKind::Xplane if !self.keep_going => self.pftrace_rank(w, &out),
            SourceKind::Xplane => {
                let stage = Mutex::new(out.stage(output::sink::PACKET_STAGE_IN_MEMORY));
                let stats = self.pftrace_rank(w, &stage)?;
                let stage = stage.into_inner().unwrap_or_else(|e| e.into_inner());
                out.append(stage).map_err(RankFailure::Output)?;
                Ok(stats)
            }
        });
        Ok((results, Some(Box::new(move || out.commit()))))
    }

    fn convert_json(
        &self,
        work: &[Work],
        origin: i64,
        path: &Path,
        gzip: bool,
    ) -> Result<Converted<'static>, MergeError> {
        let out = TextOutput::create(path, gzip).map_err(output_error(path))?;
        let mut header = format!(
            "{{\"displayTimeUnit\":\"ns\",\"metadata\":{{\"rankline_origin_unix_ns\":{origin},\
             \"rankline_ts\":\"microseconds after rankline_origin_unix_ns\"}},\"traceEvents\":["
        )
        .into_bytes();
        for (i, w) in work.iter().enumerate() {
            if i > 0 {
                header.push(b',');
            }
            json_out::push_sort_index(&mut header, json_out::rank_pid(w.ordinal));
        }
        out.write_now(&header).map_err(output_error(path))?;
        let results = self.each(work, |w| {
            let rank = json_out::JsonRank::new(
                w.ordinal,
                &w.process_name,
                &w.time,
                self.filter,
                origin,
                out.stage(),
            );
            let (rank, read) = self.read_rank(w, rank, |rank, element| rank.ingest(element))?;
            let (stage, edits, mut stats) = rank.finish().map_err(RankFailure::Output)?;
            read.note(&mut stats);
            out.commit_stage(stage, &edits)
                .map_err(RankFailure::Output)?;
            Ok(stats)
        });
        let commit = move || {
            out.write_now(b"]}")?;
            out.commit()
        };
        Ok((results, Some(Box::new(commit))))
    }

    fn convert_zip(&self, work: &[Work], path: &Path) -> Result<Converted<'static>, MergeError> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let members_dir = tempfile::Builder::new()
            .prefix(".rankline-merge-")
            .tempdir_in(dir)
            .map_err(output_error(path))?;
        let member_file = |w: &Work| {
            members_dir
                .path()
                .join(archive::member_path(&w.input.name.label()))
        };
        let results = self.each(work, |w| {
            let file = std::fs::File::create(member_file(w)).map_err(RankFailure::Output)?;
            self.pftrace_rank(w, &Mutex::new(file))
        });
        let files: Vec<(&Work, std::path::PathBuf)> = work
            .iter()
            .zip(&results)
            .filter(|(_, result)| result.is_ok())
            .map(|(w, _)| (w, member_file(w)))
            .collect();
        let members: Vec<archive::Member<'_>> = files
            .iter()
            .map(|(w, file)| archive::Member {
                path: archive::member_path(&w.input.name.label()),
                machine: w.input.name.host.as_deref().unwrap_or(&w.process_name),
                file,
            })
            .collect();
        let out = OutputFile::create(path).map_err(output_error(path))?;
        out.with_file(|file| archive::write_archive(file, &members))
            .map_err(output_error(path))?;
        Ok((results, Some(Box::new(move || out.commit()))))
    }

    /// Converts one rank to a packet sequence written to `sink`.
    fn pftrace_rank(&self, w: &Work, sink: &dyn ChunkSink) -> Result<RankStats, RankFailure> {
        let filter = self.filter;
        let info = packets::SequenceInfo {
            ordinal: w.ordinal,
            ranks: self.ranks,
            process_name: &w.process_name,
        };
        match w.source.kind {
            SourceKind::Json => {
                let timeline = self.parse_rank(w, filter)?;
                timeline.write(&info, sink).map_err(RankFailure::Output)
            }
            SourceKind::Xplane => {
                let xplane =
                    OpenXplane::open(&w.source.location, &w.time).map_err(RankFailure::Input)?;
                let cancelled = || self.cancelled();
                output::xplane_pftrace::write_pftrace(
                    xplane, &w.time, filter, &info, sink, &cancelled,
                )
                .map_err(RankFailure::from)
            }
        }
    }

    /// Reads a rank's whole Chrome JSON trace into a [`pftrace::Timeline`].
    fn parse_rank<'t>(
        &self,
        w: &'t Work,
        filter: &'t EventFilter,
    ) -> Result<pftrace::Timeline<'t>, RankFailure> {
        let timeline = pftrace::Timeline::new(&w.time, filter);
        let (mut timeline, read) = self.read_rank(w, timeline, |t, element| t.ingest(element))?;
        timeline.finish_input();
        read.note(&mut timeline.stats);
        debug!(rank = %w.input.name.label(), events = timeline.stats.events_in, "parsed");
        Ok(timeline)
    }

    /// Streams a rank's events through `ingest`; returns the consumer and
    /// what was read.
    fn read_rank<T>(
        &self,
        w: &Work,
        mut consumer: T,
        ingest: impl Fn(&mut T, Element<'_, '_>) -> ControlFlow<()>,
    ) -> Result<(T, ElementsRead), RankFailure> {
        let read = read_elements(&w.source, &w.time, &|| self.cancelled(), |element| {
            if self.cancelled() {
                return ControlFlow::Break(());
            }
            ingest(&mut consumer, element)
        })?;
        if read.stopped && self.cancelled() {
            return Err(RankFailure::Cancelled);
        }
        Ok((consumer, read))
    }

    /// The diagnostic stages: decompress only, or decompress and parse.
    fn diagnose_rank(&self, w: &Work, stage: Stage) -> Result<RankStats, RankFailure> {
        match (stage, w.source.kind) {
            (Stage::Gunzip, kind) => {
                let location = &w.source.location;
                let unreadable = |e| {
                    RankFailure::Input(InputError::new(
                        location.display(),
                        InputProblem::Unreadable(e),
                    ))
                };
                let (mut reader, gzipped): (Box<dyn Read>, bool) = match kind {
                    SourceKind::Json => {
                        let source = source::open_trace(location).map_err(RankFailure::Input)?;
                        (source.reader, source.gzipped)
                    }
                    SourceKind::Xplane => (Box::new(location.open().map_err(unreadable)?), false),
                };
                let mut counted = Counted::new(&mut reader);
                io::copy(&mut counted, &mut io::sink()).map_err(|e| {
                    RankFailure::Input(InputError::new(
                        location.display(),
                        source::read_problem(chrome::ReadError::Io(e), gzipped),
                    ))
                })?;
                Ok(RankStats {
                    bytes_read: counted.bytes,
                    ..RankStats::default()
                })
            }
            (Stage::Parse, SourceKind::Json) => self.parse_rank(w, self.filter).map(|t| t.stats),
            (Stage::Parse, SourceKind::Xplane) => self.pftrace_rank(w, &Discard),
        }
    }
}

/// What reading a rank's events found besides the events.
struct ElementsRead {
    /// Bytes read (decompressed, for a Chrome JSON trace).
    bytes: u64,
    /// The consumer stopped before the end.
    stopped: bool,
    /// What an `.xplane.pb` held.
    xplane: Option<XplaneCounts>,
}

impl ElementsRead {
    /// Adds what the events' consumer could not see to its counts: the
    /// bytes read, and an xplane's aggregates (never handed over).
    fn note(&self, stats: &mut RankStats) {
        stats.bytes_read = self.bytes;
        if let Some(counts) = self.xplane {
            stats.events_in += counts.aggregated;
            stats.drop_events(reason::AGGREGATED, counts.aggregated);
            stats.dropped.retain(|_, n| *n > 0);
            stats.xplane = Some(counts);
        }
    }
}

/// Streams a rank's file through `on_element` as Chrome trace elements
/// (an `.xplane.pb` is rendered as such), stopping early when `cancelled`.
fn read_elements(
    source: &RankSource,
    time: &RankTime,
    cancelled: &dyn Fn() -> bool,
    on_element: impl FnMut(Element<'_, '_>) -> ControlFlow<()>,
) -> Result<ElementsRead, RankFailure> {
    match source.kind {
        SourceKind::Json => {
            let trace = source::open_trace(&source.location).map_err(RankFailure::Input)?;
            let mut counted = Counted::new(trace.reader);
            match chrome::read_trace(&mut counted, on_element) {
                Ok(footer) => Ok(ElementsRead {
                    bytes: counted.bytes,
                    stopped: footer.stopped,
                    xplane: None,
                }),
                Err(error) => Err(RankFailure::Input(InputError::new(
                    source.location.display(),
                    source::read_problem(error, trace.gzipped),
                ))),
            }
        }
        SourceKind::Xplane => {
            let mut xplane =
                OpenXplane::open(&source.location, time).map_err(RankFailure::Input)?;
            let read = input::xplane::for_each_element(&mut xplane, time, cancelled, on_element)?;
            Ok(ElementsRead {
                bytes: xplane.bytes_read(),
                stopped: read.stopped,
                xplane: Some(read.counts),
            })
        }
    }
}

impl From<XplaneFailure> for RankFailure {
    fn from(failure: XplaneFailure) -> Self {
        match failure {
            XplaneFailure::Input(error) => RankFailure::Input(error),
            XplaneFailure::Output(error) => RankFailure::Output(error),
            XplaneFailure::Cancelled => RankFailure::Cancelled,
        }
    }
}

/// Output that goes nowhere (the `parse` diagnostic).
struct Discard;

impl ChunkSink for Discard {
    fn write_chunk(&self, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
}

/// A reader that counts the bytes it hands out.
struct Counted<R> {
    inner: R,
    bytes: u64,
}

impl<R> Counted<R> {
    fn new(inner: R) -> Self {
        Counted { inner, bytes: 0 }
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

fn rank_summary(w: &Work, stats: RankStats) -> RankSummary {
    let fit = w.time.fit();
    RankSummary {
        rank: w.input.name.label(),
        name: w.process_name.clone(),
        trace: w.source.location.display(),
        source: w.source.kind,
        time_base: w.time.source,
        time_base_unix_ns: w.time.base_ns,
        clock: w.time.clock_status,
        clock_shift_ns: w.time.clock_shift_ns(),
        clock_error_bound_ns: fit.map(|f| f.error_bound_ns),
        clock_drift_ppm: fit.map(|f| f.drift_ppm),
        collectives: w.collectives.clone(),
        stats,
    }
}

/// Per-rank facts a person should not miss.
fn rank_warnings(ranks: &[RankSummary], align: AlignMode) -> Vec<String> {
    let mut warnings = Vec::new();
    let any_clock = ranks.iter().any(|r| r.clock == ClockStatus::Applied);
    for rank in ranks {
        let complete = rank.stats.complete_events;
        if rank.source == SourceKind::Json
            && (XPROF_EVENT_CAP - 100..=XPROF_EVENT_CAP).contains(&complete)
        {
            warnings.push(format!(
                "{}: {complete} complete events, right at XProf's JSON export cap of about \
                 1,000,000: the trace is probably truncated. The .xplane.pb JAX writes beside \
                 it is complete: merge it with --source auto (the default) or xplane",
                rank.rank
            ));
        }
        if rank.time_base == BaseSource::None {
            warnings.push(format!(
                "{}: no time base (no sidecar, no .xplane.pb profile_start_time, no \
                 baseTimeNanoseconds): its times are taken as given, so it may not line up with \
                 the other ranks",
                rank.rank
            ));
        }
        match rank.clock {
            ClockStatus::Implausible => warnings.push(format!(
                "{}: the sidecar's clock fit is implausible and was ignored",
                rank.rank
            )),
            ClockStatus::NotMeasured if align != AlignMode::None && any_clock => {
                warnings.push(format!(
                    "{}: no clock measurement in its sidecar: its host clock is trusted as it is",
                    rank.rank
                ))
            }
            _ => {}
        }
    }
    let spans: Vec<(&str, i64, i64)> = ranks
        .iter()
        .filter_map(|r| Some((r.rank.as_str(), r.stats.first_ns?, r.stats.last_ns?)))
        .collect();
    if spans.len() > 1 {
        for (i, &(label, first, last)) in spans.iter().enumerate() {
            let overlaps = spans
                .iter()
                .enumerate()
                .any(|(j, &(_, f, l))| j != i && f <= last && first <= l);
            if !overlaps {
                warnings.push(format!(
                    "{label}: its events do not overlap any other rank's in time: its time base \
                     or clock is probably wrong (see the time base column)"
                ));
            }
        }
    }
    warnings
}
