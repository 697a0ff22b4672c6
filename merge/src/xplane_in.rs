//! One rank read from its `.xplane.pb`, the JAX profiler's complete record.
//!
//! The file is walked plane by plane and line by line
//! ([`rankline_xplane::XSpaceFile`]): one line's bytes are in memory at a
//! time, never a plane or the whole file. Every plane with lines becomes
//! tracks under the rank (`/host:CPU`'s lines as threads, as the JSON
//! export shows them; a device plane as a track, `TPU:0`, with one child
//! track per line), every span event a slice named by its metadata, with
//! its stats (and its metadata's) as debug annotations. Aggregates
//! (`num_occurrences`) are counted, not drawn.
//!
//! [`write_pftrace`] makes two passes over each line: the first interns
//! its events' names (written in one interned-data packet before the line)
//! and checks that the events are in start order; the second places each
//! event on a lane where it nests strictly (an event that overlaps another
//! without nesting goes to a sibling "overlap" track, as in the JSON path)
//! and writes it, interning its stats' names and strings as it goes (a
//! small interned-data packet precedes an event that needs new ones). A
//! line whose events are out of order is sorted through a small index
//! (start, end, offset per event). Packets of one rank are therefore in
//! time order per track, not across tracks: trace_processor sorts them.
//!
//! [`for_each_element`] hands the same events over as Chrome trace elements
//! instead, for the consumers that read those (JSON output, the collective
//! alignment).

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::io::{self, Read, Seek};
use std::ops::ControlFlow;

use rankline_xplane::{
    line_start_unix_ns, EventKind, EventView, LineView, PlaneIndex, PlaneMetadata, SpaceIndex,
    StatValue, StatView, XSpaceFile, XplaneError,
};
use rustc_hash::FxHashMap;

use crate::chrome::{Element, RawEvent};
use crate::error::{InputError, InputProblem};
use crate::events::{reason, EventFilter, RankStats, XplaneCounts};
use crate::json_out::push_json_string;
use crate::number::push_nanos_as_micros;
use crate::output::ChunkSink;
use crate::packets::{
    rank_pid, synthetic_tid, AnnotationValue, Annotations, Interner, Lanes, OpenSlices,
    PacketWriter, SequenceInfo, TrackSpec, Uuids,
};
use crate::proto::{interned, track_event};
use crate::rank::Location;
use crate::timebase::RankTime;

/// The plane whose lines are the host's threads.
const HOST_PLANE: &str = "/host:CPU";
/// Byte values longer than this are summarized, not shown in hex.
const MAX_HEX_BYTES: usize = 16;
/// The annotation that shows an event's name when its display name hides
/// it.
const LONG_NAME: &str = "long_name";

/// Why converting an xplane rank stopped.
pub enum XplaneFailure {
    Input(InputError),
    Output(io::Error),
    /// The caller asked to stop.
    Cancelled,
}

/// What an xplane is read from: a file, or bytes in memory (fuzzing).
pub trait XplaneSource: Read + Seek + Send {}

impl<T: Read + Seek + Send> XplaneSource for T {}

/// An opened `.xplane.pb`.
pub struct OpenXplane {
    file: XSpaceFile<Box<dyn XplaneSource>>,
    index: SpaceIndex,
    /// What the file's relative line timestamps count from.
    session_start_ns: i64,
    display: String,
}

impl OpenXplane {
    /// Opens and indexes `location`; relative line timestamps count from
    /// its `profile_start_time`, else from the rank's time base.
    pub fn open(location: &Location, time: &RankTime) -> Result<OpenXplane, InputError> {
        let display = location.display();
        let file = location
            .open()
            .map_err(|e| InputError::new(display.clone(), InputProblem::opening(e)))?;
        Self::from_reader(Box::new(file), display, time)
    }

    /// [`OpenXplane::open`] on any seekable bytes, named `display`.
    pub fn from_reader(
        reader: Box<dyn XplaneSource>,
        display: String,
        time: &RankTime,
    ) -> Result<OpenXplane, InputError> {
        let problem = |e: XplaneError| InputError::new(display.clone(), xplane_problem(e));
        let (mut file, index) = XSpaceFile::open(reader).map_err(problem)?;
        let start = file.profile_times(&index).map_err(problem)?.start_unix_ns;
        Ok(OpenXplane {
            file,
            index,
            session_start_ns: start.unwrap_or(time.base_ns),
            display,
        })
    }

    fn failure(&self, error: XplaneError) -> XplaneFailure {
        XplaneFailure::Input(InputError::new(self.display.clone(), xplane_problem(error)))
    }

    /// Walks every line of every plane that has lines: `on_plane` first for
    /// each plane, then `on_line` for each of its lines (in memory only
    /// while it runs), given the plane's state and metadata.
    fn walk<S>(
        &mut self,
        cancelled: &dyn Fn() -> bool,
        mut on_plane: impl FnMut(usize, &PlaneIndex) -> S,
        mut on_line: impl FnMut(&mut S, &PlaneMetadata, usize, &LineView<'_>) -> Result<(), LineError>,
    ) -> Result<XplaneCounts, XplaneFailure> {
        let mut counts = XplaneCounts::default();
        let mut buf = Vec::new();
        let planes = std::mem::take(&mut self.index.planes);
        for (position, plane) in planes.iter().filter(|p| !p.lines.is_empty()).enumerate() {
            let metadata = self
                .file
                .read_metadata(plane)
                .map_err(|e| self.failure(e))?;
            let mut state = on_plane(position, plane);
            counts.planes += 1;
            for (line_position, &range) in plane.lines.iter().enumerate() {
                if cancelled() {
                    return Err(XplaneFailure::Cancelled);
                }
                self.file
                    .read_line(range, &mut buf)
                    .map_err(|e| self.failure(e))?;
                let line = LineView::parse(&buf, range.start).map_err(|e| self.failure(e))?;
                counts.lines += 1;
                on_line(&mut state, &metadata, line_position, &line).map_err(|e| match e {
                    LineError::Input(e) => self.failure(e),
                    LineError::Output(e) => XplaneFailure::Output(e),
                    LineError::Stopped => XplaneFailure::Cancelled,
                })?;
            }
        }
        self.index.planes = planes;
        Ok(counts)
    }

    /// Bytes read from the file.
    pub fn bytes_read(&self) -> u64 {
        self.file.bytes_read()
    }
}

/// An xplane reader's failure as a message about the input.
pub fn xplane_problem(error: XplaneError) -> InputProblem {
    match error {
        XplaneError::Io(e) => InputProblem::Unreadable(e),
        other => InputProblem::Xplane(other.to_string()),
    }
}

/// Nanoseconds nearest to `ps` picoseconds (the JSON export rounds the
/// same way, to 3 decimals of a microsecond).
fn ps_to_ns(ps: i64) -> i64 {
    match ps.checked_add(500) {
        // 64-bit division: this runs several times per event.
        Some(rounded) => rounded.div_euclid(1000),
        None => ((i128::from(ps) + 500).div_euclid(1000)) as i64,
    }
}

/// An event's start and duration in ns from its offset and duration in ps.
/// The end is rounded from the exact end, not the rounded start plus the
/// rounded duration, so that back-to-back events stay back to back.
fn span_ns(offset_ps: i64, duration_ps: i64) -> (i64, i64) {
    let start = ps_to_ns(offset_ps);
    let duration_ps = duration_ps.max(0);
    let end = match offset_ps.checked_add(duration_ps) {
        Some(end_ps) => ps_to_ns(end_ps),
        // Both halves fit in an i64 once divided.
        None => ((i128::from(offset_ps) + i128::from(duration_ps) + 500).div_euclid(1000)) as i64,
    };
    (start, end - start)
}

/// Where a line's events are placed in time.
#[derive(Clone, Copy)]
struct LineTime<'t> {
    time: &'t RankTime,
    /// Epoch ns (host clock) of the line's start.
    start_ns: i64,
}

impl LineTime<'_> {
    /// A span's start and end on the merged clock, or why it has none.
    fn span(&self, event: &EventView<'_>) -> Result<(i64, i64), &'static str> {
        let offset_ps = match event.kind {
            EventKind::Span { offset_ps } => offset_ps,
            EventKind::Aggregate { .. } => return Err(reason::AGGREGATED),
        };
        let (offset, duration) = span_ns(offset_ps, event.duration_ps);
        let host = self.start_ns.checked_add(offset).ok_or(reason::BAD_TS)?;
        let relative = host.checked_sub(self.time.base_ns).ok_or(reason::BAD_TS)?;
        let start = self.time.aligned(relative).ok_or(reason::BAD_TS)?;
        let end = relative
            .checked_add(duration)
            .and_then(|r| self.time.aligned(r))
            .ok_or(reason::BAD_TS)?;
        Ok((start, end.max(start)))
    }
}

/// A stat's name (`stat <id>` for an id the plane does not define).
fn stat_key(metadata: &PlaneMetadata, id: i64) -> Cow<'_, str> {
    match metadata.stat_name(id) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(format!("stat {id}")),
    }
}

/// A stat's value as an annotation's: a `ref_value` as the name it refers
/// to, bytes in hex or as their size (in `scratch`).
fn stat_value<'m>(
    metadata: &'m PlaneMetadata,
    stat: &StatView<'m>,
    scratch: &'m mut String,
) -> AnnotationValue<'m> {
    match stat.value {
        StatValue::Double(v) => AnnotationValue::Double(v),
        StatValue::Uint64(v) => AnnotationValue::Uint(v),
        StatValue::Int64(v) => AnnotationValue::Int(v),
        StatValue::Str(text) => match std::str::from_utf8(text) {
            Ok(text) => AnnotationValue::Text(text),
            Err(_) => {
                *scratch = String::from_utf8_lossy(text).into_owned();
                AnnotationValue::Text(scratch)
            }
        },
        StatValue::Bytes(raw) => {
            *scratch = bytes_text(raw);
            AnnotationValue::Text(scratch)
        }
        StatValue::Ref(id) => match i64::try_from(id).ok().and_then(|id| metadata.stat_name(id)) {
            Some(name) => AnnotationValue::Text(name),
            None => AnnotationValue::Uint(id),
        },
        StatValue::None => AnnotationValue::Text(""),
    }
}

fn bytes_text(raw: &[u8]) -> String {
    use std::fmt::Write as _;
    if raw.len() > MAX_HEX_BYTES {
        return format!("<{} bytes>", raw.len());
    }
    let mut text = String::from("0x");
    for byte in raw {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// What a plane's event metadata becomes, decided once per metadata id.
struct EventName {
    /// The name's iid.
    iid: u32,
    /// Named like a Python-tracer event (`$file.py:N func`).
    python: bool,
    /// The metadata's own stats (and `long_name` when the display name
    /// hides the name and no stat has that name), as encoded annotations,
    /// one per name.
    extra: Vec<u8>,
    /// The iids of the names in `extra`: an event's own stat of the same
    /// name wins.
    extra_keys: Vec<u32>,
}

/// One plane being converted.
struct PlaneState {
    position: u64,
    host: bool,
    name: String,
    /// The plane's track (device planes), once it has one.
    track: Option<u64>,
    events: FxHashMap<i64, EventName>,
    /// Stat metadata id to its name's iid.
    stat_keys: FxHashMap<i64, u32>,
    /// `ref_value` to its name's iid (`None`: written inline).
    ref_values: FxHashMap<u64, Option<u32>>,
}

/// An event ready to write: its span and where it is in the line.
#[derive(Clone, Copy)]
struct Placed {
    start: i64,
    end: i64,
    offset: u32,
}

/// Writes one rank's xplane as packet sequence `ordinal + 1`.
pub fn write_pftrace(
    mut xplane: OpenXplane,
    time: &RankTime,
    filter: &EventFilter,
    info: &SequenceInfo<'_>,
    sink: &dyn ChunkSink,
    cancelled: &dyn Fn() -> bool,
) -> Result<RankStats, XplaneFailure> {
    let planned_tracks = xplane
        .index
        .planes
        .iter()
        .map(|p| p.lines.len() + 1)
        .sum::<usize>()
        + 64;
    let mut writer = Writer {
        filter,
        out: PacketWriter::new(Vec::new(), sink, info),
        names: Interner::default(),
        annotations: Annotations::default(),
        fresh: Vec::new(),
        uuids: Uuids::new(info.ordinal, planned_tracks),
        ordinal: info.ordinal,
        tracks: 0,
        host_threads: 0,
        stats: RankStats::default(),
        args: Vec::new(),
        own_keys: Vec::new(),
        placed: Vec::new(),
    };
    writer.out.interned([]).map_err(XplaneFailure::Output)?;
    let uuids = writer.uuids;
    writer
        .out
        .process_descriptor(info, uuids)
        .map_err(XplaneFailure::Output)?;
    let session_start_ns = xplane.session_start_ns;
    let mut counts = xplane.walk(
        cancelled,
        |position, plane| PlaneState {
            position: position as u64,
            host: plane.name == HOST_PLANE,
            name: plane
                .name
                .strip_prefix("/device:")
                .unwrap_or(&plane.name)
                .to_string(),
            track: None,
            events: FxHashMap::default(),
            stat_keys: FxHashMap::default(),
            ref_values: FxHashMap::default(),
        },
        |plane, metadata, position, line| {
            let line_time = LineTime {
                time,
                start_ns: line_start_unix_ns(line.timestamp_ns, session_start_ns),
            };
            writer.line(plane, metadata, position as u64, line, line_time)
        },
    )?;
    writer.out.flush().map_err(XplaneFailure::Output)?;
    let mut stats = writer.stats;
    counts.events = stats.events_in;
    counts.aggregated = stats.dropped.get(reason::AGGREGATED).copied().unwrap_or(0);
    stats.xplane = Some(counts);
    stats.bytes_read = xplane.bytes_read();
    stats.dropped.retain(|_, n| *n > 0);
    Ok(stats)
}

/// Why one line's conversion stopped.
enum LineError {
    Input(XplaneError),
    Output(io::Error),
    /// The consumer of the events wants no more.
    Stopped,
}

impl From<XplaneError> for LineError {
    fn from(error: XplaneError) -> Self {
        LineError::Input(error)
    }
}

impl From<io::Error> for LineError {
    fn from(error: io::Error) -> Self {
        LineError::Output(error)
    }
}

struct Writer<'a, 's> {
    filter: &'a EventFilter,
    out: PacketWriter<'s>,
    names: Interner,
    annotations: Annotations,
    /// Strings interned since the last interned-data packet.
    fresh: Vec<(u32, u32, Box<str>)>,
    uuids: Uuids,
    ordinal: u32,
    /// Tracks made so far.
    tracks: u32,
    /// Host lines made into thread tracks so far.
    host_threads: u32,
    stats: RankStats,
    /// One event's annotations.
    args: Vec<u8>,
    /// The iids of the stat names of the event being written.
    own_keys: Vec<u32>,
    /// An out-of-order line's events, sorted.
    placed: Vec<Placed>,
}

impl Writer<'_, '_> {
    fn line(
        &mut self,
        plane: &mut PlaneState,
        metadata: &PlaneMetadata,
        position: u64,
        line: &LineView<'_>,
        line_time: LineTime<'_>,
    ) -> Result<(), LineError> {
        let in_order = self.prepare(plane, metadata, line, line_time)?;
        self.write_fresh()?;
        let mut tracks = LineTracks {
            name: line.shown_name().to_string(),
            position,
            lanes: Lanes::default(),
            uuids: Vec::new(),
        };
        let mut open = OpenSlices::default();
        if in_order {
            for event in line.events() {
                let (_, event) = event?;
                if let Some((start, end)) = self.admit(plane, &event, line_time) {
                    self.write_event(plane, metadata, &mut tracks, &mut open, &event, start, end)?;
                }
            }
        } else {
            let mut placed = std::mem::take(&mut self.placed);
            placed.clear();
            for event in line.events() {
                let (offset, event) = event?;
                if let Some((start, end)) = self.admit(plane, &event, line_time) {
                    let offset = u32::try_from(offset).map_err(|_| {
                        XplaneError::Malformed(format!(
                            "a line of more than 4 GiB ({offset} bytes)"
                        ))
                    })?;
                    placed.push(Placed { start, end, offset });
                }
            }
            placed.sort_by_key(|p| (p.start, Reverse(p.end), p.offset));
            for p in &placed {
                let event = line.event_at(p.offset as usize)?;
                self.write_event(
                    plane,
                    metadata,
                    &mut tracks,
                    &mut open,
                    &event,
                    p.start,
                    p.end,
                )?;
            }
            self.placed = placed;
        }
        open.close_until(i64::MAX, &mut self.out)?;
        Ok(())
    }

    /// Writes the strings interned since the last time, if any.
    fn write_fresh(&mut self) -> io::Result<()> {
        if self.fresh.is_empty() {
            return Ok(());
        }
        let fresh = std::mem::take(&mut self.fresh);
        self.out.interned(
            fresh
                .iter()
                .map(|(field, iid, text)| (*field, *iid, &**text)),
        )
    }

    /// The first pass over a line: interns the names of its kept events
    /// (written in one packet before the line), and says whether they are
    /// in start order (longest first on a tie). Stats are interned as the
    /// second pass writes them: parsing them twice would cost more than the
    /// few small interned-data packets that saves.
    fn prepare(
        &mut self,
        plane: &mut PlaneState,
        metadata: &PlaneMetadata,
        line: &LineView<'_>,
        line_time: LineTime<'_>,
    ) -> Result<bool, LineError> {
        let mut previous = (i64::MIN, Reverse(i64::MAX));
        let mut in_order = true;
        for event in line.events() {
            let (_, event) = event?;
            let Ok((start, end)) = line_time.span(&event) else {
                continue;
            };
            self.event_name(plane, metadata, event.metadata_id)?;
            if self.filtered(plane, event.metadata_id, start, end).is_err() {
                continue;
            }
            let key = (start, Reverse(end));
            in_order &= key >= previous;
            previous = key;
        }
        Ok(in_order)
    }

    /// What the filters say about an event from `start` to `end` (its
    /// name was looked up by the first pass).
    fn filtered(
        &self,
        plane: &PlaneState,
        id: i64,
        start: i64,
        end: i64,
    ) -> Result<(), &'static str> {
        let python = plane.events.get(&id).is_some_and(|name| name.python);
        // The name only matters to the Python filter.
        let label = if python { "$" } else { "" };
        self.filter.check(label, None, start, end, true)
    }

    /// Counts an event and decides whether it is kept; its span if so.
    fn admit(
        &mut self,
        plane: &PlaneState,
        event: &EventView<'_>,
        line_time: LineTime<'_>,
    ) -> Option<(i64, i64)> {
        self.stats.events_in += 1;
        if matches!(event.kind, EventKind::Span { .. }) {
            self.stats.complete_events += 1;
        }
        let kept = line_time.span(event).and_then(|(start, end)| {
            self.filtered(plane, event.metadata_id, start, end)
                .map(|()| (start, end))
        });
        match kept {
            Ok((start, end)) => {
                self.stats.kept(1, start, end);
                Some((start, end))
            }
            Err(why) => {
                self.stats.drop_events(why, 1);
                None
            }
        }
    }

    /// What an event metadata id becomes (decided the first time).
    fn event_name<'p>(
        &mut self,
        plane: &'p mut PlaneState,
        metadata: &PlaneMetadata,
        id: i64,
    ) -> Result<&'p EventName, XplaneError> {
        Ok(match plane.events.entry(id) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(slot) => slot.insert(self.new_event_name(metadata, id)?),
        })
    }

    fn new_event_name(
        &mut self,
        metadata: &PlaneMetadata,
        id: i64,
    ) -> Result<EventName, XplaneError> {
        let fresh = &mut self.fresh;
        let mut remember = |field: u32, iid: u32, text: &str| fresh.push((field, iid, text.into()));
        let unknown;
        let (shown, long_name, stats) = match metadata.events.get(&id) {
            Some(event) => (
                event.shown_name(),
                (event.shown_name() != event.name).then_some(event.name.as_str()),
                Some(event.stats()),
            ),
            None => {
                unknown = format!("event metadata {id}");
                (unknown.as_str(), None, None)
            }
        };
        let iid = match self.names.intern_new(shown) {
            Some((iid, new)) => {
                if new {
                    remember(interned::EVENT_NAMES, iid, shown);
                }
                iid
            }
            None => 0,
        };
        let mut name = EventName {
            iid,
            python: EventFilter::is_python(shown, None),
            extra: Vec::new(),
            extra_keys: Vec::new(),
        };
        let mut text = String::new();
        for stat in stats.into_iter().flatten() {
            let stat = stat?;
            let key = stat_key(metadata, stat.metadata_id);
            let key_iid = self.annotations.key_iid(&key, &mut remember);
            drop_earlier(&mut name.extra, &mut name.extra_keys, key_iid);
            let value = stat_value(metadata, &stat, &mut text);
            self.annotations
                .put(&mut name.extra, &key, value, &mut remember);
            name.extra_keys.push(key_iid);
        }
        if let Some(long_name) = long_name {
            let key_iid = self.annotations.key_iid(LONG_NAME, &mut remember);
            if !name.extra_keys.contains(&key_iid) {
                self.annotations.put(
                    &mut name.extra,
                    LONG_NAME,
                    AnnotationValue::Text(long_name),
                    &mut remember,
                );
                name.extra_keys.push(key_iid);
            }
        }
        Ok(name)
    }

    #[allow(clippy::too_many_arguments)]
    fn write_event(
        &mut self,
        plane: &mut PlaneState,
        metadata: &PlaneMetadata,
        tracks: &mut LineTracks,
        open: &mut OpenSlices,
        event: &EventView<'_>,
        start: i64,
        end: i64,
    ) -> Result<(), LineError> {
        open.close_until(start, &mut self.out)?;
        let (lane, new) = tracks.lanes.place(start, end);
        if new {
            let uuid = self.new_lane_track(plane, tracks, lane)?;
            tracks.uuids.push(uuid);
        }
        let uuid = tracks.uuids[lane as usize];
        self.args.clear();
        let mut own_keys = std::mem::take(&mut self.own_keys);
        own_keys.clear();
        let mut text = String::new();
        for stat in event.stats() {
            let stat = stat?;
            let (key_iid, value, text_iid) = self.interned_stat(plane, metadata, &stat, &mut text);
            drop_earlier(&mut self.args, &mut own_keys, key_iid);
            self.annotations
                .put_interned(&mut self.args, key_iid, value, text_iid);
            own_keys.push(key_iid);
        }
        let name = self.event_name(plane, metadata, event.metadata_id)?;
        if own_keys.iter().any(|key| name.extra_keys.contains(key)) {
            append_without(&mut self.args, &name.extra, &name.extra_keys, &own_keys);
        } else {
            self.args.extend_from_slice(&name.extra);
        }
        self.own_keys = own_keys;
        let name_iid = name.iid;
        // Strings first seen here (the first pass interns nearly all) must
        // precede the event that uses them.
        self.write_fresh()?;
        self.out.begin(
            track_event::SLICE_BEGIN,
            start,
            uuid,
            name_iid,
            0,
            &self.args,
        );
        open.push(end, uuid);
        self.out.maybe_flush()?;
        Ok(())
    }

    /// A stat as an annotation, its strings interned: (name iid, value,
    /// value iid for a string). Names and `ref_value`s are looked up once
    /// per plane.
    fn interned_stat<'m>(
        &mut self,
        plane: &mut PlaneState,
        metadata: &'m PlaneMetadata,
        stat: &StatView<'m>,
        scratch: &'m mut String,
    ) -> (u32, AnnotationValue<'m>, Option<u32>) {
        let fresh = &mut self.fresh;
        let mut remember = |field: u32, iid: u32, text: &str| fresh.push((field, iid, text.into()));
        let annotations = &mut self.annotations;
        let key_iid = *plane.stat_keys.entry(stat.metadata_id).or_insert_with(|| {
            annotations.key_iid(&stat_key(metadata, stat.metadata_id), &mut remember)
        });
        let value = stat_value(metadata, stat, scratch);
        let text_iid = match (stat.value, value) {
            (StatValue::Ref(id), AnnotationValue::Text(name)) => *plane
                .ref_values
                .entry(id)
                .or_insert_with(|| annotations.text_iid(name, &mut remember)),
            (_, AnnotationValue::Text(text)) => annotations.text_iid(text, &mut remember),
            _ => None,
        };
        (key_iid, value, text_iid)
    }

    /// The track of lane `lane` of a line, described before its first event.
    fn new_lane_track(
        &mut self,
        plane: &mut PlaneState,
        line: &LineTracks,
        lane: u32,
    ) -> io::Result<u64> {
        let parent = if plane.host {
            self.uuids.process
        } else {
            match plane.track {
                Some(uuid) => uuid,
                None => {
                    let uuid = self.next_uuid();
                    self.out.track_descriptor(&TrackSpec {
                        uuid,
                        parent: self.uuids.process,
                        name: &plane.name,
                        thread: None,
                        order: plane.position << 20,
                        ordered_children: true,
                    })?;
                    plane.track = Some(uuid);
                    uuid
                }
            }
        };
        let line_order = line.position.min(1023) << 10 | u64::from(lane.min(1023));
        let order = if plane.host {
            plane.position << 20 | line_order
        } else {
            line_order
        };
        let thread = match (plane.host, lane) {
            (true, 0) => {
                let tid = synthetic_tid(self.ordinal, self.host_threads);
                self.host_threads += 1;
                tid.map(|tid| (rank_pid(self.ordinal), tid))
            }
            _ => None,
        };
        let name = match lane {
            0 => line.name.clone(),
            n => format!("{} (overlap {n})", line.name),
        };
        let uuid = self.next_uuid();
        self.out.track_descriptor(&TrackSpec {
            uuid,
            parent,
            name: &name,
            thread,
            order,
            ordered_children: false,
        })?;
        Ok(uuid)
    }

    fn next_uuid(&mut self) -> u64 {
        let uuid = self.uuids.track(self.tracks);
        self.tracks += 1;
        uuid
    }
}

/// The tracks of one line: a lane each.
struct LineTracks {
    name: String,
    position: u64,
    lanes: Lanes,
    uuids: Vec<u64>,
}

/// Appends the annotations of `extra` (one per name iid of `extra_keys`,
/// in order) whose name is not in `skip`.
fn append_without(out: &mut Vec<u8>, extra: &[u8], extra_keys: &[u32], skip: &[u32]) {
    let mut at = 0;
    for key in extra_keys {
        let len = annotation_len(&extra[at..]);
        if !skip.contains(key) {
            out.extend_from_slice(&extra[at..at + len]);
        }
        at += len;
    }
}

/// Removes the annotation named `key` from `annotations` (encoded one after
/// another, their names' iids in `keys`), if there is one: of two stats
/// with one name the later wins, as in XProf's JSON export (the real
/// fixtures' host events carry `_src` twice).
fn drop_earlier(annotations: &mut Vec<u8>, keys: &mut Vec<u32>, key: u32) {
    let Some(earlier) = keys.iter().position(|&k| k == key) else {
        return;
    };
    let start = (0..earlier).fold(0, |at, _| at + annotation_len(&annotations[at..]));
    let len = annotation_len(&annotations[start..]);
    annotations.drain(start..start + len);
    keys.remove(earlier);
}

/// The length of the `debug_annotations` field at the start of `bytes`.
fn annotation_len(bytes: &[u8]) -> usize {
    let mut reader = rankline_xplane::wire::SliceReader::new(bytes, 0);
    let _ = reader.next_field();
    reader.position()
}

/// What [`for_each_element`] read.
pub struct ElementsRead {
    pub counts: XplaneCounts,
    /// The consumer asked to stop before the end.
    pub stopped: bool,
}

/// Hands a rank's xplane to `on_element` as Chrome trace elements: a
/// `process_name` per plane with lines (`pid` = its position + 1), a
/// `thread_name` and `thread_sort_index` per line (`tid` = its position +
/// 1), and an `X` event per span with `ts`/`dur` relative to the rank's
/// time base and its own stats as `args` (strings, as in XProf's export).
/// Aggregates are only counted.
pub fn for_each_element(
    xplane: &mut OpenXplane,
    time: &RankTime,
    cancelled: &dyn Fn() -> bool,
    mut on_element: impl FnMut(Element<'_, '_>) -> ControlFlow<()>,
) -> Result<ElementsRead, XplaneFailure> {
    let session_start_ns = xplane.session_start_ns;
    let mut text = ElementText::default();
    let (mut events, mut aggregated) = (0, 0);
    let mut stopped = false;
    let mut emit = |text: &ElementText| -> Result<(), LineError> {
        match on_element(Element::Event(&text.event())) {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(()) => {
                stopped = true;
                Err(LineError::Stopped)
            }
        }
    };
    let walked = xplane.walk(
        cancelled,
        |position, plane| (position as u64 + 1, plane.name.clone()),
        |(pid, plane_name), metadata, position, line| {
            let tid = position as u64 + 1;
            if position == 0 {
                text.metadata(*pid, None, "process_name", "name", plane_name);
                emit(&text)?;
            }
            text.metadata(*pid, Some(tid), "thread_name", "name", line.shown_name());
            emit(&text)?;
            text.metadata(
                *pid,
                Some(tid),
                "thread_sort_index",
                "sort_index",
                &tid.to_string(),
            );
            emit(&text)?;
            let line_start = line_start_unix_ns(line.timestamp_ns, session_start_ns);
            for event in line.events() {
                let (_, event) = event?;
                events += 1;
                let offset_ps = match event.kind {
                    EventKind::Span { offset_ps } => offset_ps,
                    EventKind::Aggregate { .. } => {
                        aggregated += 1;
                        continue;
                    }
                };
                let (offset, duration) = span_ns(offset_ps, event.duration_ps);
                let start = line_start.saturating_add(offset);
                text.span(*pid, tid, start.saturating_sub(time.base_ns), duration);
                text.name(metadata, event.metadata_id);
                text.args(metadata, &event)?;
                emit(&text)?;
            }
            Ok(())
        },
    );
    let mut counts = match walked {
        Ok(counts) => counts,
        Err(XplaneFailure::Cancelled) if stopped => XplaneCounts::default(),
        Err(failure) => return Err(failure),
    };
    counts.events = events;
    counts.aggregated = aggregated;
    Ok(ElementsRead { counts, stopped })
}

/// The text of one Chrome trace element being built, field by field.
#[derive(Default)]
struct ElementText {
    buf: Vec<u8>,
    /// Byte ranges of (ph, pid, tid, ts, dur, name, args) in `buf`.
    fields: [Option<(usize, usize)>; 7],
    scratch: String,
}

impl ElementText {
    fn field(&mut self, index: usize, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buf.len();
        write(&mut self.buf);
        self.fields[index] = Some((start, self.buf.len()));
    }

    fn reset(&mut self, phase: &str) {
        self.buf.clear();
        self.fields = Default::default();
        self.field(0, |b| push_json_string(b, phase));
    }

    fn number(&mut self, index: usize, value: u64) {
        self.field(index, |b| {
            b.extend_from_slice(itoa::Buffer::new().format(value).as_bytes())
        });
    }

    /// An `M` event `{name, args: {key: value}}`.
    fn metadata(&mut self, pid: u64, tid: Option<u64>, name: &str, key: &str, value: &str) {
        self.reset("M");
        self.number(1, pid);
        if let Some(tid) = tid {
            self.number(2, tid);
        }
        self.field(5, |b| push_json_string(b, name));
        let numeric = key == "sort_index";
        self.field(6, |b| {
            b.push(b'{');
            push_json_string(b, key);
            b.push(b':');
            if numeric {
                b.extend_from_slice(value.as_bytes());
            } else {
                push_json_string(b, value);
            }
            b.push(b'}');
        });
    }

    /// An `X` event's phase, ids and times.
    fn span(&mut self, pid: u64, tid: u64, relative_ns: i64, duration_ns: i64) {
        self.reset("X");
        self.number(1, pid);
        self.number(2, tid);
        self.field(3, |b| push_nanos_as_micros(b, relative_ns));
        self.field(4, |b| push_nanos_as_micros(b, duration_ns.max(0)));
    }

    fn name(&mut self, metadata: &PlaneMetadata, id: i64) {
        let name = metadata.events.get(&id).map(|e| e.shown_name());
        self.field(5, |b| match name {
            Some(name) => push_json_string(b, name),
            None => push_json_string(b, &format!("event metadata {id}")),
        });
    }

    /// The event's own stats as a JSON object (no field when it has none).
    fn args(&mut self, metadata: &PlaneMetadata, event: &EventView<'_>) -> Result<(), XplaneError> {
        let mut stats = event.stats().peekable();
        if stats.peek().is_none() {
            return Ok(());
        }
        // Each key once, the later stat winning (real host events carry
        // `_src` twice), as XProf's own export does.
        let mut args: Vec<(String, Vec<u8>)> = Vec::new();
        for stat in stats {
            let stat = stat?;
            let key = stat_key(metadata, stat.metadata_id).into_owned();
            let mut value = Vec::new();
            // Strings, as XProf's JSON export writes every arg.
            match stat_value(metadata, &stat, &mut self.scratch) {
                AnnotationValue::Bool(b) => {
                    push_json_string(&mut value, if b { "true" } else { "false" })
                }
                AnnotationValue::Int(v) => {
                    push_json_string(&mut value, itoa::Buffer::new().format(v))
                }
                AnnotationValue::Uint(v) => {
                    push_json_string(&mut value, itoa::Buffer::new().format(v))
                }
                AnnotationValue::Double(v) => push_json_string(&mut value, &v.to_string()),
                AnnotationValue::Text(text) => push_json_string(&mut value, text),
            }
            args.retain(|(seen, _)| *seen != key);
            args.push((key, value));
        }
        let start = self.buf.len();
        self.buf.push(b'{');
        for (i, (key, value)) in args.iter().enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            push_json_string(&mut self.buf, key);
            self.buf.push(b':');
            self.buf.extend_from_slice(value);
        }
        self.buf.push(b'}');
        self.fields[6] = Some((start, self.buf.len()));
        Ok(())
    }

    fn event(&self) -> RawEvent<'_> {
        // Every field was written from `&str`s and ASCII.
        let get =
            |i: usize| self.fields[i].and_then(|(a, b)| std::str::from_utf8(&self.buf[a..b]).ok());
        RawEvent {
            ph: get(0),
            pid: get(1),
            tid: get(2),
            ts: get(3),
            dur: get(4),
            name: get(5),
            args: get(6),
            cat: None,
            id: None,
            others: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picoseconds_round_to_the_nearest_nanosecond() {
        assert_eq!(ps_to_ns(1_499), 1);
        assert_eq!(ps_to_ns(1_500), 2);
        assert_eq!(ps_to_ns(-1_500), -1);
        assert_eq!(ps_to_ns(i64::MAX), i64::MAX / 1000 + 1);
        assert_eq!(span_ns(1_500, 1_500), (2, 1), "ends at 3 ns, not 2 + 2");
        assert_eq!(span_ns(1_000, -5), (1, 0));
        assert_eq!(span_ns(i64::MAX, i64::MAX).1, i64::MAX / 1000 + 1);
    }

    #[test]
    fn bytes_show_as_hex_or_their_size() {
        assert_eq!(bytes_text(&[0, 0xab]), "0x00ab");
        assert_eq!(bytes_text(&[1; 40]), "<40 bytes>");
    }
}
