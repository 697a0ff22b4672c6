//! One rank's `.xplane.pb` as a Perfetto packet sequence, its lines
//! converted in parallel (each line its own sequence).
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

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use rankline_xplane::{
    line_start_unix_ns, ByteRange, EventKind, EventView, LineView, PlaneIndex, PlaneMetadata,
    StatValue, StatView, XSpaceFile, XplaneError,
};
use rustc_hash::FxHashMap;

use crate::error::InputError;
use crate::events::{reason, EventFilter, RankStats, XplaneCounts};
use crate::input::xplane::{
    span_ns, stat_key, stat_value, xplane_problem, LineError, OpenXplane, XplaneFailure,
    XplaneSource, HOST_PLANE, LONG_NAME,
};
use crate::output::packets::{
    rank_pid, synthetic_tid, AnnotationValue, Annotations, Interner, Lanes, OpenSlices,
    PacketWriter, SequenceInfo, TrackSpec, Uuids,
};
use crate::output::proto::{interned, track_event};
use crate::output::sink::ChunkSink;
use crate::time::timebase::RankTime;

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

/// An event ready to write: its span and where it is in the line.
#[derive(Clone, Copy)]
struct Placed {
    start: i64,
    end: i64,
    offset: u32,
}

/// One plane with lines, as each of its lines sees it.
struct PlaneTracks {
    /// Among the planes with lines.
    position: u64,
    host: bool,
    name: String,
    /// The plane's track (device planes), once a line needed it.
    track: Mutex<Option<u64>>,
}

/// One line to convert: where it is and what it belongs to.
#[derive(Clone, Copy)]
struct LineJob {
    /// Index into the planes with lines.
    plane: usize,
    /// Among its plane's lines.
    position: u64,
    /// Among all the lines of the file.
    ordinal: u32,
    range: ByteRange,
}

/// The file and what is loaded from it, shared by a rank's line workers:
/// each takes the next line in file order, loads it and converts it on its
/// own, so at most one line per worker is in memory.
struct LineQueue {
    file: XSpaceFile<Box<dyn XplaneSource>>,
    /// The planes with lines.
    planes: Vec<PlaneIndex>,
    jobs: Vec<LineJob>,
    next: usize,
    /// The metadata of the planes being converted, dropped when a plane's
    /// last line is done: at most one plane per worker.
    metadata: Vec<Option<Arc<PlaneMetadata>>>,
    lines_left: Vec<usize>,
}

impl LineQueue {
    /// The next line, loaded into `buf`, with its plane's metadata.
    fn take(
        &mut self,
        buf: &mut Vec<u8>,
    ) -> Result<Option<(LineJob, Arc<PlaneMetadata>)>, XplaneError> {
        let Some(&job) = self.jobs.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        let metadata = match &self.metadata[job.plane] {
            Some(metadata) => Arc::clone(metadata),
            None => {
                let metadata = Arc::new(self.file.read_metadata(&self.planes[job.plane])?);
                self.metadata[job.plane] = Some(Arc::clone(&metadata));
                metadata
            }
        };
        self.file.read_line(job.range, buf)?;
        Ok(Some((job, metadata)))
    }

    /// Notes a line of plane `plane` done.
    fn done(&mut self, plane: usize) {
        self.lines_left[plane] -= 1;
        if self.lines_left[plane] == 0 {
            self.metadata[plane] = None;
        }
    }
}

/// What every line of a rank shares.
struct RankContext<'a> {
    time: &'a RankTime,
    filter: &'a EventFilter,
    session_start_ns: i64,
    ordinal: u32,
    ranks: u32,
    uuids: Uuids,
    planes: Vec<PlaneTracks>,
    /// Track numbers: each plane's, then each line's first lane, then
    /// overlap lanes as lines find they need them.
    next_overlap_track: AtomicU32,
    sink: &'a dyn ChunkSink,
    cancelled: &'a (dyn Fn() -> bool + Sync),
    /// Set when a worker failed: the others stop.
    failed: AtomicBool,
}

impl RankContext<'_> {
    fn stopped(&self) -> bool {
        self.failed.load(Ordering::Relaxed) || (self.cancelled)()
    }
}

/// The packet sequence id of line `line` of rank `ordinal` of `ranks`:
/// past every rank's own sequence (`1..=ranks`), one block of `ranks` ids
/// per line position, so ids stay small (most fit a one- or two-byte
/// varint in every packet). `None` past `u32::MAX`.
fn line_sequence(ordinal: u32, ranks: u32, line: u32) -> Option<u64> {
    let id = u64::from(ordinal) + 1 + u64::from(ranks.max(ordinal + 1)) * (u64::from(line) + 1);
    (id <= u64::from(u32::MAX)).then_some(id)
}

/// Writes one rank's xplane: the rank's process track as packet sequence
/// `ordinal + 1`, each line as a packet sequence of its own (interned
/// names and all), converted by as many workers at once as the current
/// thread pool has threads.
pub fn write_pftrace(
    xplane: OpenXplane,
    time: &RankTime,
    filter: &EventFilter,
    info: &SequenceInfo<'_>,
    sink: &dyn ChunkSink,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<RankStats, XplaneFailure> {
    let OpenXplane {
        file,
        index,
        session_start_ns,
        display,
    } = xplane;
    let failure = |error: XplaneError| {
        XplaneFailure::Input(InputError::new(display.clone(), xplane_problem(error)))
    };
    let planes: Vec<PlaneIndex> = index
        .planes
        .into_iter()
        .filter(|p| !p.lines.is_empty())
        .collect();
    let mut jobs = Vec::new();
    for (plane, index) in planes.iter().enumerate() {
        for (position, &range) in index.lines.iter().enumerate() {
            jobs.push(LineJob {
                plane,
                position: position as u64,
                ordinal: jobs.len() as u32,
                range,
            });
        }
    }
    if let Some(last) = jobs.last() {
        line_sequence(info.ordinal, info.ranks, last.ordinal).ok_or_else(|| {
            failure(XplaneError::Malformed(format!(
                "{} lines in one of {} ranks: more packet sequences than a trace can number; \
                 merge fewer ranks at once",
                jobs.len(),
                info.ranks
            )))
        })?;
    }
    let lines = jobs.len() as u32;
    let planned_tracks = planes.len() + jobs.len() + 64;
    let rank = RankContext {
        time,
        filter,
        session_start_ns,
        ordinal: info.ordinal,
        ranks: info.ranks,
        uuids: Uuids::new(info.ordinal, planned_tracks),
        planes: planes
            .iter()
            .enumerate()
            .map(|(position, plane)| PlaneTracks {
                position: position as u64,
                host: plane.name == HOST_PLANE,
                name: plane
                    .name
                    .strip_prefix("/device:")
                    .unwrap_or(&plane.name)
                    .to_string(),
                track: Mutex::new(None),
            })
            .collect(),
        next_overlap_track: AtomicU32::new(planes.len() as u32 + lines),
        sink,
        cancelled,
        failed: AtomicBool::new(false),
    };
    let mut head = PacketWriter::new(Vec::new(), sink, info);
    head.interned([]).map_err(XplaneFailure::Output)?;
    head.process_descriptor(info, rank.uuids)
        .map_err(XplaneFailure::Output)?;
    head.flush().map_err(XplaneFailure::Output)?;
    drop(head);

    let counts = XplaneCounts {
        planes: planes.len() as u64,
        lines: u64::from(lines),
        ..XplaneCounts::default()
    };
    let lines_left = planes.iter().map(|p| p.lines.len()).collect();
    let queue = Mutex::new(LineQueue {
        metadata: vec![None; planes.len()],
        file,
        planes,
        jobs,
        next: 0,
        lines_left,
    });
    let workers = rayon::current_num_threads().clamp(1, lines.max(1) as usize);
    let results: Mutex<Vec<Result<RankStats, XplaneFailure>>> = Mutex::new(Vec::new());
    let work = || {
        let result = line_worker(&rank, &queue, &failure);
        if result.is_err() {
            rank.failed.store(true, Ordering::Relaxed);
        }
        lock(&results).push(result);
    };
    rayon::scope(|scope| {
        for _ in 1..workers {
            scope.spawn(|_| work());
        }
        work();
    });
    let mut stats = RankStats::default();
    let mut first_failure = None;
    for result in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
        match result {
            Ok(part) => absorb(&mut stats, part),
            // A worker that stopped because another failed says so.
            Err(XplaneFailure::Cancelled) if first_failure.is_some() => {}
            Err(failure) => {
                if !matches!(
                    first_failure,
                    Some(XplaneFailure::Input(_) | XplaneFailure::Output(_))
                ) {
                    first_failure = Some(failure);
                }
            }
        }
    }
    if let Some(failure) = first_failure {
        return Err(failure);
    }
    let queue = queue.into_inner().unwrap_or_else(|e| e.into_inner());
    stats.xplane = Some(XplaneCounts {
        events: stats.events_in,
        aggregated: stats.dropped.get(reason::AGGREGATED).copied().unwrap_or(0),
        ..counts
    });
    stats.bytes_read = queue.file.bytes_read();
    stats.dropped.retain(|_, n| *n > 0);
    Ok(stats)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Adds one worker's counts to the rank's.
fn absorb(stats: &mut RankStats, part: RankStats) {
    stats.events_in += part.events_in;
    stats.events_out += part.events_out;
    stats.metadata += part.metadata;
    stats.complete_events += part.complete_events;
    for (why, n) in part.dropped {
        *stats.dropped.entry(why).or_default() += n;
    }
    stats.first_ns = stats.first_ns.into_iter().chain(part.first_ns).min();
    stats.last_ns = stats.last_ns.into_iter().chain(part.last_ns).max();
}

/// Converts lines from `queue` until none is left; the counts of those it
/// converted.
fn line_worker(
    rank: &RankContext<'_>,
    queue: &Mutex<LineQueue>,
    failure: &dyn Fn(XplaneError) -> XplaneFailure,
) -> Result<RankStats, XplaneFailure> {
    let mut buf = Vec::new();
    let mut writer = Writer::new(rank);
    loop {
        if rank.stopped() {
            return Err(XplaneFailure::Cancelled);
        }
        let Some((job, metadata)) = lock(queue).take(&mut buf).map_err(failure)? else {
            break;
        };
        let line = LineView::parse(&buf, job.range.start).map_err(failure)?;
        writer.line(job, &metadata, &line).map_err(|e| match e {
            LineError::Input(e) => failure(e),
            LineError::Output(e) => XplaneFailure::Output(e),
            LineError::Stopped => XplaneFailure::Cancelled,
        })?;
        lock(queue).done(job.plane);
    }
    Ok(writer.stats)
}

/// One worker's converter. Its buffers are kept from line to line; its
/// interned strings and what it decided per metadata id are the current
/// line's sequence's, so they start over with each line.
struct Writer<'a> {
    rank: &'a RankContext<'a>,
    /// The output buffer, between lines.
    buf: Vec<u8>,
    stats: RankStats,
    /// One event's annotations.
    args: Vec<u8>,
    /// The iids of the stat names of the event being written.
    own_keys: Vec<u32>,
    /// An out-of-order line's events, sorted.
    placed: Vec<Placed>,
}

/// The state of one line's packet sequence.
struct LineState<'a, 'm> {
    out: PacketWriter<'a>,
    plane: &'a PlaneTracks,
    metadata: &'m PlaneMetadata,
    time: LineTime<'a>,
    strings: Strings,
    events: FxHashMap<i64, EventName>,
    /// Stat metadata id to its name's iid.
    stat_keys: FxHashMap<i64, u32>,
    /// `ref_value` to its name's iid (`None`: written inline).
    ref_values: FxHashMap<u64, Option<u32>>,
    tracks: LineTracks,
}

impl<'a> Writer<'a> {
    fn new(rank: &'a RankContext<'a>) -> Self {
        Writer {
            rank,
            buf: Vec::new(),
            stats: RankStats::default(),
            args: Vec::new(),
            own_keys: Vec::new(),
            placed: Vec::new(),
        }
    }

    /// Converts one line, as a packet sequence of its own.
    fn line(
        &mut self,
        job: LineJob,
        metadata: &PlaneMetadata,
        line: &LineView<'_>,
    ) -> Result<(), LineError> {
        let rank = self.rank;
        let sequence = line_sequence(rank.ordinal, rank.ranks, job.ordinal)
            .expect("write_pftrace checked every line's sequence");
        let mut state = LineState {
            out: PacketWriter::with_sequence(std::mem::take(&mut self.buf), rank.sink, sequence),
            plane: &rank.planes[job.plane],
            metadata,
            time: LineTime {
                time: rank.time,
                start_ns: line_start_unix_ns(line.timestamp_ns, rank.session_start_ns),
            },
            strings: Strings::default(),
            events: FxHashMap::default(),
            stat_keys: FxHashMap::default(),
            ref_values: FxHashMap::default(),
            tracks: LineTracks {
                name: line.shown_name().to_string(),
                position: job.position,
                first_track: rank.planes.len() as u32 + job.ordinal,
                lanes: Lanes::default(),
                uuids: Vec::new(),
            },
        };
        let written = self.write_line(&mut state, line);
        self.buf = std::mem::take(&mut state.out.buf);
        self.buf.clear();
        written
    }

    fn write_line(
        &mut self,
        state: &mut LineState<'_, '_>,
        line: &LineView<'_>,
    ) -> Result<(), LineError> {
        let in_order = self.prepare(state, line)?;
        // The sequence's first packet (it clears the incremental state),
        // with the names of the line's events.
        let fresh = std::mem::take(&mut state.strings.fresh);
        state.out.interned(
            fresh
                .iter()
                .map(|(field, iid, text)| (*field, *iid, &**text)),
        )?;
        let mut open = OpenSlices::default();
        if in_order {
            for event in line.events() {
                let (_, event) = event?;
                if let Some((start, end)) = self.admit(state, &event) {
                    self.write_event(state, &mut open, &event, start, end)?;
                }
            }
        } else {
            let mut placed = std::mem::take(&mut self.placed);
            placed.clear();
            for event in line.events() {
                let (offset, event) = event?;
                if let Some((start, end)) = self.admit(state, &event) {
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
                self.write_event(state, &mut open, &event, p.start, p.end)?;
            }
            self.placed = placed;
        }
        open.close_until(i64::MAX, &mut state.out)?;
        state.out.flush()?;
        Ok(())
    }

    /// The first pass over a line: interns the names of its kept events
    /// (written in the line's first packet), and says whether they are in
    /// start order (longest first on a tie). Stats are interned as the
    /// second pass writes them: parsing them twice would cost more than the
    /// few small interned-data packets that saves.
    fn prepare(
        &mut self,
        state: &mut LineState<'_, '_>,
        line: &LineView<'_>,
    ) -> Result<bool, LineError> {
        let mut previous = (i64::MIN, Reverse(i64::MAX));
        let mut in_order = true;
        for event in line.events() {
            let (_, event) = event?;
            let Ok((start, end)) = state.time.span(&event) else {
                continue;
            };
            let python = state.event_name(event.metadata_id)?.python;
            if self.filtered(python, start, end).is_err() {
                continue;
            }
            let key = (start, Reverse(end));
            in_order &= key >= previous;
            previous = key;
        }
        Ok(in_order)
    }

    /// What the filters say about an event from `start` to `end`.
    fn filtered(&self, python: bool, start: i64, end: i64) -> Result<(), &'static str> {
        // The name only matters to the Python filter.
        let label = if python { "$" } else { "" };
        self.rank.filter.check(label, None, start, end, true)
    }

    /// Counts an event and decides whether it is kept; its span if so.
    fn admit(&mut self, state: &LineState<'_, '_>, event: &EventView<'_>) -> Option<(i64, i64)> {
        self.stats.events_in += 1;
        if matches!(event.kind, EventKind::Span { .. }) {
            self.stats.complete_events += 1;
        }
        let kept = state.time.span(event).and_then(|(start, end)| {
            // The first pass looked every span's name up.
            let python = state
                .events
                .get(&event.metadata_id)
                .is_some_and(|name| name.python);
            self.filtered(python, start, end).map(|()| (start, end))
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

    fn write_event(
        &mut self,
        state: &mut LineState<'_, '_>,
        open: &mut OpenSlices,
        event: &EventView<'_>,
        start: i64,
        end: i64,
    ) -> Result<(), LineError> {
        open.close_until(start, &mut state.out)?;
        let (lane, new) = state.tracks.lanes.place(start, end);
        if new {
            let uuid = self.new_lane_track(state, lane)?;
            state.tracks.uuids.push(uuid);
        }
        let uuid = state.tracks.uuids[lane as usize];
        self.args.clear();
        let mut own_keys = std::mem::take(&mut self.own_keys);
        own_keys.clear();
        let mut text = String::new();
        for stat in event.stats() {
            let stat = stat?;
            let (key_iid, value, text_iid) = state.interned_stat(&stat, &mut text);
            drop_earlier(&mut self.args, &mut own_keys, key_iid);
            state
                .strings
                .annotations
                .put_interned(&mut self.args, key_iid, value, text_iid);
            own_keys.push(key_iid);
        }
        let name = state.event_name(event.metadata_id)?;
        if own_keys.iter().any(|key| name.extra_keys.contains(key)) {
            append_without(&mut self.args, &name.extra, &name.extra_keys, &own_keys);
        } else {
            self.args.extend_from_slice(&name.extra);
        }
        self.own_keys = own_keys;
        let name_iid = name.iid;
        // Strings first seen here (the first pass interns nearly all) must
        // precede the event that uses them.
        state.write_fresh()?;
        state.out.begin(
            track_event::SLICE_BEGIN,
            start,
            uuid,
            name_iid,
            0,
            &self.args,
        );
        open.push(end, uuid);
        state.out.maybe_flush()?;
        Ok(())
    }

    /// The track of lane `lane` of a line, described before its first event.
    fn new_lane_track(&self, state: &mut LineState<'_, '_>, lane: u32) -> io::Result<u64> {
        let rank = self.rank;
        let plane = state.plane;
        let parent = if plane.host {
            rank.uuids.process
        } else {
            let mut track = lock(&plane.track);
            match *track {
                Some(uuid) => uuid,
                None => {
                    let uuid = rank.uuids.track(plane.position as u32);
                    state.out.track_descriptor(&TrackSpec {
                        uuid,
                        parent: rank.uuids.process,
                        name: &plane.name,
                        thread: None,
                        order: plane.position << 20,
                        ordered_children: true,
                    })?;
                    *track = Some(uuid);
                    uuid
                }
            }
        };
        let line = &state.tracks;
        let line_order = line.position.min(1023) << 10 | u64::from(lane.min(1023));
        let order = if plane.host {
            plane.position << 20 | line_order
        } else {
            line_order
        };
        let thread = match (plane.host, lane) {
            (true, 0) => u32::try_from(line.position)
                .ok()
                .and_then(|position| synthetic_tid(rank.ordinal, position))
                .map(|tid| (rank_pid(rank.ordinal), tid)),
            _ => None,
        };
        let name = match lane {
            0 => line.name.clone(),
            n => format!("{} (overlap {n})", line.name),
        };
        let number = match lane {
            0 => line.first_track,
            _ => rank.next_overlap_track.fetch_add(1, Ordering::Relaxed),
        };
        let uuid = rank.uuids.track(number);
        state.out.track_descriptor(&TrackSpec {
            uuid,
            parent,
            name: &name,
            thread,
            order,
            ordered_children: false,
        })?;
        Ok(uuid)
    }
}

/// The strings a line's sequence interned.
#[derive(Default)]
struct Strings {
    names: Interner,
    annotations: Annotations,
    /// Strings interned since the last interned-data packet.
    fresh: Vec<(u32, u32, Box<str>)>,
}

impl<'m> LineState<'_, 'm> {
    /// Writes the strings interned since the last time, if any.
    fn write_fresh(&mut self) -> io::Result<()> {
        if self.strings.fresh.is_empty() {
            return Ok(());
        }
        let fresh = std::mem::take(&mut self.strings.fresh);
        self.out.interned(
            fresh
                .iter()
                .map(|(field, iid, text)| (*field, *iid, &**text)),
        )
    }

    /// What an event metadata id becomes (decided the first time).
    fn event_name(&mut self, id: i64) -> Result<&EventName, XplaneError> {
        Ok(match self.events.entry(id) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(slot) => slot.insert(self.strings.event_name(self.metadata, id)?),
        })
    }

    /// A stat as an annotation, its strings interned: (name iid, value,
    /// value iid for a string). Names and `ref_value`s are looked up once
    /// per line.
    fn interned_stat<'s>(
        &mut self,
        stat: &StatView<'s>,
        scratch: &'s mut String,
    ) -> (u32, AnnotationValue<'s>, Option<u32>)
    where
        'm: 's,
    {
        let metadata: &'s PlaneMetadata = self.metadata;
        let Strings {
            annotations, fresh, ..
        } = &mut self.strings;
        let mut remember = |field: u32, iid: u32, text: &str| fresh.push((field, iid, text.into()));
        let key_iid = *self.stat_keys.entry(stat.metadata_id).or_insert_with(|| {
            annotations.key_iid(&stat_key(metadata, stat.metadata_id), &mut remember)
        });
        if let StatValue::Ref(id) = stat.value {
            if let Some(&Some(iid)) = self.ref_values.get(&id) {
                // Interned already: the iid stands for the name.
                return (key_iid, AnnotationValue::Text(""), Some(iid));
            }
        }
        let value = stat_value(metadata, stat, scratch);
        let text_iid = match (stat.value, value) {
            (StatValue::Ref(id), AnnotationValue::Text(name)) => *self
                .ref_values
                .entry(id)
                .or_insert_with(|| annotations.text_iid(name, &mut remember)),
            (_, AnnotationValue::Text(text)) => annotations.text_iid(text, &mut remember),
            _ => None,
        };
        (key_iid, value, text_iid)
    }
}

impl Strings {
    fn event_name(&mut self, metadata: &PlaneMetadata, id: i64) -> Result<EventName, XplaneError> {
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
}

/// The tracks of one line: a lane each.
struct LineTracks {
    name: String,
    position: u64,
    /// The track number of its first lane.
    first_track: u32,
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
