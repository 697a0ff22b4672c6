//! A streaming XSpace encoder: each line's events are encoded as they come,
//! so memory stays at one line's encoded size (or one plane's, for
//! [`PlaneEncoder`]) even for millions of events.
//!
//! Fields go in schema order (plane id and name, lines, metadata, stats;
//! a line's header before its events) as XProf writes them, unless a
//! plane is written with [`MetadataPlacement::BeforeLines`]. A line's
//! `timestamp_ns` is relative to the session's `profile_start_time`, as in
//! the files JAX writes (see [`crate::line_start_unix_ns`]).

use std::collections::HashMap;
use std::io::{self, Write};

use prost::Message;

use rankline_protowire::{
    put_bytes_field, put_fixed64_field, put_int_field, put_len_header, put_parts_field,
    put_varint_field,
};

use crate::messages::{x_event, x_stat};
use crate::{XEventMetadata, XLine, XPlane, XStat, XStatMetadata};

/// Field numbers of the length-delimited fields written by hand.
const SPACE_PLANES: u32 = 1;
const SPACE_HOSTNAMES: u32 = 4;
const PLANE_LINES: u32 = 3;

/// A stat value to encode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StatValue<'a> {
    Int(i64),
    Uint(u64),
    Double(f64),
    Str(&'a str),
    Bytes(&'a [u8]),
    /// An XPlane `ref_value`: the name of a stat-metadata entry.
    Ref(&'a str),
}

/// A stat: its name and value.
pub type Stat<'a> = (&'a str, StatValue<'a>);

/// The names a plane's events and stats use, interned to ids as they
/// first appear.
#[derive(Debug, Clone, Default)]
pub struct PlaneMetadata {
    event_ids: HashMap<String, i64>,
    stat_ids: HashMap<String, i64>,
}

impl PlaneMetadata {
    fn intern(table: &mut HashMap<String, i64>, name: &str) -> i64 {
        if let Some(&id) = table.get(name) {
            return id;
        }
        let id = table.len() as i64 + 1;
        table.insert(name.to_string(), id);
        id
    }

    pub fn event_id(&mut self, name: &str) -> i64 {
        Self::intern(&mut self.event_ids, name)
    }

    pub fn stat_id(&mut self, name: &str) -> i64 {
        Self::intern(&mut self.stat_ids, name)
    }

    /// An XStat, its name (and a `Ref` value) interned.
    pub fn stat(&mut self, name: &str, value: StatValue<'_>) -> XStat {
        let value = match value {
            StatValue::Int(v) => x_stat::Value::Int64Value(v),
            StatValue::Uint(v) => x_stat::Value::Uint64Value(v),
            StatValue::Double(v) => x_stat::Value::DoubleValue(v),
            StatValue::Str(s) => x_stat::Value::StrValue(s.to_string()),
            StatValue::Bytes(b) => x_stat::Value::BytesValue(b.to_vec()),
            StatValue::Ref(s) => x_stat::Value::RefValue(self.stat_id(s) as u64),
        };
        XStat {
            metadata_id: self.stat_id(name),
            value: Some(value),
        }
    }

    /// The plane fields after its lines: `event_metadata`, `stat_metadata`
    /// and the plane's own `stats`.
    pub fn encode(&self, plane_stats: Vec<XStat>) -> Vec<u8> {
        XPlane {
            event_metadata: self
                .event_ids
                .iter()
                .map(|(name, &id)| {
                    let metadata = XEventMetadata {
                        id,
                        name: name.clone(),
                        ..Default::default()
                    };
                    (id, metadata)
                })
                .collect(),
            stat_metadata: self
                .stat_ids
                .iter()
                .map(|(name, &id)| {
                    let metadata = XStatMetadata {
                        id,
                        name: name.clone(),
                        description: String::new(),
                    };
                    (id, metadata)
                })
                .collect(),
            stats: plane_stats,
            ..Default::default()
        }
        .encode_to_vec()
    }
}

/// A plane's `id` and `name` fields.
pub fn plane_head(id: i64, name: &str) -> Vec<u8> {
    XPlane {
        id,
        name: name.to_string(),
        ..Default::default()
    }
    .encode_to_vec()
}

/// One line being built; spans must come in start order.
pub struct LineEncoder<'m> {
    metadata: &'m mut PlaneMetadata,
    id: i64,
    name: String,
    base_unix_ns: i64,
    events: Vec<u8>,
    first_ns: Option<i64>,
    last_end_ns: i64,
    /// The event and stat being encoded.
    event: Vec<u8>,
    stat: Vec<u8>,
}

impl<'m> LineEncoder<'m> {
    /// A line whose events use `metadata`'s names; `base_unix_ns` is the
    /// session's profile start.
    pub fn new(metadata: &'m mut PlaneMetadata, id: i64, name: &str, base_unix_ns: i64) -> Self {
        LineEncoder {
            metadata,
            id,
            name: name.to_string(),
            base_unix_ns,
            events: Vec::new(),
            first_ns: None,
            last_end_ns: 0,
            event: Vec::new(),
            stat: Vec::new(),
        }
    }

    /// A span from `start_ns` to `end_ns` (epoch ns).
    pub fn event<'s>(
        &mut self,
        name: &str,
        start_ns: i64,
        end_ns: i64,
        stats: impl IntoIterator<Item = Stat<'s>>,
    ) {
        let first = *self.first_ns.get_or_insert(start_ns);
        debug_assert!(
            start_ns >= first,
            "events of a line must come in start order"
        );
        self.last_end_ns = self.last_end_ns.max(end_ns);
        self.push(
            name,
            x_event::Data::OffsetPs((start_ns - first).max(0) * 1000),
            (end_ns - start_ns).max(0) * 1000,
            stats,
        );
    }

    /// An aggregate standing for `occurrences` events of `duration_ps` in
    /// all (XProf's `num_occurrences`): not a span.
    pub fn aggregate<'s>(
        &mut self,
        name: &str,
        occurrences: i64,
        duration_ps: i64,
        stats: impl IntoIterator<Item = Stat<'s>>,
    ) {
        self.push(
            name,
            x_event::Data::NumOccurrences(occurrences),
            duration_ps,
            stats,
        );
    }

    /// Encodes one XEvent by hand (prost would allocate its stats): fields
    /// in number order, zero scalars left out, as prost writes them.
    fn push<'s>(
        &mut self,
        name: &str,
        data: x_event::Data,
        duration_ps: i64,
        stats: impl IntoIterator<Item = Stat<'s>>,
    ) {
        let event = &mut self.event;
        event.clear();
        put_int_field(event, 1, self.metadata.event_id(name));
        match data {
            x_event::Data::OffsetPs(offset) => put_varint_field(event, 2, offset as u64),
            x_event::Data::NumOccurrences(count) => put_varint_field(event, 5, count as u64),
        }
        put_int_field(event, 3, duration_ps);
        for (key, value) in stats {
            let stat = &mut self.stat;
            stat.clear();
            put_int_field(stat, 1, self.metadata.stat_id(key));
            match value {
                StatValue::Double(v) => {
                    put_fixed64_field(stat, 2, v.to_bits());
                }
                StatValue::Uint(v) => put_varint_field(stat, 3, v),
                StatValue::Int(v) => put_varint_field(stat, 4, v as u64),
                StatValue::Str(text) => put_bytes_field(stat, 5, text.as_bytes()),
                StatValue::Bytes(raw) => put_bytes_field(stat, 6, raw),
                StatValue::Ref(text) => {
                    put_varint_field(stat, 7, self.metadata.stat_id(text) as u64)
                }
            }
            put_bytes_field(event, 4, stat);
        }
        put_bytes_field(&mut self.events, 4, event);
    }

    /// The line as an `XPlane.lines` field (key, length, XLine), or `None`
    /// for a line without events (XProf drops those).
    pub fn finish(self) -> Option<Vec<u8>> {
        if self.events.is_empty() {
            return None;
        }
        let first = self.first_ns.unwrap_or(self.base_unix_ns);
        let head = XLine {
            id: self.id,
            display_name: self.name.clone(),
            name: self.name,
            timestamp_ns: first - self.base_unix_ns,
            duration_ps: (self.last_end_ns - first).max(0) * 1000,
            ..Default::default()
        }
        .encode_to_vec();
        let mut out = Vec::with_capacity(head.len() + self.events.len() + 12);
        put_parts_field(&mut out, PLANE_LINES, &[&head, &self.events]);
        Some(out)
    }
}

/// One plane built in memory (for small planes).
pub struct PlaneEncoder {
    id: i64,
    name: String,
    metadata: PlaneMetadata,
    lines: Vec<u8>,
    stats: Vec<XStat>,
}

impl PlaneEncoder {
    pub fn new(id: i64, name: &str) -> PlaneEncoder {
        PlaneEncoder {
            id,
            name: name.to_string(),
            metadata: PlaneMetadata::default(),
            lines: Vec::new(),
            stats: Vec::new(),
        }
    }

    /// A plane-level stat.
    pub fn plane_stat(&mut self, name: &str, value: StatValue<'_>) {
        let stat = self.metadata.stat(name, value);
        self.stats.push(stat);
    }

    /// Starts a line; add it with [`PlaneEncoder::add_line`] when done.
    pub fn line(&mut self, id: i64, name: &str, base_unix_ns: i64) -> LineEncoder<'_> {
        LineEncoder::new(&mut self.metadata, id, name, base_unix_ns)
    }

    /// Appends a finished line.
    pub fn add_line(&mut self, line: Option<Vec<u8>>) {
        if let Some(line) = line {
            self.lines.extend_from_slice(&line);
        }
    }

    /// Appends the finished plane to an XSpace being built.
    pub fn finish_into(self, space: &mut Vec<u8>) {
        let head = plane_head(self.id, &self.name);
        let tail = self.metadata.encode(self.stats);
        put_parts_field(space, SPACE_PLANES, &[&head, &self.lines, &tail]);
    }
}

/// Appends `XSpace.hostnames`.
pub fn put_hostname(space: &mut Vec<u8>, hostname: &str) {
    put_parts_field(space, SPACE_HOSTNAMES, &[hostname.as_bytes()]);
}

/// Where a streamed plane puts its metadata.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MetadataPlacement {
    /// After the lines, in field order, as XProf writes it.
    #[default]
    AfterLines,
    /// Before the lines, as a reader must also accept.
    BeforeLines,
}

/// What [`write_plane`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WrittenPlane {
    /// The whole `XSpace.planes` field.
    pub bytes: u64,
    /// The largest `XLine` message (without its key and length).
    pub largest_line_bytes: u64,
    /// Lines with events.
    pub lines: u64,
}

/// Streams one plane to `out` holding one line in memory at a time.
///
/// A length-delimited plane needs its length first, so `line(i, metadata)`
/// is called twice for each of the `lines` lines: once to learn the names
/// and sizes, once to write. It encodes line `i` (with a [`LineEncoder`] on
/// `metadata`) and must give the same bytes both times.
pub fn write_plane<W: Write>(
    out: &mut W,
    id: i64,
    name: &str,
    plane_stats: &[Stat<'_>],
    lines: usize,
    placement: MetadataPlacement,
    mut line: impl FnMut(usize, &mut PlaneMetadata) -> Option<Vec<u8>>,
) -> io::Result<WrittenPlane> {
    let mut metadata = PlaneMetadata::default();
    let mut written = WrittenPlane::default();
    let mut lines_len = 0u64;
    for i in 0..lines {
        if let Some(bytes) = line(i, &mut metadata) {
            lines_len += bytes.len() as u64;
            written.largest_line_bytes = written.largest_line_bytes.max(xline_len(&bytes));
            written.lines += 1;
        }
    }
    let stats = plane_stats
        .iter()
        .map(|&(key, value)| metadata.stat(key, value))
        .collect();
    let head = plane_head(id, name);
    let tail = metadata.encode(stats);
    let payload = head.len() as u64 + lines_len + tail.len() as u64;
    let mut header = Vec::new();
    put_len_header(&mut header, SPACE_PLANES, payload as usize);
    out.write_all(&header)?;
    out.write_all(&head)?;
    if placement == MetadataPlacement::BeforeLines {
        out.write_all(&tail)?;
    }
    for i in 0..lines {
        if let Some(bytes) = line(i, &mut metadata) {
            out.write_all(&bytes)?;
        }
    }
    if placement == MetadataPlacement::AfterLines {
        out.write_all(&tail)?;
    }
    written.bytes = header.len() as u64 + payload;
    Ok(written)
}

/// The XLine message's size inside an `XPlane.lines` field.
fn xline_len(field: &[u8]) -> u64 {
    let mut len = 0u64;
    let mut header = 1;
    for (i, &byte) in field[1..].iter().enumerate() {
        len |= u64::from(byte & 0x7f) << (7 * i);
        header += 1;
        if byte < 0x80 {
            break;
        }
    }
    debug_assert_eq!(header as u64 + len, field.len() as u64);
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_encoded_events_decode_as_prost_messages() {
        let mut metadata = PlaneMetadata::default();
        let mut line = LineEncoder::new(&mut metadata, 7, "XLA Ops", 1_000);
        line.event(
            "fusion",
            1_500,
            1_750,
            [
                ("hlo_op", StatValue::Ref("fusion")),
                ("run_id", StatValue::Int(-3)),
                ("flops", StatValue::Uint(9)),
                ("ratio", StatValue::Double(0.5)),
                ("long_name", StatValue::Str("%fusion = f32[] fusion()")),
                ("blob", StatValue::Bytes(&[1, 2])),
            ],
        );
        line.aggregate("copy", 4, 99, []);
        let field = line.finish().unwrap();
        let decoded = XPlane::decode(&field[..]).unwrap();
        let line = &decoded.lines[0];
        assert_eq!(
            (line.id, line.timestamp_ns, line.duration_ps),
            (7, 500, 250_000)
        );
        let [span, aggregate] = &line.events[..] else {
            panic!("two events: {:?}", line.events)
        };
        assert_eq!(span.data, Some(x_event::Data::OffsetPs(0)));
        assert_eq!(span.duration_ps, 250_000);
        let values: Vec<_> = span
            .stats
            .iter()
            .map(|s| s.value.clone().unwrap())
            .collect();
        assert_eq!(
            values,
            [
                x_stat::Value::RefValue(metadata.stat_id("fusion") as u64),
                x_stat::Value::Int64Value(-3),
                x_stat::Value::Uint64Value(9),
                x_stat::Value::DoubleValue(0.5),
                x_stat::Value::StrValue("%fusion = f32[] fusion()".into()),
                x_stat::Value::BytesValue(vec![1, 2]),
            ]
        );
        assert_eq!(span.stats[1].metadata_id, metadata.stat_id("run_id"));
        assert_eq!(aggregate.data, Some(x_event::Data::NumOccurrences(4)));
        assert_eq!(aggregate.metadata_id, metadata.event_id("copy"));
    }
}
