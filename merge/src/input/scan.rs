//! The ranks of a merge as streams of events, for analyses that read traces
//! without writing one (`rankline report`): the same discovery, rank
//! selection, time bases, clock alignment and file choice as [`crate::merge`],
//! each rank's events handed over one at a time on the merged clock.

use std::borrow::Cow;
use std::io;
use std::ops::ControlFlow;

use memchr::memmem;

use crate::error::{InputError, InputProblem};
use crate::events::{event_span, IdKey, Phase};
use crate::input::chrome::{Element, RawEvent};
use crate::input::json_scan::{members, RawText};
use crate::input::rank::RankName;
use crate::input::remote::Fetched;
use crate::input::source::SourceKind;
use crate::output::summary::SkippedRank;
use crate::time::timebase::ClockStatus;
use crate::{
    align, plan, read_elements, worker_pool, MergeError, MergeOptions, MissingRank, Planned,
    RankFailure, RankRefinement, Work,
};

pub use crate::time::align::OpKey as CollectiveId;

/// The ranks of `options`, ready to read: what [`crate::merge`] would merge
/// (`options.output` is not used).
pub fn prepare(options: &MergeOptions) -> Result<PreparedRanks, MergeError> {
    let (pool, _) = worker_pool(options.jobs)?;
    let Planned {
        work,
        skipped,
        filtered_out: _,
        mut found,
    } = plan(options, &pool)?;
    let origin_unix_ns = Planned::origin(found.capture_start_ns, &work);
    Ok(PreparedRanks {
        ranks: work.into_iter().map(|work| PreparedRank { work }).collect(),
        skipped,
        missing: std::mem::take(&mut found.missing),
        warnings: std::mem::take(&mut found.warnings),
        origin_unix_ns,
        _fetched: std::mem::take(&mut found.fetched),
    })
}

/// See [`prepare`].
pub struct PreparedRanks {
    /// In timeline order.
    pub ranks: Vec<PreparedRank>,
    /// Ranks that could not be prepared (with `keep_going`).
    pub skipped: Vec<SkippedRank>,
    /// Ranks the capture's manifest lists but the inputs lack.
    pub missing: Vec<MissingRank>,
    pub warnings: Vec<String>,
    /// The capture's start (or the earliest rank's time base), epoch ns.
    pub origin_unix_ns: i64,
    /// Local copies of URL inputs, kept while the ranks may be read.
    _fetched: Vec<Fetched>,
}

/// One rank, its clock decided.
pub struct PreparedRank {
    work: Work,
}

impl PreparedRank {
    pub fn name(&self) -> &RankName {
        &self.work.input.name
    }

    /// Short and unique: `prefill-0/TP-1-EP-0`, `TP-3-EP-0`.
    pub fn label(&self) -> String {
        self.work.input.name.label()
    }

    /// The file its events are read from, as the user named it.
    pub fn file(&self) -> String {
        self.work.source.location.display()
    }

    pub fn source(&self) -> SourceKind {
        self.work.source.kind
    }

    pub fn clock(&self) -> ClockStatus {
        self.work.time.clock_status
    }

    /// What `--align collectives` did with it.
    pub fn refinement(&self) -> Option<&RankRefinement> {
        self.work.collectives.as_ref()
    }

    /// Streams the rank's events through `on_item`, in file order, times
    /// on the merged clock; events without a usable time are skipped.
    pub fn read(
        &self,
        mut on_item: impl FnMut(TraceItem<'_>) -> ControlFlow<()>,
    ) -> Result<(), InputError> {
        let time = &self.work.time;
        let read = read_elements(&self.work.source, time, &|| false, |element| {
            let Element::Event(event) = element else {
                return ControlFlow::Continue(());
            };
            match Phase::of(event.phase()) {
                Phase::Complete => match event_span(event, time, true) {
                    Ok((start_ns, end_ns)) => on_item(TraceItem::Span(Span {
                        name: event.name.map(RawText::text).unwrap_or_default(),
                        category: event.cat.map(RawText::text),
                        pid: IdKey::from_raw(event.pid),
                        tid: IdKey::from_raw(event.tid),
                        start_ns,
                        end_ns,
                        raw: event,
                    })),
                    Err(_) => ControlFlow::Continue(()),
                },
                Phase::Metadata => match metadata_name(event) {
                    Some((kind, name)) => {
                        let pid = IdKey::from_raw(event.pid);
                        on_item(match kind {
                            NameKind::Process => TraceItem::ProcessName { pid, name },
                            NameKind::Thread => TraceItem::ThreadName {
                                pid,
                                tid: IdKey::from_raw(event.tid),
                                name,
                            },
                        })
                    }
                    None => ControlFlow::Continue(()),
                },
                _ => ControlFlow::Continue(()),
            }
        });
        match read {
            Ok(_) => Ok(()),
            Err(RankFailure::Input(error)) => Err(error),
            Err(RankFailure::Output(error)) => Err(InputError::new(
                self.file(),
                InputProblem::Unreadable(error),
            )),
            Err(RankFailure::Cancelled) => Err(InputError::new(
                self.file(),
                InputProblem::Unreadable(io::Error::other("reading was cancelled")),
            )),
        }
    }
}

/// One thing a rank's trace says.
pub enum TraceItem<'e> {
    /// A `process_name` record: what the events of `pid` belong to
    /// (`/device:TPU:0`, `/host:CPU`, `python3`).
    ProcessName { pid: IdKey, name: Cow<'e, str> },
    /// A `thread_name` record (`XLA Ops`, `stream 7`).
    ThreadName {
        pid: IdKey,
        tid: IdKey,
        name: Cow<'e, str>,
    },
    /// A complete event.
    Span(Span<'e>),
}

/// A complete event on the merged clock.
pub struct Span<'e> {
    pub name: Cow<'e, str>,
    pub category: Option<Cow<'e, str>>,
    pub pid: IdKey,
    pub tid: IdKey,
    pub start_ns: i64,
    pub end_ns: i64,
    raw: &'e RawEvent<'e>,
}

impl Span<'_> {
    /// The text of argument `key`, if the event has it.
    pub fn arg(&self, key: &str) -> Option<Cow<'_, str>> {
        let args = self.raw.args?;
        // Most events lack the key: skip them before parsing their args.
        memmem::find(args.as_bytes(), key.as_bytes())?;
        members(args)
            .filter(|(name, _)| name.as_ref() == key)
            .last()
            .map(|(_, value)| value.text())
    }

    /// Its identity as a collective instance (what `--align collectives`
    /// matches across ranks), `None` when it is not a collective.
    pub fn collective(&self) -> Option<CollectiveId> {
        let args = self.raw.args?;
        let bytes = args.as_bytes();
        if memmem::find(bytes, b"\"run_id\"").is_none() && memmem::find(bytes, b"\"Seq\"").is_none()
        {
            return None;
        }
        align::collective_key(self.raw, args)
    }
}

enum NameKind {
    Process,
    Thread,
}

/// The name a `process_name` / `thread_name` record gives.
fn metadata_name<'e>(event: &'e RawEvent<'e>) -> Option<(NameKind, Cow<'e, str>)> {
    let kind = match event.name.map(RawText::text)?.as_ref() {
        "process_name" => NameKind::Process,
        "thread_name" => NameKind::Thread,
        _ => return None,
    };
    let (_, value) = members(event.args?).find(|(key, _)| key.as_ref() == "name")?;
    Some((kind, value.text()))
}
