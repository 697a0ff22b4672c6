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
use std::collections::BinaryHeap;
use std::io;
use std::ops::ControlFlow;

use crate::chrome::{raw_text, Element, RawEvent};
use crate::events::{event_span, reason, EventFilter, IdKey, Phase, RankStats};
use crate::json_scan::members;
use crate::output::ChunkSink;
use crate::proto::{self, annotation, descriptor, interned, packet, track_event};
use crate::timebase::RankTime;
use rustc_hash::FxHashMap;

/// Output is handed to the sink in pieces of about this size.
const CHUNK: usize = 4 << 20;
/// Interned strings per packet, to keep packets small.
const INTERNED_PER_PACKET: usize = 4096;
/// Distinct annotation string values interned per rank; later ones inline.
const MAX_INTERNED_VALUES: usize = 1 << 16;
/// Values longer than this are written inline, not interned.
const MAX_INTERNED_VALUE_LEN: usize = 256;

/// Strings to small ids (`iid`s start at 1).
#[derive(Default)]
struct Interner {
    ids: FxHashMap<Box<str>, u32>,
    limit: Option<usize>,
}

impl Interner {
    fn capped(limit: usize) -> Self {
        Interner {
            ids: FxHashMap::default(),
            limit: Some(limit),
        }
    }

    fn intern(&mut self, text: &str) -> Option<u32> {
        if let Some(&id) = self.ids.get(text) {
            return Some(id);
        }
        if self.limit.is_some_and(|limit| self.ids.len() >= limit) {
            return None;
        }
        let id = self.ids.len() as u32 + 1;
        self.ids.insert(text.into(), id);
        Some(id)
    }

    /// Every string, ordered by id.
    fn by_id(&self) -> Vec<(u32, &str)> {
        let mut all: Vec<(u32, &str)> = self.ids.iter().map(|(s, &id)| (id, &**s)).collect();
        all.sort_unstable();
        all
    }
}

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

/// Where the rank's tracks hang and how timestamps are written.
pub struct SequenceInfo<'a> {
    /// Position of the rank in the merged timeline (0-based).
    pub ordinal: u32,
    pub process_name: &'a str,
    /// Subtracted from every timestamp (a zip member's own time zero).
    pub time_zero_ns: i64,
}

/// Everything collected from one rank's trace.
pub struct Timeline<'t> {
    time: &'t RankTime,
    filter: &'t EventFilter,
    pub stats: RankStats,
    names: Interner,
    categories: Interner,
    arg_names: Interner,
    arg_values: Interner,
    threads: Vec<SourceThread>,
    thread_ids: FxHashMap<(IdKey, IdKey), u32>,
    /// The last (pid, tid) text looked up: events come in runs per thread.
    last_thread: Option<(Box<str>, Box<str>, u32)>,
    process_names: FxHashMap<IdKey, String>,
    slices: Vec<Slice>,
    args: Vec<u8>,
    open: FxHashMap<u32, Vec<OpenBegin>>,
    scratch: Vec<u8>,
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
            arg_names: Interner::default(),
            arg_values: Interner::capped(MAX_INTERNED_VALUES),
            threads: Vec::new(),
            thread_ids: FxHashMap::default(),
            last_thread: None,
            process_names: FxHashMap::default(),
            slices,
            args,
            open: FxHashMap::default(),
            scratch: Vec::new(),
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
        let name = event.name.map(raw_text).unwrap_or_default();
        let category = event.cat.map(raw_text);
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
        let name = event.name.map(raw_text).unwrap_or_default();
        let category = event.cat.map(raw_text);
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
        let Some(name) = event.name.map(raw_text) else {
            return;
        };
        let arg = |wanted: &str| -> Option<String> {
            members(event.args?)
                .find(|(key, _)| key == wanted)
                .map(|(_, value)| raw_text(value).into_owned())
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
            let mut encoder = AnnotationEncoder {
                out: &mut self.args,
                scratch: &mut self.scratch,
                names: &mut self.arg_names,
                values: &mut self.arg_values,
            };
            if args.starts_with('{') {
                for (key, value) in members(args) {
                    encoder.annotation(&key, value);
                }
            } else {
                // Not an object (a string, an array): one annotation "args".
                encoder.annotation("args", args);
            }
        }
        let len = u32::try_from(self.args.len() - at).unwrap_or_else(|_| {
            self.args.truncate(at);
            0
        });
        (at as u64, len)
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
        let mut buf = std::mem::take(&mut self.out);
        buf.reserve(CHUNK + (64 << 10));
        let mut out = PacketWriter {
            buf,
            sink,
            body: Vec::new(),
            scratch: Vec::new(),
            sequence: u64::from(info.ordinal) + 1,
            sequence_fields_len: proto::varint_field_len(
                packet::TRUSTED_PACKET_SEQUENCE_ID,
                u64::from(info.ordinal) + 1,
            ) + proto::varint_field_len(
                packet::SEQUENCE_FLAGS,
                packet::SEQ_NEEDS_INCREMENTAL_STATE,
            ),
            time_zero: info.time_zero_ns,
        };
        self.write_interned(&mut out)?;
        let uuids = Uuids::new(info.ordinal, tracks.len());
        self.write_descriptors(&mut out, info, &tracks, uuids)?;
        self.write_events(&mut out, uuids)?;
        out.flush()?;
        Buffers {
            slices: std::mem::take(&mut self.slices),
            args: std::mem::take(&mut self.args),
            out: out.buf,
        }
        .give_back();
        Ok(self.stats)
    }

    /// Sorts the slices by start (longest first) and gives each a track on
    /// which it nests strictly: its source thread's first lane where it fits
    /// inside what is still open, else a new lane.
    fn assign_tracks(&mut self) -> Vec<Lane> {
        // Stable sorting finds the runs already in order (each source thread's
        // events usually are) and merges them.
        self.slices
            .sort_by_key(|s| (s.start, Reverse(s.end), s.track));
        let mut lanes_of: Vec<Vec<(Vec<i64>, u32)>> =
            (0..self.threads.len()).map(|_| Vec::new()).collect();
        let mut lanes: Vec<Lane> = Vec::new();
        for slice in &mut self.slices {
            let thread = slice.track as usize;
            let thread_lanes = &mut lanes_of[thread];
            let mut placed = None;
            for (open_ends, track) in thread_lanes.iter_mut() {
                while open_ends.last().is_some_and(|&end| end <= slice.start) {
                    open_ends.pop();
                }
                if open_ends.last().is_none_or(|&end| end >= slice.end) {
                    open_ends.push(slice.end);
                    placed = Some(*track);
                    break;
                }
            }
            slice.track = placed.unwrap_or_else(|| {
                let track = lanes.len() as u32;
                lanes.push(Lane {
                    thread: thread as u32,
                    index: thread_lanes.len() as u32,
                });
                thread_lanes.push((vec![slice.end], track));
                track
            });
        }
        lanes
    }

    fn write_interned(&self, out: &mut PacketWriter<'_>) -> io::Result<()> {
        let tables = [
            (interned::EVENT_NAMES, self.names.by_id()),
            (interned::EVENT_CATEGORIES, self.categories.by_id()),
            (interned::DEBUG_ANNOTATION_NAMES, self.arg_names.by_id()),
            (
                interned::DEBUG_ANNOTATION_STRING_VALUES,
                self.arg_values.by_id(),
            ),
        ];
        let mut first = true;
        let mut pending: Vec<(u32, u32, &str)> = Vec::new();
        let all: Vec<(u32, u32, &str)> = tables
            .iter()
            .flat_map(|(field, entries)| entries.iter().map(move |&(id, s)| (*field, id, s)))
            .collect();
        let mut entries = all.into_iter().peekable();
        loop {
            pending.clear();
            pending.extend(entries.by_ref().take(INTERNED_PER_PACKET));
            if pending.is_empty() && !first {
                break;
            }
            out.packet(|buf, scratch, sequence| {
                proto::put_varint_field(buf, packet::TRUSTED_PACKET_SEQUENCE_ID, sequence);
                let flags = if first {
                    packet::SEQ_INCREMENTAL_STATE_CLEARED | packet::SEQ_NEEDS_INCREMENTAL_STATE
                } else {
                    packet::SEQ_NEEDS_INCREMENTAL_STATE
                };
                proto::put_varint_field(buf, packet::SEQUENCE_FLAGS, flags);
                if first {
                    proto::put_varint_field(buf, packet::FIRST_PACKET_ON_SEQUENCE, 1);
                }
                proto::put_message(buf, scratch, packet::INTERNED_DATA, |data| {
                    for &(field, id, text) in &pending {
                        proto::put_len_header(
                            data,
                            field,
                            proto::varint_field_len(1, u64::from(id))
                                + proto::len_field_len(2, text.len()),
                        );
                        proto::put_varint_field(data, 1, u64::from(id));
                        proto::put_bytes_field(data, 2, text.as_bytes());
                    }
                });
            })?;
            first = false;
            if entries.peek().is_none() {
                break;
            }
        }
        Ok(())
    }

    fn write_descriptors(
        &self,
        out: &mut PacketWriter<'_>,
        info: &SequenceInfo<'_>,
        lanes: &[Lane],
        uuids: Uuids,
    ) -> io::Result<()> {
        let pid = info.ordinal as i64 + 1;
        let process_uuid = uuids.process;
        out.packet(|buf, scratch, sequence| {
            proto::put_varint_field(buf, packet::TRUSTED_PACKET_SEQUENCE_ID, sequence);
            proto::put_message(buf, scratch, packet::TRACK_DESCRIPTOR, |d| {
                proto::put_varint_field(d, descriptor::UUID, process_uuid);
                let mut process = Vec::new();
                proto::put_varint_field(&mut process, descriptor::PROCESS_PID, pid as u64);
                proto::put_varint_field(
                    &mut process,
                    descriptor::PROCESS_LEGACY_SORT_INDEX,
                    u64::from(info.ordinal),
                );
                proto::put_bytes_field(
                    &mut process,
                    descriptor::PROCESS_NAME,
                    info.process_name.as_bytes(),
                );
                proto::put_bytes_field(d, descriptor::PROCESS, &process);
                proto::put_varint_field(
                    d,
                    descriptor::CHILD_ORDERING,
                    descriptor::CHILD_ORDERING_EXPLICIT,
                );
                proto::put_varint_field(d, descriptor::SIBLING_ORDER_RANK, u64::from(info.ordinal));
            });
        })?;

        let order = self.thread_order();
        let names = self.thread_names();
        for (track, lane) in lanes.iter().enumerate() {
            let thread_name = &names[lane.thread as usize];
            let rank_in_process =
                order[lane.thread as usize] as u64 * 1024 + u64::from(lane.index.min(1023));
            let tid = synthetic_tid(info.ordinal, lane.thread).filter(|_| lane.index == 0);
            out.packet(|buf, scratch, sequence| {
                proto::put_varint_field(buf, packet::TRUSTED_PACKET_SEQUENCE_ID, sequence);
                proto::put_message(buf, scratch, packet::TRACK_DESCRIPTOR, |d| {
                    proto::put_varint_field(d, descriptor::UUID, uuids.track(track as u32));
                    proto::put_varint_field(d, descriptor::PARENT_UUID, process_uuid);
                    match tid {
                        Some(tid) => {
                            let mut thread = Vec::new();
                            proto::put_varint_field(
                                &mut thread,
                                descriptor::THREAD_PID,
                                pid as u64,
                            );
                            proto::put_varint_field(
                                &mut thread,
                                descriptor::THREAD_TID,
                                tid as u64,
                            );
                            proto::put_bytes_field(
                                &mut thread,
                                descriptor::THREAD_NAME,
                                thread_name.as_bytes(),
                            );
                            proto::put_bytes_field(d, descriptor::THREAD, &thread);
                        }
                        None => {
                            let name = if lane.index == 0 {
                                thread_name.clone()
                            } else {
                                format!("{thread_name} (overlap {})", lane.index)
                            };
                            proto::put_bytes_field(d, descriptor::NAME, name.as_bytes());
                        }
                    }
                    proto::put_varint_field(d, descriptor::SIBLING_ORDER_RANK, rank_in_process);
                });
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

    /// BEGIN/END pairs in time order; ends at the same instant close the
    /// innermost slice first.
    fn write_events(&self, out: &mut PacketWriter<'_>, uuids: Uuids) -> io::Result<()> {
        let mut open: BinaryHeap<Reverse<(i64, Reverse<u64>, u64)>> = BinaryHeap::new();
        for (seq, slice) in self.slices.iter().enumerate() {
            while let Some(Reverse((end, _, uuid))) = open.peek().copied() {
                if end > slice.start {
                    break;
                }
                open.pop();
                out.end(end, uuid);
                out.maybe_flush()?;
            }
            let uuid = uuids.track(slice.track);
            let args = &self.args
                [slice.args_at as usize..slice.args_at as usize + slice.args_len as usize];
            let kind = if slice.instant {
                track_event::INSTANT
            } else {
                open.push(Reverse((slice.end, Reverse(seq as u64), uuid)));
                track_event::SLICE_BEGIN
            };
            out.begin(kind, slice.start, uuid, slice.name, slice.category, args);
            out.maybe_flush()?;
        }
        while let Some(Reverse((end, _, uuid))) = open.pop() {
            out.end(end, uuid);
            out.maybe_flush()?;
        }
        Ok(())
    }
}

/// One output track: lane `index` of source thread `thread`.
struct Lane {
    thread: u32,
    index: u32,
}

/// The track uuids of one rank: its process track's, and its tracks' (the
/// process uuid plus the track's number). Every event carries one, so most
/// ranks get small ones (3-byte varints, below 2^21); a rank past the 127th
/// or with 16k tracks gets wide ones (from 2^32), which cannot collide with
/// them.
#[derive(Clone, Copy)]
struct Uuids {
    process: u64,
}

impl Uuids {
    fn new(ordinal: u32, tracks: usize) -> Uuids {
        let shift = if ordinal < 127 && tracks < (1 << 14) - 1 {
            14
        } else {
            32
        };
        Uuids {
            process: (u64::from(ordinal) + 1) << shift,
        }
    }

    fn track(self, track: u32) -> u64 {
        self.process | (u64::from(track) + 1)
    }
}

/// A tid unique across the merged trace for a rank's source thread, while
/// it fits Perfetto's int32; beyond that the track is a plain named track.
fn synthetic_tid(ordinal: u32, thread: u32) -> Option<i32> {
    let tid = (i64::from(ordinal) + 1) * 100_000 + i64::from(thread) + 1;
    (thread < 99_999).then_some(()).and(i32::try_from(tid).ok())
}

/// Buffers packets and hands them to the sink in chunks.
struct PacketWriter<'s> {
    buf: Vec<u8>,
    sink: &'s dyn ChunkSink,
    body: Vec<u8>,
    scratch: Vec<u8>,
    sequence: u64,
    /// Bytes of the sequence id and flags fields every event packet has.
    sequence_fields_len: usize,
    time_zero: i64,
}

impl PacketWriter<'_> {
    /// Writes one packet whose body `build` appends (given a scratch buffer
    /// for nested messages and the sequence id).
    fn packet(&mut self, build: impl FnOnce(&mut Vec<u8>, &mut Vec<u8>, u64)) -> io::Result<()> {
        self.body.clear();
        build(&mut self.body, &mut self.scratch, self.sequence);
        proto::put_bytes_field(&mut self.buf, packet::TRACE_PACKET, &self.body);
        self.maybe_flush()
    }

    fn timestamp(&self, ns: i64) -> u64 {
        // Events before time zero were dropped by the filter.
        (ns - self.time_zero).max(0) as u64
    }

    /// A SLICE_BEGIN or INSTANT, sized arithmetically; everything but the
    /// annotations is assembled on the stack and appended at once.
    fn begin(&mut self, kind: u64, at: i64, uuid: u64, name: u32, category: u32, args: &[u8]) {
        let ts = self.timestamp(at);
        let mut event_len = proto::varint_field_len(track_event::TYPE, kind)
            + proto::varint_field_len(track_event::TRACK_UUID, uuid)
            + proto::varint_field_len(track_event::NAME_IID, u64::from(name))
            + args.len();
        if category != 0 {
            event_len += proto::varint_field_len(track_event::CATEGORY_IIDS, u64::from(category));
        }
        let mut head = StackBytes::new();
        self.packet_head(&mut head, ts, event_len);
        head.varint_field(track_event::TYPE, kind);
        head.varint_field(track_event::TRACK_UUID, uuid);
        head.varint_field(track_event::NAME_IID, u64::from(name));
        if category != 0 {
            head.varint_field(track_event::CATEGORY_IIDS, u64::from(category));
        }
        head.append_to(&mut self.buf);
        self.buf.extend_from_slice(args);
    }

    fn end(&mut self, at: i64, uuid: u64) {
        let ts = self.timestamp(at);
        let event_len = proto::varint_field_len(track_event::TYPE, track_event::SLICE_END)
            + proto::varint_field_len(track_event::TRACK_UUID, uuid);
        let mut head = StackBytes::new();
        self.packet_head(&mut head, ts, event_len);
        head.varint_field(track_event::TYPE, track_event::SLICE_END);
        head.varint_field(track_event::TRACK_UUID, uuid);
        head.append_to(&mut self.buf);
    }

    /// The packet's length prefix, timestamp, sequence and flags, and the
    /// TrackEvent's field header.
    #[inline]
    fn packet_head(&self, head: &mut StackBytes, ts: u64, event_len: usize) {
        let packet_len = proto::varint_field_len(packet::TIMESTAMP, ts)
            + self.sequence_fields_len
            + proto::len_field_len(packet::TRACK_EVENT, event_len);
        head.len_header(packet::TRACE_PACKET, packet_len);
        head.varint_field(packet::TIMESTAMP, ts);
        head.varint_field(packet::TRUSTED_PACKET_SEQUENCE_ID, self.sequence);
        head.varint_field(packet::SEQUENCE_FLAGS, packet::SEQ_NEEDS_INCREMENTAL_STATE);
        head.len_header(packet::TRACK_EVENT, event_len);
    }

    fn maybe_flush(&mut self) -> io::Result<()> {
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.sink.write_chunk(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }
}

/// Room for a slice packet's fixed fields: two length headers (at most 6
/// bytes each) and seven varint fields (at most 11 bytes each) = 61.
struct StackBytes {
    bytes: [u8; 64],
    len: usize,
}

impl StackBytes {
    fn new() -> Self {
        StackBytes {
            bytes: [0; 64],
            len: 0,
        }
    }

    #[inline]
    fn varint(&mut self, mut value: u64) {
        // A local cursor: updating `self.len` byte by byte would make every
        // store wait on the previous one.
        let mut len = self.len;
        while value >= 0x80 {
            self.bytes[len] = (value as u8) | 0x80;
            len += 1;
            value >>= 7;
        }
        self.bytes[len] = value as u8;
        self.len = len + 1;
    }

    #[inline]
    fn varint_field(&mut self, field: u32, value: u64) {
        self.varint(u64::from(field << 3));
        self.varint(value);
    }

    #[inline]
    fn len_header(&mut self, field: u32, len: usize) {
        self.varint(u64::from(field << 3 | 2));
        self.varint(len as u64);
    }

    /// Appends the bytes written so far. Copying the whole fixed-size
    /// array and cutting it back is a few vector moves; copying `len` bytes
    /// would be a call to memcpy per packet.
    fn append_to(&self, out: &mut Vec<u8>) {
        let end = out.len() + self.len;
        out.extend_from_slice(&self.bytes);
        out.truncate(end);
    }
}

/// Encodes `args` entries as TrackEvent `debug_annotations` fields.
struct AnnotationEncoder<'a> {
    out: &'a mut Vec<u8>,
    scratch: &'a mut Vec<u8>,
    names: &'a mut Interner,
    values: &'a mut Interner,
}

impl AnnotationEncoder<'_> {
    fn annotation(&mut self, key: &str, value: &str) {
        let body = &mut *self.scratch;
        body.clear();
        let name_iid = self.names.intern(key).unwrap_or(0);
        proto::put_varint_field(body, annotation::NAME_IID, u64::from(name_iid));
        let text = value;
        match text.as_bytes().first() {
            Some(b'"') => {
                let string = raw_text(value);
                let interned = (string.len() <= MAX_INTERNED_VALUE_LEN)
                    .then(|| self.values.intern(&string))
                    .flatten();
                match interned {
                    Some(iid) => {
                        proto::put_varint_field(body, annotation::STRING_VALUE_IID, u64::from(iid))
                    }
                    None => {
                        proto::put_bytes_field(body, annotation::STRING_VALUE, string.as_bytes())
                    }
                }
            }
            Some(b't') => proto::put_varint_field(body, annotation::BOOL_VALUE, 1),
            Some(b'f') => proto::put_varint_field(body, annotation::BOOL_VALUE, 0),
            Some(b'{' | b'[' | b'n') | None => {
                proto::put_bytes_field(body, annotation::STRING_VALUE, text.as_bytes())
            }
            Some(_) => {
                if let Ok(int) = text.parse::<i64>() {
                    proto::put_varint_field(body, annotation::INT_VALUE, int as u64);
                } else if let Ok(uint) = text.parse::<u64>() {
                    proto::put_varint_field(body, annotation::UINT_VALUE, uint);
                } else if let Ok(double) = text.parse::<f64>() {
                    proto::put_fixed64_field(body, annotation::DOUBLE_VALUE, double.to_bits());
                } else {
                    proto::put_bytes_field(body, annotation::STRING_VALUE, text.as_bytes());
                }
            }
        }
        proto::put_bytes_field(self.out, track_event::DEBUG_ANNOTATIONS, body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_tids_are_unique_and_fit() {
        assert_eq!(synthetic_tid(0, 0), Some(100_001));
        assert_eq!(synthetic_tid(3, 7), Some(400_008));
        assert_eq!(synthetic_tid(0, 99_999), None);
        assert_eq!(synthetic_tid(30_000, 0), None);
        let (first, second) = (Uuids::new(0, 10), Uuids::new(1, 10));
        assert_ne!(first.track(0), first.process);
        assert_ne!(first.track(0), second.track(0));
        assert!(second.track(9) < 1 << 21, "small uuids for ordinary ranks");
        let wide = Uuids::new(200, 10);
        assert!(wide.process >= 1 << 32);
        assert_ne!(wide.track(0), Uuids::new(200 - 128, 10).track(0));
    }
}
