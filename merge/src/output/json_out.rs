//! One rank as Chrome JSON events: every event streamed through with a
//! unique `pid` per (rank, source process), `ts` on the merged clock
//! (microseconds after the output's origin, so no precision is lost to
//! doubles), and flow/async ids made unique per rank.
//!
//! Slices that overlap on a thread without nesting cannot be drawn there
//! (Perfetto counts each as an import error), so they are moved to a sibling
//! thread (`<thread> (overlap N)`) the way the `.pftrace` writer places them
//! on lanes: once every event of the rank was seen, the `tid`s of the moved
//! events are edited in the staged text.

use std::cmp::Reverse;
use std::io;
use std::ops::ControlFlow;

use rustc_hash::FxHashMap;

use crate::events::{event_span, EventFilter, IdKey, Phase, RankStats};
use crate::input::chrome::{Element, RawEvent};
use crate::input::json_scan::{members, RawText};
use crate::input::number::push_nanos_as_micros;
use crate::output::packets::Lanes;
use crate::output::sink::{Edit, Stage};
use crate::time::timebase::RankTime;

/// Text is handed to the stage in pieces of about this size.
const CHUNK: usize = 1 << 20;
/// Output pids: `(ordinal + 1) * PID_STRIDE + k` for the k-th source process.
const PID_STRIDE: u64 = 1000;

/// The first output pid of a rank (its first source process).
pub fn rank_pid(ordinal: u32) -> u64 {
    (u64::from(ordinal) + 1) * PID_STRIDE
}

/// `process_sort_index` for one output pid (its place among the ranks).
pub fn push_sort_index(out: &mut Vec<u8>, pid: u64) {
    out.extend_from_slice(
        format!(
            r#"{{"ph":"M","pid":{pid},"name":"process_sort_index","args":{{"sort_index":{pid}}}}}"#
        )
        .as_bytes(),
    );
}

/// A `process_name` or `thread_name` record.
fn push_name(out: &mut Vec<u8>, what: &str, pid: u64, tid: Option<i64>, name: &str) {
    out.extend_from_slice(format!(r#",{{"ph":"M","pid":{pid}"#).as_bytes());
    if let Some(tid) = tid {
        out.extend_from_slice(format!(r#","tid":{tid}"#).as_bytes());
    }
    out.extend_from_slice(format!(r#","name":"{what}","args":{{"name":"#).as_bytes());
    push_json_string(out, name);
    out.extend_from_slice(b"}}");
}

/// Appends `text` as a JSON string literal.
pub fn push_json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut plain = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain..i]);
        if escape.is_empty() {
            out.extend_from_slice(format!("\\u{byte:04x}").as_bytes());
        } else {
            out.extend_from_slice(escape);
        }
        plain = i + 1;
    }
    out.extend_from_slice(&bytes[plain..]);
    out.push(b'"');
}

/// Where an event's `tid` value sits in the rank's text (`len` bytes at
/// `at`); for an event without one, where a `tid` field would go.
#[derive(Clone, Copy)]
struct TidSite {
    at: u64,
    len: u32,
    present: bool,
}

impl TidSite {
    /// The edit that moves the event to thread `tid`.
    fn edit(self, tid: i64) -> Edit {
        let insert = if self.present {
            tid.to_string()
        } else {
            format!(",\"tid\":{tid}")
        };
        Edit {
            at: self.at,
            remove: u64::from(self.len),
            insert: insert.into_bytes(),
        }
    }
}

/// A slice of the output (an `X`, or a `B` with its `E`) on a thread.
struct Placed {
    start: i64,
    end: i64,
    thread: u32,
    site: TidSite,
    /// The `E`'s site, for a `B`/`E` pair.
    end_site: Option<TidSite>,
}

/// An output thread: a `tid` of an output pid.
struct OutThread {
    pid: u64,
    tid: IdKey,
    name: Option<String>,
}

/// Streams one rank's events into `stage`.
pub struct JsonRank<'t> {
    ordinal: u32,
    rank_name: &'t str,
    time: &'t RankTime,
    filter: &'t EventFilter,
    origin_ns: i64,
    pub stats: RankStats,
    pids: FxHashMap<IdKey, u64>,
    /// Each output pid (first seen first) and its source process's name.
    processes: Vec<(u64, Option<String>)>,
    threads: Vec<OutThread>,
    thread_ids: FxHashMap<(u64, IdKey), u32>,
    placed: Vec<Placed>,
    /// `B`s waiting for their `E`, per thread.
    open: FxHashMap<u32, Vec<(i64, TidSite)>>,
    buf: Vec<u8>,
    stage: Stage,
    error: Option<io::Error>,
}

impl<'t> JsonRank<'t> {
    pub fn new(
        ordinal: u32,
        rank_name: &'t str,
        time: &'t RankTime,
        filter: &'t EventFilter,
        origin_ns: i64,
        stage: Stage,
    ) -> Self {
        JsonRank {
            ordinal,
            rank_name,
            time,
            filter,
            origin_ns,
            stats: RankStats::default(),
            pids: FxHashMap::default(),
            processes: Vec::new(),
            threads: Vec::new(),
            thread_ids: FxHashMap::default(),
            placed: Vec::new(),
            open: FxHashMap::default(),
            buf: Vec::with_capacity(CHUNK + (64 << 10)),
            stage,
            error: None,
        }
    }

    pub fn ingest(&mut self, element: Element<'_, '_>) -> ControlFlow<()> {
        if let Some(event) = self.stats.admit(element) {
            self.event(event);
        }
        if self.buf.len() >= CHUNK {
            if let Err(e) = self.stage.push(&self.buf) {
                self.error = Some(e);
                return ControlFlow::Break(());
            }
            self.buf.clear();
        }
        ControlFlow::Continue(())
    }

    /// The staged text and the edits that spill overlapping slices, once
    /// every event is in.
    pub fn finish(mut self) -> io::Result<(Stage, Vec<Edit>, RankStats)> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let edits = self.spill_overlaps();
        self.push_process_names();
        self.stage.push(&self.buf)?;
        self.stats.dropped.retain(|_, n| *n > 0);
        Ok((self.stage, edits, self.stats))
    }

    fn event(&mut self, event: &RawEvent<'_>) {
        let phase = Phase::of(event.phase());
        if phase == Phase::Metadata {
            self.stats.metadata += 1;
            let pid = self.pid_of(event);
            return self.write_metadata(event, pid);
        }
        if phase == Phase::Complete {
            self.stats.complete_events += 1;
        }
        let (start, end) = match event_span(event, self.time, phase == Phase::Complete) {
            Ok(span) => span,
            Err(why) => return self.stats.drop_events(why, 1),
        };
        let name = event.name.map(RawText::text).unwrap_or_default();
        let category = event.cat.map(RawText::text);
        if let Err(why) = self.filter.check(
            &name,
            category.as_deref(),
            start,
            end,
            phase == Phase::Complete,
        ) {
            return self.stats.drop_events(why, 1);
        }
        let pid = self.pid_of(event);
        let site = self.write_event(event, phase, pid, start, end);
        self.stats.kept(1, start, end);
        if matches!(phase, Phase::Complete | Phase::Begin | Phase::End) {
            let thread = self.thread_of(pid, event.tid);
            self.place(phase, thread, start, end, site);
        }
    }

    /// Notes a slice for [`spill_overlaps`](Self::spill_overlaps): an `X`
    /// at once, a `B` when its `E` comes.
    fn place(&mut self, phase: Phase, thread: u32, start: i64, end: i64, site: TidSite) {
        let (start, end, site, end_site) = match phase {
            Phase::Begin => return self.open.entry(thread).or_default().push((start, site)),
            Phase::End => match self.open.get_mut(&thread).and_then(Vec::pop) {
                Some((begun, begin_site)) => (begun, start.max(begun), begin_site, Some(site)),
                None => return,
            },
            _ => (start, end, site, None),
        };
        self.placed.push(Placed {
            start,
            end,
            thread,
            site,
            end_site,
        });
    }

    /// Places the rank's slices on lanes where they nest strictly (as the
    /// `.pftrace` writer does) and moves those off a thread's first lane to
    /// a sibling thread, named after it; returns the `tid` edits.
    fn spill_overlaps(&mut self) -> Vec<Edit> {
        self.placed
            .sort_unstable_by_key(|p| (p.start, Reverse(p.end), p.thread));
        let mut lanes: Vec<Lanes> = (0..self.threads.len()).map(|_| Lanes::default()).collect();
        let mut spill_tids: FxHashMap<(u32, u32), i64> = FxHashMap::default();
        let mut next_tid: FxHashMap<u64, i64> = FxHashMap::default();
        let mut edits = Vec::new();
        for placed in &self.placed {
            let (lane, _) = lanes[placed.thread as usize].place(placed.start, placed.end);
            if lane == 0 {
                continue;
            }
            let thread = &self.threads[placed.thread as usize];
            let tid = *spill_tids.entry((placed.thread, lane)).or_insert_with(|| {
                let next = next_tid.entry(thread.pid).or_insert_with(|| {
                    let highest = self
                        .threads
                        .iter()
                        .filter(|t| t.pid == thread.pid)
                        .filter_map(|t| match t.tid {
                            IdKey::Num(n) => Some(n),
                            IdKey::Text(_) => None,
                        })
                        .max();
                    highest.unwrap_or(0).saturating_add(1)
                });
                let tid = *next;
                *next = next.saturating_add(1);
                let name = match &thread.name {
                    Some(name) => format!("{name} (overlap {lane})"),
                    None => format!("tid {} (overlap {lane})", thread.tid.describe()),
                };
                push_name(&mut self.buf, "thread_name", thread.pid, Some(tid), &name);
                tid
            });
            edits.push(placed.site.edit(tid));
            edits.extend(placed.end_site.map(|site| site.edit(tid)));
        }
        edits.sort_unstable_by_key(|edit| edit.at);
        edits
    }

    /// One `process_name` per output pid: the rank's name, with its source
    /// process's name when it had one.
    fn push_process_names(&mut self) {
        let first = rank_pid(self.ordinal);
        if !self.processes.iter().any(|(pid, _)| *pid == first) {
            self.processes.insert(0, (first, None));
        }
        for (pid, source) in &self.processes {
            let name = match source {
                Some(source) => format!("{} · {source}", self.rank_name),
                None => self.rank_name.to_string(),
            };
            push_name(&mut self.buf, "process_name", *pid, None, &name);
        }
    }

    /// The output pid for an event's source process.
    fn pid_of(&mut self, event: &RawEvent<'_>) -> u64 {
        let next = rank_pid(self.ordinal) + self.pids.len() as u64;
        let key = IdKey::from_raw(event.pid);
        let pid = *self.pids.entry(key).or_insert(next);
        if pid == next {
            self.processes.push((pid, None));
            if pid != rank_pid(self.ordinal) {
                // A second source process: after the rank's first, in order.
                self.buf.push(b',');
                push_sort_index(&mut self.buf, pid);
            }
        }
        pid
    }

    /// The output thread of `tid` in output process `pid`.
    fn thread_of(&mut self, pid: u64, tid: Option<&str>) -> u32 {
        let key = (pid, IdKey::from_raw(tid));
        if let Some(&index) = self.thread_ids.get(&key) {
            return index;
        }
        let index = self.threads.len() as u32;
        self.threads.push(OutThread {
            pid,
            tid: key.1.clone(),
            name: None,
        });
        self.thread_ids.insert(key, index);
        index
    }

    fn write_metadata(&mut self, event: &RawEvent<'_>, pid: u64) {
        let name = event.name.map(RawText::text).unwrap_or_default();
        let source_name = || {
            event
                .args
                .and_then(|args| members(args).find(|(key, _)| key == "name"))
                .map(|(_, value)| value.text().into_owned())
        };
        match name.as_ref() {
            // Written once per pid, by `push_process_names`.
            "process_name" => {
                let source = source_name();
                if let Some(process) = self.processes.iter_mut().find(|(p, _)| *p == pid) {
                    process.1 = source;
                }
            }
            // Ours replaces it: ranks stay in merged order.
            "process_sort_index" => {}
            "thread_name" => {
                let thread = self.thread_of(pid, event.tid);
                self.threads[thread as usize].name = source_name();
                self.write_event(event, Phase::Metadata, pid, 0, 0);
            }
            _ => {
                self.write_event(event, Phase::Metadata, pid, 0, 0);
            }
        }
    }

    /// Writes one event; says where its `tid` is.
    fn write_event(
        &mut self,
        event: &RawEvent<'_>,
        phase: Phase,
        pid: u64,
        start: i64,
        end: i64,
    ) -> TidSite {
        let staged = self.stage.written();
        let out = &mut self.buf;
        out.extend_from_slice(b",{\"ph\":");
        match event.ph {
            Some(ph) => out.extend_from_slice(ph.as_bytes()),
            None => out.extend_from_slice(b"\"\""),
        }
        out.extend_from_slice(b",\"pid\":");
        out.extend_from_slice(itoa::Buffer::new().format(pid).as_bytes());
        let mut site = TidSite {
            at: staged + out.len() as u64,
            len: 0,
            present: false,
        };
        if phase != Phase::Metadata {
            out.extend_from_slice(b",\"ts\":");
            push_nanos_as_micros(out, start - self.origin_ns);
            if phase == Phase::Complete {
                out.extend_from_slice(b",\"dur\":");
                push_nanos_as_micros(out, end - start);
            }
        }
        if let Some(tid) = event.tid {
            push_field(out, "tid", tid);
            site = TidSite {
                at: staged + (out.len() - tid.len()) as u64,
                len: tid.len() as u32,
                present: true,
            };
        }
        let raw_fields = [
            ("name", event.name.map(|name| name.raw)),
            ("cat", event.cat.map(|cat| cat.raw)),
            ("args", event.args),
        ];
        for (key, value) in raw_fields {
            if let Some(value) = value {
                push_field(out, key, value);
            }
        }
        if let Some(id) = event.id {
            let unique = unique_id(self.ordinal, id);
            push_field(out, "id", &unique);
        }
        if let Some(ts) = event.ts.filter(|_| phase == Phase::Metadata) {
            push_field(out, "ts", ts.raw);
        }
        for (key, value) in &event.others {
            let key = serde_json::to_string(key.as_ref()).unwrap_or_else(|_| "\"?\"".into());
            out.push(b',');
            out.extend_from_slice(key.as_bytes());
            out.push(b':');
            out.extend_from_slice(value.as_bytes());
        }
        out.push(b'}');
        site
    }
}

fn push_field(out: &mut Vec<u8>, key: &str, raw: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    out.extend_from_slice(raw.as_bytes());
}

/// Flow and async ids are per process in the input; in the merged file they
/// must not join events of different ranks.
fn unique_id(ordinal: u32, id: &str) -> String {
    match id.parse::<u64>() {
        // Keep them numbers (and below 2^53, exact in a double).
        Ok(n) if n < 1 << 40 && ordinal < 1 << 12 => {
            ((u64::from(ordinal) + 1) << 40 | n).to_string()
        }
        _ => serde_json::to_string(&format!("r{ordinal}:{}", RawText::of(id).text()))
            .unwrap_or_else(|_| id.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        let mut out = Vec::new();
        push_json_string(&mut out, "a\"b\\c\nd\u{1}é");
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            serde_json::from_str::<String>(&text).unwrap(),
            "a\"b\\c\nd\u{1}é"
        );
    }

    #[test]
    fn ids_become_unique_per_rank() {
        assert_eq!(unique_id(0, "5"), (1u64 << 40 | 5).to_string());
        assert_ne!(unique_id(0, "5"), unique_id(1, "5"));
        assert_eq!(unique_id(2, "\"0x1f\""), "\"r2:0x1f\"");
    }
}
