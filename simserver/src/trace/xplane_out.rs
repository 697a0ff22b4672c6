//! Streaming XSpace encoder: each line's events are encoded as they come
//! (prost messages from `rankline_xplane`), planes are assembled from those
//! bytes, so memory stays at the encoded size even for millions of events.
//!
//! Fields go in schema order (plane id, name, lines, metadata, stats; line
//! header before its events) as XProf writes them, so streaming readers see
//! names before contents. Line `timestamp_ns` is relative to the session's
//! `profile_start_time`, as in the real files.

use std::collections::HashMap;

use prost::Message;
use rankline_xplane::messages::{x_event, x_stat};
use rankline_xplane::{XEvent, XEventMetadata, XLine, XPlane, XStat, XStatMetadata};

use super::{EventSink, Stat, StatValue};

/// Protobuf keys of the length-delimited fields written by hand.
const SPACE_PLANES_KEY: u8 = (1 << 3) | 2;
const PLANE_LINES_KEY: u8 = (3 << 3) | 2;
const LINE_EVENTS_KEY: u8 = (4 << 3) | 2;
const SPACE_HOSTNAMES_KEY: u8 = (4 << 3) | 2;

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_len_field(out: &mut Vec<u8>, key: u8, parts: &[&[u8]]) {
    out.push(key);
    put_varint(out, parts.iter().map(|p| p.len() as u64).sum());
    for part in parts {
        out.extend_from_slice(part);
    }
}

/// One XPlane being built: interned metadata, encoded lines, plane stats.
pub(crate) struct PlaneEncoder {
    id: i64,
    name: String,
    event_ids: HashMap<String, i64>,
    stat_ids: HashMap<String, i64>,
    lines: Vec<u8>,
    stats: Vec<XStat>,
}

impl PlaneEncoder {
    pub(crate) fn new(id: i64, name: &str) -> PlaneEncoder {
        PlaneEncoder {
            id,
            name: name.to_string(),
            event_ids: HashMap::new(),
            stat_ids: HashMap::new(),
            lines: Vec::new(),
            stats: Vec::new(),
        }
    }

    fn intern(table: &mut HashMap<String, i64>, name: &str) -> i64 {
        if let Some(&id) = table.get(name) {
            return id;
        }
        let id = table.len() as i64 + 1;
        table.insert(name.to_string(), id);
        id
    }

    fn stat_id(&mut self, name: &str) -> i64 {
        Self::intern(&mut self.stat_ids, name)
    }

    fn stat(&mut self, name: &str, value: StatValue<'_>) -> XStat {
        let value = match value {
            StatValue::Int(v) => x_stat::Value::Int64Value(v),
            StatValue::Ref(s) => x_stat::Value::RefValue(self.stat_id(s) as u64),
        };
        XStat {
            metadata_id: self.stat_id(name),
            value: Some(value),
        }
    }

    /// A plane-level stat with a value of any XStat type.
    pub(crate) fn plane_stat(&mut self, name: &str, value: x_stat::Value) {
        let metadata_id = self.stat_id(name);
        self.stats.push(XStat {
            metadata_id,
            value: Some(value),
        });
    }

    /// Starts a line; `base_unix_ns` is the session's profile start.
    pub(crate) fn line(&mut self, id: i64, name: &str, base_unix_ns: i64) -> LineEncoder<'_> {
        LineEncoder {
            plane: self,
            id,
            name: name.to_string(),
            base_unix_ns,
            events: Vec::new(),
            first_ns: None,
            last_end_ns: 0,
        }
    }

    /// Appends the finished plane to an XSpace being built.
    pub(crate) fn finish_into(self, space: &mut Vec<u8>) {
        let head = XPlane {
            id: self.id,
            name: self.name,
            ..Default::default()
        }
        .encode_to_vec();
        let tail = XPlane {
            event_metadata: self
                .event_ids
                .into_iter()
                .map(|(name, id)| {
                    let metadata = XEventMetadata {
                        id,
                        name,
                        ..Default::default()
                    };
                    (id, metadata)
                })
                .collect(),
            stat_metadata: self
                .stat_ids
                .into_iter()
                .map(|(name, id)| {
                    let metadata = XStatMetadata {
                        id,
                        name,
                        description: String::new(),
                    };
                    (id, metadata)
                })
                .collect(),
            stats: self.stats,
            ..Default::default()
        }
        .encode_to_vec();
        put_len_field(space, SPACE_PLANES_KEY, &[&head, &self.lines, &tail]);
    }
}

/// Appends `XSpace.hostnames`.
pub(crate) fn put_hostname(space: &mut Vec<u8>, hostname: &str) {
    put_len_field(space, SPACE_HOSTNAMES_KEY, &[hostname.as_bytes()]);
}

/// One line being built; events must come in start order.
pub(crate) struct LineEncoder<'p> {
    plane: &'p mut PlaneEncoder,
    id: i64,
    name: String,
    base_unix_ns: i64,
    events: Vec<u8>,
    first_ns: Option<i64>,
    last_end_ns: i64,
}

impl EventSink for LineEncoder<'_> {
    fn event(&mut self, name: &str, start_ns: i64, end_ns: i64, stats: &[Stat<'_>]) {
        let first = *self.first_ns.get_or_insert(start_ns);
        debug_assert!(
            start_ns >= first,
            "events of a line must come in start order"
        );
        self.last_end_ns = self.last_end_ns.max(end_ns);
        let metadata_id = PlaneEncoder::intern(&mut self.plane.event_ids, name);
        let stats = stats
            .iter()
            .map(|&(key, value)| self.plane.stat(key, value))
            .collect();
        let event = XEvent {
            metadata_id,
            data: Some(x_event::Data::OffsetPs((start_ns - first).max(0) * 1000)),
            duration_ps: (end_ns - start_ns).max(0) * 1000,
            stats,
        };
        self.events.push(LINE_EVENTS_KEY);
        let _ = event.encode_length_delimited(&mut self.events);
    }
}

impl LineEncoder<'_> {
    /// Adds the line to its plane (a line without events is dropped, as XProf does).
    pub(crate) fn finish(self) {
        let Some(first) = self.first_ns else {
            return;
        };
        let head = XLine {
            id: self.id,
            display_name: self.name.clone(),
            name: self.name,
            timestamp_ns: first - self.base_unix_ns,
            duration_ps: (self.last_end_ns - first) * 1000,
            ..Default::default()
        }
        .encode_to_vec();
        put_len_field(
            &mut self.plane.lines,
            PLANE_LINES_KEY,
            &[&head, &self.events],
        );
    }
}
