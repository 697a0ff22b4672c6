//! One rank as a Perfetto packet sequence.
//!
//! Events are collected as compact records (interned names, debug
//! annotations already encoded), sorted by start, placed on tracks so slices
//! nest strictly (an event that overlaps another without nesting goes to a
//! sibling "overlap" track, never dropped), then written in time order: a
//! first packet with every interned string, the track descriptors, and one
//! BEGIN/END (or INSTANT) pair per event.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::io;
use std::ops::ControlFlow;

use crate::events::{event_span, reason, EventFilter, IdKey, Phase, RankStats};
use crate::input::chrome::{Element, RawEvent};
use crate::input::json_scan::{members, RawText};
use crate::output::packets::{
    rank_pid, synthetic_tid, AnnotationValue, Annotations, Interner, Lanes, OpenSlices,
    PacketWriter, SequenceInfo, TrackSpec, Uuids,
};
use crate::output::proto::{interned, track_event};
use crate::output::sink::ChunkSink;
use crate::time::timebase::RankTime;
use rustc_hash::FxHashMap;

/// A source thread (`pid`, `tid` of the input) of this rank.
struct SourceThread {
    pid: IdKey,
    tid: IdKey,
    name: Option<String>,
    sort_index: Option<i64>,
}

/// One event, compact. `track` is the source thread until tracks are
/// assigned, then the output track.
#[derive(Clone, Copy)]
struct Slice {
    start: i64,
    end: i64,
    args_at: u64,
    args_len: u32,
    name: u32,
    track: u32,
    category: u32,
    instant: bool,
}

/// The big per-rank buffers. Each worker thread keeps them from one rank
/// to the next: fresh ones would cost tens of MB of page faults per rank.
#[derive(Default)]
struct Buffers {
    slices: Vec<Slice>,
    args: Vec<u8>,
    out: Vec<u8>,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::default();
}

impl Buffers {
    /// This thread's buffers (empty ones the first time).
    fn take() -> Buffers {
        BUFFERS.with(|buffers| std::mem::take(&mut *buffers.borrow_mut()))
    }

    /// Keeps the buffers, emptied, for this thread's next rank.
    fn give_back(mut self) {
        self.slices.clear();
        self.args.clear();
        self.out.clear();
        BUFFERS.with(|buffers| *buffers.borrow_mut() = self);
    }
}

/// A `B` waiting for its `E`.
struct OpenBegin {
    start: i64,
    name: u32,
    category: u32,
    python: bool,
    args_at: u64,
    args_len: u32,
}

/// Everything collected from one rank's trace.
pub struct Timeline<'t> {
    time: &'t RankTime,
    filter: &'t EventFilter,
    pub stats: RankStats,
    names: Interner,
    categories: Interner,
    annotations: Annotations,
    threads: Vec<SourceThread>,
    thread_ids: FxHashMap<(IdKey, IdKey), u32>,
    /// The last (pid, tid) text looked up: events come in runs per thread.
    last_thread: Option<(Box<str>, Box<str>, u32)>,
    process_names: FxHashMap<IdKey, String>,
    slices: Vec<Slice>,
    args: Vec<u8>,
    open: FxHashMap<u32, Vec<OpenBegin>>,
    /// The output buffer, kept here until `write`.
    out: Vec<u8>,
}

impl<'t> Timeline<'t> {
    pub fn new(time: &'t RankTime, filter: &'t EventFilter) -> Self {
        let Buffers { slices, args, out } = Buffers::take();
        Timeline {
            time,
            filter,
            stats: RankStats::default(),
            names: Interner::default(),
            categories: Interner::default(),
            annotations: Annotations::default(),
            threads: Vec::new(),
            thread_ids: FxHashMap::default(),
            last_thread: None,
            process_names: FxHashMap::default(),
            slices,
            args,
            open: FxHashMap::default(),
            out,
        }
    }

    /// Takes one element of the input's `traceEvents`.
    pub fn ingest(&mut self, element: Element<'_, '_>) -> ControlFlow<()> {
        if let Some(event) = self.stats.admit(element) {
            self.event(event);
        }
        ControlFlow::Continue(())
    }

    fn event(&mut self, event: &RawEvent<'_>) {
        let phase = Phase::of(event.phase());
        match phase {
            Phase::Complete | Phase::Instant => self.slice(event, phase == Phase::Instant),
            Phase::Begin => self.begin(event),
            Phase::End => self.end(event),
            Phase::Metadata => {
                self.stats.metadata += 1;
                self.metadata(event);
            }
            Phase::Counter => self.stats.drop_events(reason::COUNTER, 1),
            Phase::Flow => self.stats.drop_events(reason::FLOW, 1),
            Phase::Other => self.stats.drop_events(reason::UNSUPPORTED, 1),
        }
    }

    fn slice(&mut self, event: &RawEvent<'_>, instant: bool) {
        if !instant {
            self.stats.complete_events += 1;
        }
        let (start, end) = match event_span(event, self.time, !instant) {
            Ok(span) => span,
            Err(why) => return self.stats.drop_events(why, 1),
        };
        let name = event.name.map(RawText::text).unwrap_or_default();
        let category = event.cat.map(RawText::text);
        if let Err(why) = self
            .filter
            .check(&name, category.as_deref(), start, end, !instant)
        {
            return self.stats.drop_events(why, 1);
        }
        let track = self.thread_of(event);
        let name = self.names.intern(&name).unwrap_or(0);
        let category = category
            .and_then(|c| self.categories.intern(&c))
            .unwrap_or(0);
        let (args_at, args_len) = self.encode_args(event.args);
        self.slices.push(Slice {
            start,
            end,
            args_at,
            args_len,
            name,
            track,
            category,
            instant,
        });
        self.stats.kept(1, start, end);
    }

    fn begin(&mut self, event: &RawEvent<'_>) {
        let start = match event_span(event, self.time, false) {
            Ok((start, _)) => start,
            Err(why) => return self.stats.drop_events(why, 1),
        };
        let name = event.name.map(RawText::text).unwrap_or_default();
        let category = event.cat.map(RawText::text);
        let python = EventFilter::is_python(&name, category.as_deref());
        let track = self.thread_of(event);
        let name = self.names.intern(&name).unwrap_or(0);
        let category = category
            .and_then(|c| self.categories.intern(&c))
            .unwrap_or(0);
        let (args_at, args_len) = self.encode_args(event.args);
        self.open.entry(track).or_default().push(OpenBegin {
            start,
            name,
            category,
            python,
            args_at,
            args_len,
        });
    }

    fn end(&mut self, event: &RawEvent<'_>) {
        let end = match event_span(event, self.time, false) {
            Ok((end, _)) => end,
            Err(why) => return self.stats.drop_events(why, 1),
        };
        let track = self.thread_of(event);
        let Some(begin) = self.open.get_mut(&track).and_then(Vec::pop) else {
            return self.stats.drop_events(reason::UNMATCHED_END, 1);
        };
        let end = end.max(begin.start);
        // The name only matters to the Python filter, decided at the B.
        let label = if begin.python { "$" } else { "" };
        if let Err(why) = self.filter.check(label, None, begin.start, end, true) {
            return self.stats.drop_events(why, 2);
        }
        self.slices.push(Slice {
            start: begin.start,
            end,
            args_at: begin.args_at,
            args_len: begin.args_len,
            name: begin.name,
            track,
            category: begin.category,
            instant: false,
        });
        self.stats.kept(2, begin.start, end);
    }

    fn metadata(&mut self, event: &RawEvent<'_>) {
        let Some(name) = event.name.map(RawText::text) else {
            return;
        };
        let arg = |wanted: &str| -> Option<String> {
            members(event.args?)
                .find(|(key, _)| key == wanted)
                .map(|(_, value)| value.text().into_owned())
        };
        match name.as_ref() {
            "process_name" => {
                if let Some(process) = arg("name") {
                    self.process_names
                        .insert(IdKey::from_raw(event.pid), process);
                }
            }
            "thread_name" => {
                let thread = arg("name");
                let index = self.thread_of(event) as usize;
                self.threads[index].name = thread;
            }
            "thread_sort_index" => {
                let sort = arg("sort_index").and_then(|s| s.parse().ok());
                let index = self.thread_of(event) as usize;
                self.threads[index].sort_index = sort;
            }
            _ => {}
        }
    }

    /// The source thread of an event, registering new ones.
    fn thread_of(&mut self, event: &RawEvent<'_>) -> u32 {
        let pid_text = event.pid.unwrap_or("");
        let tid_text = event.tid.unwrap_or("");
        if let Some((pid, tid, index)) = &self.last_thread {
            if **pid == *pid_text && **tid == *tid_text {
                return *index;
            }
        }
        let key = (IdKey::from_raw(event.pid), IdKey::from_raw(event.tid));
        let next = self.threads.len() as u32;
        let index = *self.thread_ids.entry(key.clone()).or_insert(next);
        if index == next {
            self.threads.push(SourceThread {
                pid: key.0,
                tid: key.1,
                name: None,
                sort_index: None,
            });
        }
        self.last_thread = Some((pid_text.into(), tid_text.into(), index));
        index
    }

    /// Encodes `args` as DebugAnnotation fields into the args arena.
    fn encode_args(&mut self, args: Option<&str>) -> (u64, u32) {
        let at = self.args.len();
        if let Some(args) = args {
            if args.starts_with('{') {
                for (key, value) in members(args) {
                    self.annotation(&key, value);
                }
            } else {
                // Not an object (a string, an array): one annotation "args".
                self.annotation("args", RawText::of(args));
            }
        }
        let len = u32::try_from(self.args.len() - at).unwrap_or_else(|_| {
            self.args.truncate(at);
            0
        });
        (at as u64, len)
    }

    /// One `args` entry, its value as JSON text, as a debug annotation.
    fn annotation(&mut self, key: &str, value: RawText<'_>) {
        let unquoted;
        let raw = value.raw;
        let value = match raw.as_bytes().first() {
            Some(b'"') => {
                unquoted = value.text();
                AnnotationValue::Text(&unquoted)
            }
            Some(b't') => AnnotationValue::Bool(true),
            Some(b'f') => AnnotationValue::Bool(false),
            Some(b'{' | b'[' | b'n') | None => AnnotationValue::Text(raw),
            Some(_) => {
                if let Ok(int) = raw.parse::<i64>() {
                    AnnotationValue::Int(int)
                } else if let Ok(uint) = raw.parse::<u64>() {
                    AnnotationValue::Uint(uint)
                } else if let Ok(double) = raw.parse::<f64>() {
                    AnnotationValue::Double(double)
                } else {
                    AnnotationValue::Text(raw)
                }
            }
        };
        // Interned strings are all written before the events, in `write`.
        self.annotations
            .put(&mut self.args, key, value, |_, _, _| {});
    }

    /// After the last event: `B`s never closed are dropped.
    pub fn finish_input(&mut self) {
        let unterminated: usize = self.open.values().map(Vec::len).sum();
        self.stats
            .drop_events(reason::UNTERMINATED_BEGIN, unterminated as u64);
        self.stats.dropped.retain(|_, n| *n > 0);
        self.open.clear();
    }

    /// Writes the rank as packet sequence `ordinal + 1`.
    pub fn write(mut self, info: &SequenceInfo<'_>, sink: &dyn ChunkSink) -> io::Result<RankStats> {
        let tracks = self.assign_tracks();
        let mut out = PacketWriter::new(std::mem::take(&mut self.out), sink, info);
        let tables = [
            (interned::EVENT_NAMES, self.names.by_id()),
            (interned::EVENT_CATEGORIES, self.categories.by_id()),
            (
                interned::DEBUG_ANNOTATION_NAMES,
                self.annotations.names.by_id(),
            ),
            (
                interned::DEBUG_ANNOTATION_STRING_VALUES,
                self.annotations.values.by_id(),
            ),
        ];
        out.interned(
            tables
                .iter()
                .flat_map(|(field, entries)| entries.iter().map(move |&(id, s)| (*field, id, s))),
        )?;
        let uuids = Uuids::new(info.ordinal, tracks.len());
        self.write_descriptors(&mut out, info, &tracks, uuids)?;
        self.write_events(&mut out, uuids)?;
        out.flush()?;
        Buffers {
            slices: std::mem::take(&mut self.slices),
            args: std::mem::take(&mut self.args),
            out: std::mem::take(&mut out.buf),
        }
        .give_back();
        Ok(self.stats)
    }

    /// Sorts the slices by start (longest first) and gives each a track on
    /// which it nests strictly: a lane of its source thread.
    fn assign_tracks(&mut self) -> Vec<Lane> {
        // Stable sorting finds the runs already in order (each source thread's
        // events usually are) and merges them.
        self.slices
            .sort_by_key(|s| (s.start, Reverse(s.end), s.track));
        let mut lanes_of: Vec<(Lanes, Vec<u32>)> = (0..self.threads.len())
            .map(|_| Default::default())
            .collect();
        let mut lanes: Vec<Lane> = Vec::new();
        for slice in &mut self.slices {
            let thread = slice.track;
            let (thread_lanes, tracks) = &mut lanes_of[thread as usize];
            let (index, new) = thread_lanes.place(slice.start, slice.end);
            if new {
                tracks.push(lanes.len() as u32);
                lanes.push(Lane { thread, index });
            }
            slice.track = tracks[index as usize];
        }
        lanes
    }

    fn write_descriptors(
        &self,
        out: &mut PacketWriter<'_>,
        info: &SequenceInfo<'_>,
        lanes: &[Lane],
        uuids: Uuids,
    ) -> io::Result<()> {
        out.process_descriptor(info, uuids)?;
        let order = self.thread_order();
        let names = self.thread_names();
        for (track, lane) in lanes.iter().enumerate() {
            let thread_name = &names[lane.thread as usize];
            let tid = synthetic_tid(info.ordinal, lane.thread).filter(|_| lane.index == 0);
            let name = match (tid, lane.index) {
                (Some(_), _) | (None, 0) => thread_name.clone(),
                (None, n) => format!("{thread_name} (overlap {n})"),
            };
            out.track_descriptor(&TrackSpec {
                uuid: uuids.track(track as u32),
                parent: uuids.process,
                name: &name,
                thread: tid.map(|tid| (rank_pid(info.ordinal), tid)),
                order: order[lane.thread as usize] as u64 * 1024 + u64::from(lane.index.min(1023)),
                ordered_children: false,
            })?;
        }
        Ok(())
    }

    /// Each source thread's position among its siblings: by source process
    /// (first seen first), then `thread_sort_index`, then first seen.
    fn thread_order(&self) -> Vec<u32> {
        let mut process_order: FxHashMap<&IdKey, usize> = FxHashMap::default();
        for thread in &self.threads {
            let next = process_order.len();
            process_order.entry(&thread.pid).or_insert(next);
        }
        let mut indices: Vec<usize> = (0..self.threads.len()).collect();
        indices.sort_by_key(|&i| {
            let t = &self.threads[i];
            (process_order[&t.pid], t.sort_index.unwrap_or(i64::MAX), i)
        });
        let mut order = vec![0u32; self.threads.len()];
        for (position, &i) in indices.iter().enumerate() {
            order[i] = position as u32;
        }
        order
    }

    /// Track names: the thread's name (else its tid), behind its source
    /// process's name when the rank has several source processes.
    fn thread_names(&self) -> Vec<String> {
        let mut pids: Vec<&IdKey> = self.threads.iter().map(|t| &t.pid).collect();
        pids.sort();
        pids.dedup();
        let several = pids.len() > 1;
        self.threads
            .iter()
            .map(|t| {
                let thread = t
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("tid {}", t.tid.describe()));
                if several {
                    let process = self
                        .process_names
                        .get(&t.pid)
                        .cloned()
                        .unwrap_or_else(|| format!("pid {}", t.pid.describe()));
                    format!("{process} / {thread}")
                } else {
                    thread
                }
            })
            .collect()
    }

    /// BEGIN/END pairs in time order.
    fn write_events(&self, out: &mut PacketWriter<'_>, uuids: Uuids) -> io::Result<()> {
        let mut open = OpenSlices::default();
        for slice in &self.slices {
            open.close_until(slice.start, out)?;
            let uuid = uuids.track(slice.track);
            let args = &self.args
                [slice.args_at as usize..slice.args_at as usize + slice.args_len as usize];
            let kind = if slice.instant {
                track_event::INSTANT
            } else {
                open.push(slice.end, uuid);
                track_event::SLICE_BEGIN
            };
            out.begin(kind, slice.start, uuid, slice.name, slice.category, args);
            out.maybe_flush()?;
        }
        open.close_until(i64::MAX, out)
    }
}

/// One output track: lane `index` of source thread `thread`.
struct Lane {
    thread: u32,
    index: u32,
}
