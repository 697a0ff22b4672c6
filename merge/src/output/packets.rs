//! Writing one rank's Perfetto packet sequence, shared by both ways a rank
//! is converted (a whole Chrome JSON trace in `pftrace`, an xplane line by
//! line in `xplane_pftrace`): string interning, the interned-data and track
//! descriptor packets, the sequence's delta clock, slice packets, debug
//! annotations, and the placement of slices on lanes so they nest strictly.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;

use rustc_hash::FxHashMap;

use crate::output::proto::{
    self, annotation, clock, descriptor, interned, packet, track_event, SmallMessage,
};
use crate::output::sink::ChunkSink;

/// Output is handed to the sink in pieces of about this size.
pub const CHUNK: usize = 4 << 20;
/// Interned strings per packet, to keep packets small.
const INTERNED_PER_PACKET: usize = 4096;
/// Distinct annotation string values interned per rank; later ones inline.
pub const MAX_INTERNED_VALUES: usize = 1 << 16;
/// Values longer than this are written inline, not interned.
pub const MAX_INTERNED_VALUE_LEN: usize = 256;

/// Strings to small ids (`iid`s start at 1).
#[derive(Default)]
pub struct Interner {
    ids: FxHashMap<Box<str>, u32>,
    limit: Option<usize>,
}

impl Interner {
    pub fn capped(limit: usize) -> Self {
        Interner {
            ids: FxHashMap::default(),
            limit: Some(limit),
        }
    }

    /// The id of `text`, and whether it was new; `None` past the cap.
    pub fn intern_new(&mut self, text: &str) -> Option<(u32, bool)> {
        if let Some(&id) = self.ids.get(text) {
            return Some((id, false));
        }
        if self.limit.is_some_and(|limit| self.ids.len() >= limit) {
            return None;
        }
        let id = self.ids.len() as u32 + 1;
        self.ids.insert(text.into(), id);
        Some((id, true))
    }

    pub fn intern(&mut self, text: &str) -> Option<u32> {
        self.intern_new(text).map(|(id, _)| id)
    }

    /// Every string, ordered by id.
    pub fn by_id(&self) -> Vec<(u32, &str)> {
        let mut all: Vec<(u32, &str)> = self.ids.iter().map(|(s, &id)| (id, &**s)).collect();
        all.sort_unstable();
        all
    }
}

/// Where the rank's tracks hang and how timestamps are written.
pub struct SequenceInfo<'a> {
    /// Position of the rank in the merged timeline (0-based).
    pub ordinal: u32,
    /// Ranks in the merged timeline: rank sequences are `1..=ranks`,
    /// sequences of an xplane rank's lines come after them.
    pub ranks: u32,
    pub process_name: &'a str,
}

/// The track uuids of one rank: its process track's, and its tracks' (the
/// process uuid plus the track's number). Every event carries one, so most
/// ranks get small ones (3-byte varints, below 2^21); a rank past the 127th
/// or with 16k tracks gets wide ones (from 2^32), which cannot collide with
/// them. A rank that finds more tracks than it planned for gets wide ones
/// for those, marked by the top bit.
#[derive(Clone, Copy)]
pub struct Uuids {
    pub process: u64,
    ordinal: u32,
    /// Tracks numbered below this fit under `process`.
    capacity: u32,
}

impl Uuids {
    /// Uuids for a rank that expects about `tracks` tracks.
    pub fn new(ordinal: u32, tracks: usize) -> Uuids {
        let shift = if ordinal < 127 && tracks < (1 << 14) - 1 {
            14
        } else {
            32
        };
        Uuids {
            process: (u64::from(ordinal) + 1) << shift,
            ordinal,
            capacity: ((1u64 << shift) - 1).min(u64::from(u32::MAX)) as u32,
        }
    }

    pub fn track(self, track: u32) -> u64 {
        if track < self.capacity {
            self.process | (u64::from(track) + 1)
        } else {
            1 << 63 | u64::from(self.ordinal) << 32 | u64::from(track)
        }
    }
}

/// A tid unique across the merged trace for a rank's source thread, while
/// it fits Perfetto's int32; beyond that the track is a plain named track.
pub fn synthetic_tid(ordinal: u32, thread: u32) -> Option<i32> {
    let tid = (i64::from(ordinal) + 1) * 100_000 + i64::from(thread) + 1;
    (thread < 99_999).then_some(()).and(i32::try_from(tid).ok())
}

/// The rank's pid in the merged trace.
pub fn rank_pid(ordinal: u32) -> i64 {
    i64::from(ordinal) + 1
}

/// One track below the rank's process track.
pub struct TrackSpec<'a> {
    pub uuid: u64,
    pub parent: u64,
    pub name: &'a str,
    /// A thread track (pid, tid) when set; a plain named track otherwise.
    pub thread: Option<(i64, i32)>,
    /// Position among its siblings.
    pub order: u64,
    /// Whether its own children are ordered by their `order`.
    pub ordered_children: bool,
}

/// Places slices, sorted by start (longest first), on lanes where they
/// nest strictly: the first lane where a slice fits inside what is still
/// open there, else a new lane.
#[derive(Default)]
pub struct Lanes {
    /// The ends of the slices open on each lane, innermost last.
    open: Vec<Vec<i64>>,
}

impl Lanes {
    /// The lane of a slice from `start` to `end`, and whether it is new.
    pub fn place(&mut self, start: i64, end: i64) -> (u32, bool) {
        for (lane, open_ends) in self.open.iter_mut().enumerate() {
            while open_ends.last().is_some_and(|&open_end| open_end <= start) {
                open_ends.pop();
            }
            if open_ends.last().is_none_or(|&open_end| open_end >= end) {
                open_ends.push(end);
                return (lane as u32, false);
            }
        }
        self.open.push(vec![end]);
        (self.open.len() as u32 - 1, true)
    }
}

/// Slices begun and not yet ended, so ENDs are written in time order; ends
/// at the same instant close the innermost (latest begun) slice first.
#[derive(Default)]
pub struct OpenSlices {
    heap: BinaryHeap<Reverse<(i64, Reverse<u64>, u64)>>,
    begun: u64,
}

impl OpenSlices {
    /// Notes a slice begun on `uuid` that ends at `end`.
    pub fn push(&mut self, end: i64, uuid: u64) {
        self.heap.push(Reverse((end, Reverse(self.begun), uuid)));
        self.begun += 1;
    }

    /// Writes the ENDs due by `at` (all of them for `i64::MAX`).
    pub fn close_until(&mut self, at: i64, out: &mut PacketWriter<'_>) -> io::Result<()> {
        while let Some(Reverse((end, _, uuid))) = self.heap.peek().copied() {
            if end > at {
                break;
            }
            self.heap.pop();
            out.end(end, uuid);
            out.maybe_flush()?;
        }
        Ok(())
    }
}

/// A debug annotation's value.
#[derive(Debug, Clone, Copy)]
pub enum AnnotationValue<'a> {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Double(f64),
    /// A string: interned when short and the rank's table has room.
    Text(&'a str),
}

/// Encodes debug annotations, interning their names and short strings.
pub struct Annotations {
    pub names: Interner,
    pub values: Interner,
}

impl Default for Annotations {
    fn default() -> Self {
        Annotations {
            names: Interner::default(),
            values: Interner::capped(MAX_INTERNED_VALUES),
        }
    }
}

impl Annotations {
    /// An annotation name's iid (0 when it cannot be interned). Interning
    /// ahead of writing lets the strings go in an interned-data packet before
    /// the events that use them; new ones are reported to
    /// `fresh(field, iid, text)`.
    pub fn key_iid(&mut self, key: &str, fresh: &mut impl FnMut(u32, u32, &str)) -> u32 {
        match self.names.intern_new(key) {
            Some((iid, new)) => {
                if new {
                    fresh(interned::DEBUG_ANNOTATION_NAMES, iid, key);
                }
                iid
            }
            None => 0,
        }
    }

    /// A short string value's iid; `None` for a long one or when the table
    /// is full (the value is then written inline).
    pub fn text_iid(&mut self, text: &str, fresh: &mut impl FnMut(u32, u32, &str)) -> Option<u32> {
        if text.len() > MAX_INTERNED_VALUE_LEN {
            return None;
        }
        let (iid, new) = self.values.intern_new(text)?;
        if new {
            fresh(interned::DEBUG_ANNOTATION_STRING_VALUES, iid, text);
        }
        Some(iid)
    }

    /// Appends a TrackEvent `debug_annotations` field to `out`. New
    /// interned strings are reported to `fresh(field, iid, text)`.
    pub fn put(
        &mut self,
        out: &mut Vec<u8>,
        key: &str,
        value: AnnotationValue<'_>,
        mut fresh: impl FnMut(u32, u32, &str),
    ) {
        let key_iid = self.key_iid(key, &mut fresh);
        let text_iid = match value {
            AnnotationValue::Text(text) => self.text_iid(text, &mut fresh),
            _ => None,
        };
        self.put_interned(out, key_iid, value, text_iid);
    }

    /// Appends an annotation whose name (and, for a string, value) was
    /// interned already: `text_iid` stands for a string value when set.
    pub fn put_interned(
        &self,
        out: &mut Vec<u8>,
        key_iid: u32,
        value: AnnotationValue<'_>,
        text_iid: Option<u32>,
    ) {
        // Sized first and written straight into `out`: this runs for every
        // stat of every event.
        let value_len = match (value, text_iid) {
            (AnnotationValue::Bool(b), _) => {
                proto::varint_field_len(annotation::BOOL_VALUE, u64::from(b))
            }
            (AnnotationValue::Int(i), _) => {
                proto::varint_field_len(annotation::INT_VALUE, i as u64)
            }
            (AnnotationValue::Uint(u), _) => proto::varint_field_len(annotation::UINT_VALUE, u),
            (AnnotationValue::Double(_), _) => proto::key_len(annotation::DOUBLE_VALUE) + 8,
            (AnnotationValue::Text(_), Some(iid)) => {
                proto::varint_field_len(annotation::STRING_VALUE_IID, u64::from(iid))
            }
            (AnnotationValue::Text(text), None) => {
                proto::len_field_len(annotation::STRING_VALUE, text.len())
            }
        };
        let body_len =
            proto::varint_field_len(annotation::NAME_IID, u64::from(key_iid)) + value_len;
        out.reserve(body_len + 8);
        proto::put_len_header(out, track_event::DEBUG_ANNOTATIONS, body_len);
        proto::put_varint_field(out, annotation::NAME_IID, u64::from(key_iid));
        match (value, text_iid) {
            (AnnotationValue::Bool(b), _) => {
                proto::put_varint_field(out, annotation::BOOL_VALUE, u64::from(b))
            }
            (AnnotationValue::Int(i), _) => {
                proto::put_varint_field(out, annotation::INT_VALUE, i as u64)
            }
            (AnnotationValue::Uint(u), _) => {
                proto::put_varint_field(out, annotation::UINT_VALUE, u)
            }
            (AnnotationValue::Double(d), _) => {
                proto::put_fixed64_field(out, annotation::DOUBLE_VALUE, d.to_bits())
            }
            (AnnotationValue::Text(_), Some(iid)) => {
                proto::put_varint_field(out, annotation::STRING_VALUE_IID, u64::from(iid))
            }
            (AnnotationValue::Text(text), None) => {
                proto::put_bytes_field(out, annotation::STRING_VALUE, text.as_bytes())
            }
        }
    }
}

/// Buffers packets and hands them to the sink in chunks.
pub struct PacketWriter<'s> {
    pub buf: Vec<u8>,
    sink: &'s dyn ChunkSink,
    body: Vec<u8>,
    scratch: Vec<u8>,
    sequence: u64,
    /// The encoded length of the sequence id and flags every event packet has.
    sequence_fields_len: usize,
    /// Whether the packet that clears the sequence's state was written.
    started: bool,
    /// The timestamp of the sequence's last event packet on its delta clock.
    last_timestamp: u64,
}

impl<'s> PacketWriter<'s> {
    /// A writer of packet sequence `ordinal + 1` into `sink`, reusing `buf`.
    pub fn new(buf: Vec<u8>, sink: &'s dyn ChunkSink, info: &SequenceInfo<'_>) -> Self {
        Self::with_sequence(buf, sink, u64::from(info.ordinal) + 1)
    }

    /// A writer of packet sequence `sequence` (an xplane line's).
    pub fn with_sequence(mut buf: Vec<u8>, sink: &'s dyn ChunkSink, sequence: u64) -> Self {
        buf.reserve(CHUNK + (64 << 10));
        let sequence_fields_len =
            proto::varint_field_len(packet::TRUSTED_PACKET_SEQUENCE_ID, sequence)
                + proto::varint_field_len(
                    packet::SEQUENCE_FLAGS,
                    packet::SEQ_NEEDS_INCREMENTAL_STATE,
                );
        PacketWriter {
            buf,
            sink,
            body: Vec::new(),
            scratch: Vec::new(),
            sequence,
            sequence_fields_len,
            started: false,
            last_timestamp: 0,
        }
    }

    /// Writes one packet whose body `build` appends (given a scratch buffer
    /// for nested messages and the sequence id).
    pub fn packet(
        &mut self,
        build: impl FnOnce(&mut Vec<u8>, &mut Vec<u8>, u64),
    ) -> io::Result<()> {
        self.body.clear();
        build(&mut self.body, &mut self.scratch, self.sequence);
        proto::put_bytes_field(&mut self.buf, packet::TRACE_PACKET, &self.body);
        self.maybe_flush()
    }

    /// Writes `entries` (`(InternedData field, iid, text)`) as interned
    /// data. The sequence's first call writes at least one packet, which
    /// clears the sequence's incremental state; later ones add to it.
    pub fn interned<'t>(
        &mut self,
        entries: impl IntoIterator<Item = (u32, u32, &'t str)>,
    ) -> io::Result<()> {
        let mut entries = entries.into_iter().peekable();
        let mut pending: Vec<(u32, u32, &str)> = Vec::new();
        loop {
            pending.clear();
            pending.extend(entries.by_ref().take(INTERNED_PER_PACKET));
            let first = !self.started;
            if pending.is_empty() && !first {
                return Ok(());
            }
            self.started = true;
            self.packet(|buf, scratch, sequence| {
                proto::put_varint_field(buf, packet::TRUSTED_PACKET_SEQUENCE_ID, sequence);
                let flags = if first {
                    packet::SEQ_INCREMENTAL_STATE_CLEARED | packet::SEQ_NEEDS_INCREMENTAL_STATE
                } else {
                    packet::SEQ_NEEDS_INCREMENTAL_STATE
                };
                proto::put_varint_field(buf, packet::SEQUENCE_FLAGS, flags);
                if first {
                    proto::put_varint_field(buf, packet::FIRST_PACKET_ON_SEQUENCE, 1);
                    proto::put_message(buf, scratch, packet::TRACE_PACKET_DEFAULTS, |defaults| {
                        proto::put_varint_field(
                            defaults,
                            clock::DEFAULTS_TIMESTAMP_CLOCK_ID,
                            clock::SEQUENCE_DELTA,
                        );
                    });
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
            if first {
                self.delta_clock()?;
            }
            if entries.peek().is_none() {
                return Ok(());
            }
        }
    }

    /// Defines the sequence's delta clock, which its event packets are
    /// timestamped in (the sequence's defaults name it): each timestamp is
    /// the time since the previous one, starting from the merged clock's 0.
    /// A slice's two packets then spend 2-4 bytes on time instead of 10:
    /// a `.pftrace` a fifth to a quarter smaller.
    fn delta_clock(&mut self) -> io::Result<()> {
        self.packet(|buf, scratch, sequence| {
            proto::put_varint_field(buf, packet::TRUSTED_PACKET_SEQUENCE_ID, sequence);
            proto::put_message(buf, scratch, packet::CLOCK_SNAPSHOT, |snapshot| {
                for (id, incremental) in [(clock::BOOTTIME, false), (clock::SEQUENCE_DELTA, true)] {
                    let mut entry = Vec::new();
                    proto::put_varint_field(&mut entry, clock::CLOCK_ID, id);
                    proto::put_varint_field(&mut entry, clock::CLOCK_TIMESTAMP, 0);
                    if incremental {
                        proto::put_varint_field(&mut entry, clock::CLOCK_IS_INCREMENTAL, 1);
                    }
                    proto::put_bytes_field(snapshot, clock::SNAPSHOT_CLOCKS, &entry);
                }
            });
        })
    }

    /// The rank's process track.
    pub fn process_descriptor(&mut self, info: &SequenceInfo<'_>, uuids: Uuids) -> io::Result<()> {
        self.packet(|buf, scratch, sequence| {
            proto::put_varint_field(buf, packet::TRUSTED_PACKET_SEQUENCE_ID, sequence);
            proto::put_message(buf, scratch, packet::TRACK_DESCRIPTOR, |d| {
                proto::put_varint_field(d, descriptor::UUID, uuids.process);
                let mut process = Vec::new();
                proto::put_varint_field(
                    &mut process,
                    descriptor::PROCESS_PID,
                    rank_pid(info.ordinal) as u64,
                );
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
        })
    }

    /// A track below the process track (a thread, a lane, a device, ...).
    pub fn track_descriptor(&mut self, track: &TrackSpec<'_>) -> io::Result<()> {
        self.packet(|buf, scratch, sequence| {
            proto::put_varint_field(buf, packet::TRUSTED_PACKET_SEQUENCE_ID, sequence);
            proto::put_message(buf, scratch, packet::TRACK_DESCRIPTOR, |d| {
                proto::put_varint_field(d, descriptor::UUID, track.uuid);
                proto::put_varint_field(d, descriptor::PARENT_UUID, track.parent);
                match track.thread {
                    Some((pid, tid)) => {
                        let mut thread = Vec::new();
                        proto::put_varint_field(&mut thread, descriptor::THREAD_PID, pid as u64);
                        proto::put_varint_field(&mut thread, descriptor::THREAD_TID, tid as u64);
                        proto::put_bytes_field(
                            &mut thread,
                            descriptor::THREAD_NAME,
                            track.name.as_bytes(),
                        );
                        proto::put_bytes_field(d, descriptor::THREAD, &thread);
                    }
                    None => proto::put_bytes_field(d, descriptor::NAME, track.name.as_bytes()),
                }
                if track.ordered_children {
                    proto::put_varint_field(
                        d,
                        descriptor::CHILD_ORDERING,
                        descriptor::CHILD_ORDERING_EXPLICIT,
                    );
                }
                proto::put_varint_field(d, descriptor::SIBLING_ORDER_RANK, track.order);
            });
        })
    }

    /// Merged-clock ns as a packet timestamp (before the epoch: 0).
    fn timestamp(ns: i64) -> u64 {
        ns.max(0) as u64
    }

    /// A SLICE_BEGIN or INSTANT, sized arithmetically; everything but the
    /// annotations is assembled on the stack and appended at once.
    pub fn begin(&mut self, kind: u64, at: i64, uuid: u64, name: u32, category: u32, args: &[u8]) {
        let ts = Self::timestamp(at);
        let mut event_len = proto::varint_field_len(track_event::TYPE, kind)
            + proto::varint_field_len(track_event::TRACK_UUID, uuid)
            + proto::varint_field_len(track_event::NAME_IID, u64::from(name))
            + args.len();
        if category != 0 {
            event_len += proto::varint_field_len(track_event::CATEGORY_IIDS, u64::from(category));
        }
        let mut head = SmallMessage::new();
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

    pub fn end(&mut self, at: i64, uuid: u64) {
        let ts = Self::timestamp(at);
        let event_len = proto::varint_field_len(track_event::TYPE, track_event::SLICE_END)
            + proto::varint_field_len(track_event::TRACK_UUID, uuid);
        let mut head = SmallMessage::new();
        self.packet_head(&mut head, ts, event_len);
        head.varint_field(track_event::TYPE, track_event::SLICE_END);
        head.varint_field(track_event::TRACK_UUID, uuid);
        head.append_to(&mut self.buf);
    }

    /// The packet's length prefix, time, sequence and flags, and the
    /// TrackEvent's field header, written straight into `head` (no copies
    /// of variable length: those are a memcpy call per packet). The time is
    /// on the sequence's delta clock when it is not earlier than the
    /// previous event packet's (writers emit in time order), else absolute
    /// on the merged clock, which leaves the delta chain as it was.
    #[inline]
    fn packet_head(&mut self, head: &mut SmallMessage, ts: u64, event_len: usize) {
        let (time, absolute) = match ts.checked_sub(self.last_timestamp) {
            Some(delta) => {
                self.last_timestamp = ts;
                (delta, false)
            }
            None => (ts, true),
        };
        let mut packet_len = proto::varint_field_len(packet::TIMESTAMP, time)
            + self.sequence_fields_len
            + proto::len_field_len(packet::TRACK_EVENT, event_len);
        if absolute {
            packet_len += proto::varint_field_len(packet::TIMESTAMP_CLOCK_ID, clock::BOOTTIME);
        }
        head.len_header(packet::TRACE_PACKET, packet_len);
        head.varint_field(packet::TIMESTAMP, time);
        if absolute {
            head.varint_field(packet::TIMESTAMP_CLOCK_ID, clock::BOOTTIME);
        }
        head.varint_field(packet::TRUSTED_PACKET_SEQUENCE_ID, self.sequence);
        head.varint_field(packet::SEQUENCE_FLAGS, packet::SEQ_NEEDS_INCREMENTAL_STATE);
        head.len_header(packet::TRACK_EVENT, event_len);
    }

    pub fn maybe_flush(&mut self) -> io::Result<()> {
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.sink.write_chunk(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
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
        // More tracks than planned: wide ones that collide with nobody's.
        let beyond = first.track(1 << 14);
        assert!(beyond >= 1 << 63);
        assert_ne!(beyond, second.track(0));
        assert_ne!(beyond, Uuids::new(1, 10).track(1 << 14));
    }

    /// Collects what a writer flushes.
    #[derive(Default)]
    struct Collected(std::sync::Mutex<Vec<u8>>);

    impl ChunkSink for Collected {
        fn write_chunk(&self, bytes: &[u8]) -> io::Result<()> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(())
        }
    }

    fn varint(bytes: &mut &[u8]) -> u64 {
        prost::encoding::decode_varint(bytes).expect("a varint")
    }

    /// Each packet's top-level varint fields (`timestamp`, `timestamp_clock_id`, ...).
    fn packet_varints(mut trace: &[u8]) -> Vec<FxHashMap<u32, u64>> {
        let mut packets = Vec::new();
        while !trace.is_empty() {
            assert_eq!(varint(&mut trace), 1 << 3 | 2);
            let len = varint(&mut trace) as usize;
            let (mut body, rest) = trace.split_at(len);
            trace = rest;
            let mut fields = FxHashMap::default();
            while !body.is_empty() {
                let key = varint(&mut body);
                match key & 7 {
                    0 => {
                        fields.insert((key >> 3) as u32, varint(&mut body));
                    }
                    2 => {
                        let len = varint(&mut body) as usize;
                        body = &body[len..];
                    }
                    wire => panic!("unexpected wire type {wire}"),
                }
            }
            packets.push(fields);
        }
        packets
    }

    #[test]
    fn event_times_are_deltas_and_a_step_back_is_written_absolutely() {
        let sink = Collected::default();
        let mut out = PacketWriter::with_sequence(Vec::new(), &sink, 3);
        out.interned([(interned::EVENT_NAMES, 1, "step")]).unwrap();
        out.begin(track_event::SLICE_BEGIN, 1_700_000_000_000, 9, 1, 0, &[]);
        out.end(1_700_000_000_500, 9);
        out.begin(track_event::INSTANT, 1_600_000_000_000, 9, 1, 0, &[]);
        out.end(1_700_000_001_000, 9);
        out.flush().unwrap();
        let packets = packet_varints(&sink.0.lock().unwrap());
        let times: Vec<_> = packets
            .iter()
            .filter_map(|p| p.get(&packet::TIMESTAMP))
            .copied()
            .collect();
        // The sequence's defaults name the delta clock, which a snapshot
        // defines before the first event.
        assert_eq!(packets.len(), 2 + 4, "state, clock snapshot, 4 events");
        assert_eq!(times, [1_700_000_000_000, 500, 1_600_000_000_000, 500]);
        let clocks: Vec<_> = packets[2..]
            .iter()
            .map(|p| p.get(&packet::TIMESTAMP_CLOCK_ID).copied())
            .collect();
        assert_eq!(clocks, [None, None, Some(clock::BOOTTIME), None]);
    }

    #[test]
    fn the_widest_slice_begin_is_written_whole() {
        let sink = Collected::default();
        let mut out = PacketWriter::with_sequence(Vec::new(), &sink, u64::from(u32::MAX));
        out.interned([]).unwrap();
        out.end(i64::MAX, 1 << 63);
        // Earlier than the last packet: absolute, with its clock named.
        out.begin(
            track_event::SLICE_BEGIN,
            i64::MAX - 1,
            1 << 63 | u64::from(u32::MAX),
            u32::MAX,
            u32::MAX,
            &[],
        );
        out.flush().unwrap();
        let packets = packet_varints(&sink.0.lock().unwrap());
        let begin = packets.last().unwrap();
        assert_eq!(begin[&packet::TIMESTAMP], i64::MAX as u64 - 1);
        assert_eq!(begin[&packet::TIMESTAMP_CLOCK_ID], clock::BOOTTIME);
        assert_eq!(
            begin[&packet::TRUSTED_PACKET_SEQUENCE_ID],
            u64::from(u32::MAX)
        );
        assert_eq!(
            begin[&packet::SEQUENCE_FLAGS],
            packet::SEQ_NEEDS_INCREMENTAL_STATE
        );
    }

    #[test]
    fn lanes_keep_slices_strictly_nested() {
        let mut lanes = Lanes::default();
        assert_eq!(lanes.place(0, 10), (0, true));
        assert_eq!(lanes.place(1, 5), (0, false), "nested");
        assert_eq!(lanes.place(6, 12), (1, true), "overlaps the parent's end");
        assert_eq!(lanes.place(10, 11), (0, false), "after the parent ended");
        assert_eq!(lanes.place(10, 11), (0, false), "an identical span nests");
    }
}
