//! Reading an XSpace plane by plane and line by line, never all at once.
//!
//! Writers emit an XPlane's fields in field-number order, so its `lines`
//! (3) come before the `event_metadata` (4) and `stat_metadata` (5) that
//! name their events. [`XSpaceFile::open`] therefore makes one pass over
//! the file first, seeking past every line and recording where it is (and
//! where each plane's metadata is, wherever it sits in the plane): the
//! [`SpaceIndex`]. A reader then decodes one plane's metadata
//! ([`XSpaceFile::read_metadata`]) and loads one line at a time
//! ([`XSpaceFile::read_line`]), whose events it walks in memory without
//! copying them ([`LineView`], [`EventView`], [`StatView`]). Memory is one
//! line's encoded size plus the current plane's metadata.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{BufReader, Read, Seek, SeekFrom};

use rankline_protowire::{put_bytes_field, put_varint_field};

use crate::time_base::{profile_times_from, ProfileTimes};
use crate::wire::{FieldReader, SliceReader, SliceValue, WireValue};
use crate::{XplaneError, TASK_ENVIRONMENT_PLANE};

/// Read buffer of the file.
const FILE_BUFFER: usize = 256 << 10;
/// Metadata-level stat values longer than this are kept as a note of their
/// size: they are copied into every event of that metadata, and some (HLO
/// protos) are tens of kilobytes.
const MAX_METADATA_STAT_BYTES: usize = 4096;
/// Limits far past any real profile, so a damaged or hostile file fails
/// with a clear error instead of growing the index or the metadata without
/// bound (each costs memory for a few bytes of input).
const MAX_PLANES: usize = 1 << 16;
const MAX_LINES: usize = 1 << 20;
const MAX_METADATA_ENTRIES: usize = 1 << 22;
/// Names longer than this are not read (a placeholder says how long).
const MAX_NAME_BYTES: u64 = 64 << 10;
/// A stat name or metadata stat longer than this is skipped unread.
const MAX_METADATA_ENTRY_BYTES: u64 = 16 << 20;

fn within_limit(count: usize, limit: usize, what: &str) -> Result<(), XplaneError> {
    if count > limit {
        return Err(XplaneError::Malformed(format!(
            "more than {limit} {what}: more than any profiler writes; the file is damaged"
        )));
    }
    Ok(())
}

/// `len` bytes at byte `start` of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub len: u64,
}

impl ByteRange {
    fn end(self) -> u64 {
        self.start + self.len
    }
}

/// Where one plane's parts are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaneIndex {
    pub id: i64,
    pub name: String,
    /// Each `XLine` message, in file order.
    pub lines: Vec<ByteRange>,
    /// Runs of consecutive metadata fields (`event_metadata`,
    /// `stat_metadata`, plane `stats`), in file order.
    metadata: Vec<ByteRange>,
}

/// Every plane of a file, and its host names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpaceIndex {
    pub planes: Vec<PlaneIndex>,
    pub hostnames: Vec<String>,
}

/// An event metadata entry: the event's name and the stats every event of
/// it shares.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventMetadata {
    pub name: String,
    pub display_name: String,
    /// The stats, as an encoded message whose field 5 holds each one.
    stats: Vec<u8>,
}

/// `display_name` when it is set, else `name`: what XProf shows.
fn shown_name<'s>(name: &'s str, display_name: &'s str) -> &'s str {
    if display_name.is_empty() {
        name
    } else {
        display_name
    }
}

impl EventMetadata {
    /// What a timeline should call the event: the display name when there
    /// is one (XProf's trace viewer does the same), else the name.
    pub fn shown_name(&self) -> &str {
        shown_name(&self.name, &self.display_name)
    }

    /// The metadata-level stats.
    pub fn stats(&self) -> Stats<'_> {
        Stats::new(&self.stats, 0, METADATA_STATS_FIELD)
    }
}

/// One plane's names and plane-level stats.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlaneMetadata {
    pub events: HashMap<i64, EventMetadata>,
    pub stat_names: HashMap<i64, String>,
    /// The plane's own stats (`profile_start_time`, `process_id`, ...).
    plane_stats: Vec<u8>,
}

impl PlaneMetadata {
    /// The plane-level stats.
    pub fn stats(&self) -> Stats<'_> {
        Stats::new(&self.plane_stats, 0, PLANE_STATS_FIELD)
    }

    /// A stat's name (`None` for an id the plane does not define).
    pub fn stat_name(&self, id: i64) -> Option<&str> {
        self.stat_names.get(&id).map(String::as_str)
    }
}

/// XPlane fields.
const PLANE_ID: u32 = 1;
const PLANE_NAME: u32 = 2;
const PLANE_LINES: u32 = 3;
const PLANE_EVENT_METADATA: u32 = 4;
const PLANE_STAT_METADATA: u32 = 5;
const PLANE_STATS_FIELD: u32 = 6;
/// XEventMetadata's `stats`.
const METADATA_STATS_FIELD: u32 = 5;
/// XEvent's `stats`.
const EVENT_STATS_FIELD: u32 = 4;

/// An `.xplane.pb` opened for reading plane by plane.
pub struct XSpaceFile<R> {
    reader: FieldReader<BufReader<R>>,
    len: u64,
    /// Bytes read (not skipped) so far.
    bytes_read: u64,
}

impl<R: Read + Seek> XSpaceFile<R> {
    /// Indexes the file: one pass that reads plane names and headers and
    /// seeks past everything else.
    pub fn open(mut inner: R) -> Result<(Self, SpaceIndex), XplaneError> {
        let len = inner.seek(SeekFrom::End(0))?;
        inner.seek(SeekFrom::Start(0))?;
        let mut file = XSpaceFile {
            reader: FieldReader::new(BufReader::with_capacity(FILE_BUFFER, inner)),
            len,
            bytes_read: 0,
        };
        let index = file.index()?;
        Ok((file, index))
    }

    /// Bytes read from the file so far (skipped ones not counted).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    fn index(&mut self) -> Result<SpaceIndex, XplaneError> {
        let mut index = SpaceIndex::default();
        let mut lines = 0;
        while self.reader.position() < self.len {
            let Some(field) = self.reader.next_field()? else {
                break;
            };
            let WireValue::Len(len) = field.value else {
                continue;
            };
            let range = self.payload(len)?;
            match field.number {
                1 => {
                    let plane = self.index_plane(range)?;
                    lines += plane.lines.len();
                    index.planes.push(plane);
                    within_limit(index.planes.len(), MAX_PLANES, "planes")?;
                    within_limit(lines, MAX_LINES, "lines")?;
                }
                4 => {
                    index.hostnames.push(self.read_string(len)?);
                    within_limit(index.hostnames.len(), MAX_PLANES, "hostnames")?;
                }
                _ => self.reader.seek_past(len)?,
            }
        }
        Ok(index)
    }

    /// The payload of a length-delimited field that starts here; an error
    /// when the file ends before it does.
    fn payload(&self, len: u64) -> Result<ByteRange, XplaneError> {
        let start = self.reader.position();
        let range = ByteRange { start, len };
        match start.checked_add(len) {
            Some(end) if end <= self.len => Ok(range),
            _ => Err(XplaneError::Malformed(format!(
                "a field of {len} bytes at byte {start} runs past the end of the file \
                 ({} bytes): the file is truncated",
                self.len
            ))),
        }
    }

    /// A payload inside `within`: its fields may not run past it either.
    fn payload_within(&self, len: u64, within: ByteRange) -> Result<ByteRange, XplaneError> {
        let range = self.payload(len)?;
        if range.end() > within.end() {
            return Err(XplaneError::Malformed(format!(
                "a field of {len} bytes at byte {} runs past the end of its message",
                range.start
            )));
        }
        Ok(range)
    }

    fn index_plane(&mut self, plane: ByteRange) -> Result<PlaneIndex, XplaneError> {
        let mut index = PlaneIndex {
            id: 0,
            name: String::new(),
            lines: Vec::new(),
            metadata: Vec::new(),
        };
        let mut run: Option<ByteRange> = None;
        while self.reader.position() < plane.end() {
            let field_start = self.reader.position();
            let field = self.next_field_within(plane)?;
            let is_metadata = matches!(
                field.number,
                PLANE_EVENT_METADATA | PLANE_STAT_METADATA | PLANE_STATS_FIELD
            );
            if !is_metadata {
                index.metadata.extend(run.take());
            }
            match (field.number, field.value) {
                (PLANE_ID, WireValue::Varint(id)) => index.id = id as i64,
                (PLANE_NAME, WireValue::Len(len)) => {
                    self.payload_within(len, plane)?;
                    index.name = self.read_string(len)?;
                }
                (PLANE_LINES, WireValue::Len(len)) => {
                    index.lines.push(self.payload_within(len, plane)?);
                    self.reader.seek_past(len)?;
                }
                (_, WireValue::Len(len)) => {
                    self.payload_within(len, plane)?;
                    self.reader.seek_past(len)?;
                }
                _ => {}
            }
            if is_metadata {
                let end = self.reader.position();
                let run = run.get_or_insert(ByteRange {
                    start: field_start,
                    len: 0,
                });
                run.len = end - run.start;
            }
        }
        index.metadata.extend(run);
        Ok(index)
    }

    /// The next field, which must lie inside `within`.
    fn next_field_within(&mut self, within: ByteRange) -> Result<crate::wire::Field, XplaneError> {
        let at = self.reader.position();
        let field = self.reader.next_field()?.ok_or_else(|| {
            XplaneError::Malformed(format!(
                "the file ends at byte {at}, inside a message that should end at byte {}: \
                 the file is truncated",
                within.end()
            ))
        })?;
        if self.reader.position() > within.end() {
            return Err(XplaneError::Malformed(format!(
                "a field at byte {at} runs past the end of its message"
            )));
        }
        Ok(field)
    }

    fn read_string(&mut self, len: u64) -> Result<String, XplaneError> {
        if len > MAX_NAME_BYTES {
            self.reader.seek_past(len)?;
            return Ok(format!("<a name of {len} bytes>"));
        }
        let bytes = self.reader.read_bytes(len)?;
        Ok(match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// Decodes a plane's metadata: event and stat names, event-metadata
    /// stats (long values cut to a note of their size) and plane stats.
    /// Byte-heavy parts (an event metadata's `metadata` blob) are skipped.
    pub fn read_metadata(&mut self, plane: &PlaneIndex) -> Result<PlaneMetadata, XplaneError> {
        let mut metadata = PlaneMetadata::default();
        let mut entries = 0;
        for &run in &plane.metadata {
            self.reader.seek_to(run.start)?;
            while self.reader.position() < run.end() {
                let field = self.next_field_within(run)?;
                let WireValue::Len(len) = field.value else {
                    continue;
                };
                let entry = self.payload_within(len, run)?;
                entries += 1;
                within_limit(entries, MAX_METADATA_ENTRIES, "metadata entries in a plane")?;
                if len > MAX_METADATA_ENTRY_BYTES && field.number != PLANE_EVENT_METADATA {
                    // A stat name or plane stat this big is damage.
                    self.reader.seek_past(len)?;
                    continue;
                }
                match field.number {
                    PLANE_EVENT_METADATA => {
                        let (id, event) = self.read_event_metadata(entry)?;
                        metadata.events.insert(id, event);
                    }
                    PLANE_STAT_METADATA => {
                        let bytes = self.reader.read_bytes(len)?;
                        let (id, name) = stat_metadata_entry(&bytes, entry.start)?;
                        metadata.stat_names.insert(id, name);
                    }
                    _ => {
                        let bytes = self.reader.read_bytes(len)?;
                        let bytes = bounded_stat(&bytes, entry.start)?;
                        put_bytes_field(&mut metadata.plane_stats, PLANE_STATS_FIELD, &bytes);
                    }
                }
            }
            self.bytes_read += run.len;
        }
        Ok(metadata)
    }

    /// A `map<int64, XEventMetadata>` entry: key 1, value 2.
    fn read_event_metadata(
        &mut self,
        entry: ByteRange,
    ) -> Result<(i64, EventMetadata), XplaneError> {
        let mut key = None;
        let mut id = 0;
        let mut event = EventMetadata::default();
        while self.reader.position() < entry.end() {
            let field = self.next_field_within(entry)?;
            match (field.number, field.value) {
                (1, WireValue::Varint(k)) => key = Some(k as i64),
                (2, WireValue::Len(len)) => {
                    let value = self.payload_within(len, entry)?;
                    while self.reader.position() < value.end() {
                        let field = self.next_field_within(value)?;
                        let WireValue::Len(n) = field.value else {
                            if let (1, WireValue::Varint(v)) = (field.number, field.value) {
                                id = v as i64;
                            }
                            continue;
                        };
                        let payload = self.payload_within(n, value)?;
                        match field.number {
                            2 => event.name = self.read_string(n)?,
                            4 => event.display_name = self.read_string(n)?,
                            METADATA_STATS_FIELD if n > MAX_METADATA_ENTRY_BYTES => {
                                self.reader.seek_past(n)?;
                            }
                            METADATA_STATS_FIELD => {
                                let bytes = self.reader.read_bytes(n)?;
                                let bytes = bounded_stat(&bytes, payload.start)?;
                                put_bytes_field(&mut event.stats, METADATA_STATS_FIELD, &bytes);
                            }
                            // `metadata` (a serialized proto), `child_id`s.
                            _ => self.reader.seek_past(n)?,
                        }
                    }
                }
                (_, WireValue::Len(len)) => {
                    self.payload_within(len, entry)?;
                    self.reader.seek_past(len)?;
                }
                _ => {}
            }
        }
        Ok((key.unwrap_or(id), event))
    }

    /// Loads one `XLine` message into `buf` (reused from line to line).
    pub fn read_line(&mut self, line: ByteRange, buf: &mut Vec<u8>) -> Result<(), XplaneError> {
        let len = usize::try_from(line.len)
            .map_err(|_| XplaneError::Malformed(format!("a line of {} bytes", line.len)))?;
        buf.clear();
        buf.try_reserve_exact(len)
            .map_err(|_| XplaneError::Malformed(format!("a line of {len} bytes")))?;
        buf.resize(len, 0);
        self.reader.seek_to(line.start)?;
        self.reader.read_into(buf)?;
        self.bytes_read += line.len;
        Ok(())
    }

    /// `profile_start_time` / `profile_stop_time` from the `Task
    /// Environment` plane, if the file has one.
    pub fn profile_times(&mut self, index: &SpaceIndex) -> Result<ProfileTimes, XplaneError> {
        let Some(plane) = index
            .planes
            .iter()
            .find(|p| p.name == TASK_ENVIRONMENT_PLANE)
        else {
            return Ok(ProfileTimes::default());
        };
        let metadata = self.read_metadata(plane)?;
        let mut stats = Vec::new();
        for stat in metadata.stats() {
            stats.push(stat?);
        }
        Ok(profile_times_from(
            |id| metadata.stat_name(id),
            stats.iter().map(|s| (s.metadata_id, s.value)),
        ))
    }
}

/// A `map<int64, XStatMetadata>` entry: the key and the stat's name.
pub(crate) fn stat_metadata_entry(bytes: &[u8], base: u64) -> Result<(i64, String), XplaneError> {
    let mut key = None;
    let mut id = 0;
    let mut name = String::new();
    let mut entry = SliceReader::new(bytes, base);
    while let Some((number, value)) = entry.next_field()? {
        match (number, value) {
            (1, SliceValue::Varint(k)) => key = Some(k as i64),
            (2, SliceValue::Bytes(payload)) => {
                let mut meta = SliceReader::new(payload, base);
                while let Some((number, value)) = meta.next_field()? {
                    match (number, value) {
                        (1, SliceValue::Varint(v)) => id = v as i64,
                        (2, SliceValue::Bytes(text)) => name = text_of(text).into_owned(),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok((key.unwrap_or(id), name))
}

/// An encoded XStat, or, when its value is longer than
/// [`MAX_METADATA_STAT_BYTES`], the same stat with a string value that
/// says how long it was.
fn bounded_stat(bytes: &[u8], base: u64) -> Result<Cow<'_, [u8]>, XplaneError> {
    if bytes.len() <= MAX_METADATA_STAT_BYTES {
        return Ok(Cow::Borrowed(bytes));
    }
    let stat = StatView::parse(bytes, base)?;
    let len = match stat.value {
        StatValue::Str(text) => text.len(),
        StatValue::Bytes(raw) => raw.len(),
        _ => bytes.len(),
    };
    let mut out = Vec::new();
    put_varint_field(&mut out, 1, stat.metadata_id as u64);
    put_bytes_field(&mut out, 5, format!("<{len} bytes>").as_bytes());
    Ok(Cow::Owned(out))
}

/// Protobuf strings are UTF-8; a damaged one is shown lossily.
fn text_of(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// A stat's value, borrowed from the line (or metadata) bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StatValue<'a> {
    Double(f64),
    Uint64(u64),
    Int64(i64),
    Str(&'a [u8]),
    Bytes(&'a [u8]),
    /// An id into `stat_metadata` whose name is the value.
    Ref(u64),
    /// No value field (an empty oneof).
    None,
}

/// One XStat.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatView<'a> {
    pub metadata_id: i64,
    pub value: StatValue<'a>,
}

impl<'a> StatView<'a> {
    /// Decodes one XStat message.
    pub fn parse(bytes: &'a [u8], base: u64) -> Result<Self, XplaneError> {
        let mut stat = StatView {
            metadata_id: 0,
            value: StatValue::None,
        };
        let mut reader = SliceReader::new(bytes, base);
        while let Some((number, value)) = reader.next_field()? {
            stat.value = match (number, value) {
                (1, SliceValue::Varint(id)) => {
                    stat.metadata_id = id as i64;
                    continue;
                }
                (2, SliceValue::Fixed64(bits)) => StatValue::Double(f64::from_bits(bits)),
                (3, SliceValue::Varint(v)) => StatValue::Uint64(v),
                (4, SliceValue::Varint(v)) => StatValue::Int64(v as i64),
                (5, SliceValue::Bytes(text)) => StatValue::Str(text),
                (6, SliceValue::Bytes(raw)) => StatValue::Bytes(raw),
                (7, SliceValue::Varint(id)) => StatValue::Ref(id),
                _ => continue,
            };
        }
        Ok(stat)
    }
}

/// The stats of one message (the occurrences of one of its fields).
#[derive(Debug, Clone)]
pub struct Stats<'a> {
    reader: SliceReader<'a>,
    field: u32,
    base: u64,
    failed: bool,
}

impl<'a> Stats<'a> {
    fn new(message: &'a [u8], base: u64, field: u32) -> Self {
        Stats {
            reader: SliceReader::new(message, base),
            field,
            base,
            failed: false,
        }
    }
}

impl<'a> Iterator for Stats<'a> {
    type Item = Result<StatView<'a>, XplaneError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            let at = self.base + self.reader.position() as u64;
            match self.reader.next_field() {
                Ok(None) => return None,
                Ok(Some((number, SliceValue::Bytes(stat)))) if number == self.field => {
                    let parsed = StatView::parse(stat, at);
                    self.failed = parsed.is_err();
                    return Some(parsed);
                }
                Ok(Some(_)) => {}
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// What an event is: a span on the timeline, or an aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Starts this many picoseconds after the line's `timestamp_ns`.
    Span { offset_ps: i64 },
    /// Stands for this many occurrences; not a span (XProf does not draw it).
    Aggregate { occurrences: i64 },
}

/// One XEvent of a line in memory.
#[derive(Debug, Clone, Copy)]
pub struct EventView<'a> {
    pub metadata_id: i64,
    pub kind: EventKind,
    pub duration_ps: i64,
    message: &'a [u8],
    /// Where its first stat is (fields before it need no second look).
    stats_at: usize,
    base: u64,
}

impl<'a> EventView<'a> {
    fn parse(message: &'a [u8], base: u64) -> Result<Self, XplaneError> {
        let mut event = EventView {
            metadata_id: 0,
            kind: EventKind::Span { offset_ps: 0 },
            duration_ps: 0,
            message,
            stats_at: message.len(),
            base,
        };
        let mut reader = SliceReader::new(message, base);
        loop {
            let at = reader.position();
            let Some((number, value)) = reader.next_field()? else {
                break;
            };
            match number {
                EVENT_STATS_FIELD => event.stats_at = event.stats_at.min(at),
                1 => event.metadata_id = value.as_i64(),
                2 => {
                    event.kind = EventKind::Span {
                        offset_ps: value.as_i64(),
                    }
                }
                3 => event.duration_ps = value.as_i64(),
                5 => {
                    event.kind = EventKind::Aggregate {
                        occurrences: value.as_i64(),
                    }
                }
                _ => {}
            }
        }
        Ok(event)
    }

    /// The event's own stats (its metadata's are in [`EventMetadata::stats`]).
    pub fn stats(&self) -> Stats<'a> {
        Stats::new(
            &self.message[self.stats_at..],
            self.base + self.stats_at as u64,
            EVENT_STATS_FIELD,
        )
    }
}

/// XLine fields.
const LINE_ID: u32 = 1;
const LINE_NAME: u32 = 2;
const LINE_TIMESTAMP_NS: u32 = 3;
const LINE_EVENTS: u32 = 4;
const LINE_DURATION_PS: u32 = 9;
const LINE_DISPLAY_ID: u32 = 10;
const LINE_DISPLAY_NAME: u32 = 11;

/// One XLine in memory: its header, and its events on demand.
#[derive(Debug, Clone)]
pub struct LineView<'a> {
    pub id: i64,
    pub name: Cow<'a, str>,
    pub display_name: Cow<'a, str>,
    /// As written: see [`crate::line_start_unix_ns`] for what it means.
    pub timestamp_ns: i64,
    pub duration_ps: i64,
    pub display_id: i64,
    bytes: &'a [u8],
    base: u64,
}

impl<'a> LineView<'a> {
    /// Reads the header fields of an `XLine` message (wherever they are
    /// among its events) loaded from byte `base` of the file.
    pub fn parse(bytes: &'a [u8], base: u64) -> Result<Self, XplaneError> {
        let mut line = LineView {
            id: 0,
            name: Cow::Borrowed(""),
            display_name: Cow::Borrowed(""),
            timestamp_ns: 0,
            duration_ps: 0,
            display_id: 0,
            bytes,
            base,
        };
        let mut reader = SliceReader::new(bytes, base);
        while let Some((number, value)) = reader.next_field()? {
            match (number, value) {
                (LINE_ID, v) => line.id = v.as_i64(),
                (LINE_NAME, SliceValue::Bytes(text)) => line.name = text_of(text),
                (LINE_TIMESTAMP_NS, v) => line.timestamp_ns = v.as_i64(),
                (LINE_DURATION_PS, v) => line.duration_ps = v.as_i64(),
                (LINE_DISPLAY_ID, v) => line.display_id = v.as_i64(),
                (LINE_DISPLAY_NAME, SliceValue::Bytes(text)) => line.display_name = text_of(text),
                _ => {}
            }
        }
        Ok(line)
    }

    /// The display name when there is one, else the name.
    pub fn shown_name(&self) -> &str {
        shown_name(&self.name, &self.display_name)
    }

    /// The events in file order, each with its byte offset in the line
    /// (for [`LineView::event_at`]).
    pub fn events(&self) -> Events<'a> {
        Events {
            reader: SliceReader::new(self.bytes, self.base),
            base: self.base,
            failed: false,
        }
    }

    /// The event whose field starts at `offset` (as [`LineView::events`]
    /// gave it).
    pub fn event_at(&self, offset: usize) -> Result<EventView<'a>, XplaneError> {
        let rest = self.bytes.get(offset..).unwrap_or_default();
        let mut reader = SliceReader::new(rest, self.base + offset as u64);
        match reader.next_field()? {
            Some((LINE_EVENTS, SliceValue::Bytes(message))) => {
                EventView::parse(message, self.base + offset as u64)
            }
            _ => Err(XplaneError::Malformed(format!(
                "no event at byte {}",
                self.base + offset as u64
            ))),
        }
    }
}

/// A line's events, with the byte offset of each in the line.
#[derive(Debug, Clone)]
pub struct Events<'a> {
    reader: SliceReader<'a>,
    base: u64,
    failed: bool,
}

impl<'a> Iterator for Events<'a> {
    type Item = Result<(usize, EventView<'a>), XplaneError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            let offset = self.reader.position();
            match self.reader.next_field() {
                Ok(None) => return None,
                Ok(Some((LINE_EVENTS, SliceValue::Bytes(message)))) => {
                    let parsed = EventView::parse(message, self.base + offset as u64)
                        .map(|event| (offset, event));
                    self.failed = parsed.is_err();
                    return Some(parsed);
                }
                Ok(Some(_)) => {}
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::MetadataPlacement;
    use crate::messages::{x_event, x_stat};
    use crate::synth::{write_synthetic_space, SynthSpec};
    use crate::{XEvent, XEventMetadata, XLine, XPlane, XSpace, XStat, XStatMetadata};
    use prost::Message;
    use rankline_protowire::put_varint;
    use std::io::Cursor;

    /// Every event of every line: (plane, line, name, kind, stats as text).
    type Seen = Vec<(String, String, String, EventKind, Vec<(String, String)>)>;

    fn read_all(bytes: Vec<u8>) -> Result<Seen, XplaneError> {
        let (mut file, index) = XSpaceFile::open(Cursor::new(bytes))?;
        let mut seen = Vec::new();
        let mut buf = Vec::new();
        for plane in &index.planes {
            let metadata = file.read_metadata(plane)?;
            for &range in &plane.lines {
                file.read_line(range, &mut buf)?;
                let line = LineView::parse(&buf, range.start)?;
                for event in line.events() {
                    let (offset, event) = event?;
                    let again = line.event_at(offset)?;
                    assert_eq!(again.metadata_id, event.metadata_id);
                    let name = metadata
                        .events
                        .get(&event.metadata_id)
                        .map(|m| m.shown_name().to_string())
                        .unwrap_or_default();
                    let mut stats = Vec::new();
                    for stat in event.stats() {
                        let stat = stat?;
                        let key = metadata.stat_name(stat.metadata_id).unwrap_or("?");
                        let value = match stat.value {
                            StatValue::Ref(id) => metadata
                                .stat_name(id as i64)
                                .unwrap_or("dangling")
                                .to_string(),
                            other => format!("{other:?}"),
                        };
                        stats.push((key.to_string(), value));
                    }
                    seen.push((
                        plane.name.clone(),
                        line.shown_name().to_string(),
                        name,
                        event.kind,
                        stats,
                    ));
                }
            }
        }
        Ok(seen)
    }

    fn synthetic(metadata: MetadataPlacement) -> Vec<u8> {
        let spec = SynthSpec {
            device_planes: 1,
            events_per_line: 40,
            host_events: 16,
            aggregate_every: 10,
            metadata,
            ..SynthSpec::default()
        };
        let mut bytes = Vec::new();
        write_synthetic_space(&mut bytes, &spec).unwrap();
        bytes
    }

    #[test]
    fn names_resolve_whether_metadata_comes_after_or_before_the_lines() {
        let after = read_all(synthetic(MetadataPlacement::AfterLines)).unwrap();
        let before = read_all(synthetic(MetadataPlacement::BeforeLines)).unwrap();
        assert_eq!(after, before);
        assert_eq!(after.len(), 3 * 40 + 16);
        assert!(after.iter().all(|(_, _, name, _, _)| !name.is_empty()));
        // XLA ops name their op and module through ref_value stats.
        let op = after
            .iter()
            .find(|(_, line, _, kind, _)| {
                line == "XLA Ops" && matches!(kind, EventKind::Span { .. })
            })
            .unwrap();
        assert_eq!(op.4[0], ("hlo_op".to_string(), op.2.clone()));
        assert_eq!(
            op.4[1],
            ("hlo_module".to_string(), "jit_train_step".to_string())
        );
        let aggregates = after
            .iter()
            .filter(|e| matches!(e.3, EventKind::Aggregate { .. }))
            .count();
        assert!(aggregates > 0);
    }

    fn stat(id: i64, value: x_stat::Value) -> XStat {
        XStat {
            metadata_id: id,
            value: Some(value),
        }
    }

    /// A plane with one line holding a span and an aggregate.
    fn small_space() -> XSpace {
        let event_metadata = [(1, "matmul", ""), (2, "fusion.1", "fusion")]
            .into_iter()
            .map(|(id, name, display)| {
                let meta = XEventMetadata {
                    id,
                    name: name.into(),
                    display_name: display.into(),
                    metadata: vec![7; 100],
                    stats: vec![stat(11, x_stat::Value::StrValue("x".repeat(10_000)))],
                    ..Default::default()
                };
                (id, meta)
            })
            .collect();
        let stat_metadata = [(10, "hlo_op"), (11, "long_name"), (12, "flops")]
            .into_iter()
            .map(|(id, name)| {
                let meta = XStatMetadata {
                    id,
                    name: name.into(),
                    description: String::new(),
                };
                (id, meta)
            })
            .collect();
        let line = XLine {
            id: 5,
            name: "XLA Ops".into(),
            timestamp_ns: 40_723,
            events: vec![
                XEvent {
                    metadata_id: 1,
                    data: Some(x_event::Data::OffsetPs(1_500)),
                    duration_ps: 2_000_000,
                    stats: vec![
                        stat(10, x_stat::Value::RefValue(12)),
                        stat(12, x_stat::Value::Uint64Value(99)),
                    ],
                },
                XEvent {
                    metadata_id: 2,
                    data: Some(x_event::Data::NumOccurrences(3)),
                    duration_ps: 9,
                    stats: vec![],
                },
            ],
            ..Default::default()
        };
        XSpace {
            planes: vec![XPlane {
                id: 1,
                name: "/device:TPU:0".into(),
                lines: vec![line],
                event_metadata,
                stat_metadata,
                ..Default::default()
            }],
            hostnames: vec!["vm".into()],
            ..Default::default()
        }
    }

    #[test]
    fn spans_aggregates_refs_and_long_metadata_stats() {
        let seen = read_all(small_space().encode_to_vec()).unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].2, "matmul");
        assert_eq!(seen[0].3, EventKind::Span { offset_ps: 1_500 });
        assert_eq!(
            seen[0].4,
            [
                ("hlo_op".to_string(), "flops".to_string()),
                ("flops".to_string(), "Uint64(99)".to_string()),
            ]
        );
        assert_eq!(seen[1].2, "fusion", "the display name wins");
        assert_eq!(seen[1].3, EventKind::Aggregate { occurrences: 3 });

        let (mut file, index) =
            XSpaceFile::open(Cursor::new(small_space().encode_to_vec())).unwrap();
        assert_eq!(index.hostnames, ["vm"]);
        let metadata = file.read_metadata(&index.planes[0]).unwrap();
        let long = metadata.events[&1].stats().next().unwrap().unwrap();
        assert_eq!(long.value, StatValue::Str(b"<10000 bytes>"));
    }

    #[test]
    fn damage_that_would_grow_memory_is_a_clear_error() {
        // Empty planes cost two bytes each in the file and far more in an
        // index: past any real count, the file is refused.
        let planes = [0x0a, 0x00].repeat(MAX_PLANES + 1);
        let error = XSpaceFile::open(Cursor::new(planes)).err().unwrap();
        assert!(error.to_string().contains("planes"), "{error}");

        // A name that claims megabytes is not read into memory.
        let mut named = vec![0x0a];
        let mut plane = vec![0x12];
        put_varint(&mut plane, MAX_NAME_BYTES + 1);
        plane.extend(std::iter::repeat_n(b'x', MAX_NAME_BYTES as usize + 1));
        put_varint(&mut named, plane.len() as u64);
        named.extend(plane);
        let (_, index) = XSpaceFile::open(Cursor::new(named)).unwrap();
        assert!(index.planes[0].name.starts_with("<a name of"));
    }

    /// Appends a field with an unknown number and each wire type.
    fn with_unknown_fields(mut message: Vec<u8>) -> Vec<u8> {
        message.extend_from_slice(&[
            0xf8, 0x01, 0x05, // field 31, varint
            0xf9, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, // field 31, fixed64
            0xfa, 0x01, 0x02, 0xaa, 0xbb, // field 31, bytes
            0xfd, 0x01, 1, 2, 3, 4, // field 31, fixed32
        ]);
        message
    }

    fn field(number: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![number << 3 | 2];
        put_varint(&mut out, payload.len() as u64);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn unknown_fields_are_skipped_at_every_level() {
        let space = small_space();
        let plane = &space.planes[0];
        let mut line = XLine {
            events: vec![],
            ..plane.lines[0].clone()
        }
        .encode_to_vec();
        for event in &plane.lines[0].events {
            let mut event = event.clone();
            let stats = std::mem::take(&mut event.stats);
            let mut bytes = event.encode_to_vec();
            for stat in stats {
                bytes.extend(field(4, &with_unknown_fields(stat.encode_to_vec())));
            }
            line.extend(field(4, &with_unknown_fields(bytes)));
        }
        let line = with_unknown_fields(line);
        let rest = XPlane {
            lines: vec![],
            ..plane.clone()
        }
        .encode_to_vec();
        let mut plane_bytes = with_unknown_fields(field(3, &line));
        plane_bytes.extend(rest);
        let mut bytes = with_unknown_fields(field(1, &plane_bytes));
        bytes.extend(field(4, b"vm"));
        assert_eq!(
            read_all(bytes).unwrap(),
            read_all(small_space().encode_to_vec()).unwrap()
        );
    }

    #[test]
    fn truncated_or_damaged_files_are_errors_not_panics() {
        let bytes = synthetic(MetadataPlacement::AfterLines);
        let whole = read_all(bytes.clone()).unwrap();
        for cut in (1..bytes.len()).step_by(97) {
            if let Ok(seen) = read_all(bytes[..cut].to_vec()) {
                // Only a cut between two top-level fields can read cleanly.
                assert!(seen.len() <= whole.len(), "cut at {cut}");
            }
        }
        let error = read_all(bytes[..bytes.len() / 2].to_vec()).unwrap_err();
        assert!(error.to_string().contains("truncated"), "{error}");
        let mut flipped = bytes.clone();
        for at in (0..flipped.len()).step_by(89) {
            flipped[at] ^= 0x5a;
            let _ = read_all(flipped.clone());
        }
    }
}
