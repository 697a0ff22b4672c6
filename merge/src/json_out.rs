//! One rank as Chrome JSON events: every event streamed through with a
//! unique `pid` per (rank, source process), `ts` on the merged clock
//! (microseconds after the output's origin, so no precision is lost to
//! doubles), and flow/async ids made unique per rank.

use std::io;
use std::ops::ControlFlow;

use rustc_hash::FxHashMap;

use crate::chrome::{raw_text, Element, RawEvent};
use crate::events::{event_span, EventFilter, IdKey, Phase, RankStats};
use crate::json_scan::members;
use crate::number::push_nanos_as_micros;
use crate::output::Stage;
use crate::timebase::RankTime;

/// Text is handed to the stage in pieces of about this size.
const CHUNK: usize = 1 << 20;
/// Output pids: `(ordinal + 1) * PID_STRIDE + k` for the k-th source process.
const PID_STRIDE: u64 = 1000;

/// The first output pid of a rank (its first source process).
pub fn rank_pid(ordinal: u32) -> u64 {
    (u64::from(ordinal) + 1) * PID_STRIDE
}

/// `process_name` and `process_sort_index` for one output pid.
pub fn push_process_metadata(out: &mut Vec<u8>, pid: u64, name: &str, sort_index: u64) {
    let name = serde_json::to_string(name).unwrap_or_else(|_| "\"?\"".into());
    out.extend_from_slice(
        format!(
            r#"{{"ph":"M","pid":{pid},"name":"process_name","args":{{"name":{name}}}}},{{"ph":"M","pid":{pid},"name":"process_sort_index","args":{{"sort_index":{sort_index}}}}}"#
        )
        .as_bytes(),
    );
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

/// Streams one rank's events into `stage`.
pub struct JsonRank<'t> {
    ordinal: u32,
    rank_name: &'t str,
    time: &'t RankTime,
    filter: &'t EventFilter,
    origin_ns: i64,
    pub stats: RankStats,
    pids: FxHashMap<IdKey, u64>,
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

    /// The staged text, once every event is in.
    pub fn finish(mut self) -> io::Result<(Stage, RankStats)> {
        if let Some(error) = self.error {
            return Err(error);
        }
        self.stage.push(&self.buf)?;
        self.stats.dropped.retain(|_, n| *n > 0);
        Ok((self.stage, self.stats))
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
        let name = event.name.map(raw_text).unwrap_or_default();
        let category = event.cat.map(raw_text);
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
        self.write_event(event, phase, pid, start, end);
        self.stats.kept(1, start, end);
    }

    /// The output pid for an event's source process.
    fn pid_of(&mut self, event: &RawEvent<'_>) -> u64 {
        let next = rank_pid(self.ordinal) + self.pids.len() as u64;
        let key = IdKey::from_raw(event.pid);
        let pid = *self.pids.entry(key).or_insert(next);
        if pid == next && pid != rank_pid(self.ordinal) {
            // A second source process: name it after the rank too.
            let mut named = std::mem::take(&mut self.buf);
            named.push(b',');
            push_process_metadata(&mut named, pid, self.rank_name, pid);
            self.buf = named;
        }
        pid
    }

    fn write_metadata(&mut self, event: &RawEvent<'_>, pid: u64) {
        let name = event.name.map(raw_text).unwrap_or_default();
        match name.as_ref() {
            "process_name" => {
                let source = event
                    .args
                    .and_then(|args| members(args).find(|(key, _)| key == "name"))
                    .map(|(_, value)| raw_text(value).into_owned());
                let combined = match source {
                    Some(source) => format!("{} · {source}", self.rank_name),
                    None => self.rank_name.to_string(),
                };
                self.buf.push(b',');
                push_process_metadata(&mut self.buf, pid, &combined, pid);
            }
            // Ours replaces it: ranks stay in merged order.
            "process_sort_index" => {}
            _ => self.write_event(event, Phase::Metadata, pid, 0, 0),
        }
    }

    fn write_event(&mut self, event: &RawEvent<'_>, phase: Phase, pid: u64, start: i64, end: i64) {
        let out = &mut self.buf;
        out.extend_from_slice(b",{\"ph\":");
        match event.ph {
            Some(ph) => out.extend_from_slice(ph.as_bytes()),
            None => out.extend_from_slice(b"\"\""),
        }
        out.extend_from_slice(b",\"pid\":");
        out.extend_from_slice(itoa::Buffer::new().format(pid).as_bytes());
        if phase != Phase::Metadata {
            out.extend_from_slice(b",\"ts\":");
            push_nanos_as_micros(out, start - self.origin_ns);
            if phase == Phase::Complete {
                out.extend_from_slice(b",\"dur\":");
                push_nanos_as_micros(out, end - start);
            }
        }
        let raw_fields = [
            ("tid", event.tid),
            ("name", event.name),
            ("cat", event.cat),
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
        if phase == Phase::Metadata && event.ts.is_some() {
            push_field(out, "ts", event.ts.unwrap_or("0"));
        }
        for (key, value) in &event.others {
            let key = serde_json::to_string(key.as_ref()).unwrap_or_else(|_| "\"?\"".into());
            out.push(b',');
            out.extend_from_slice(key.as_bytes());
            out.push(b':');
            out.extend_from_slice(value.as_bytes());
        }
        out.push(b'}');
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
        _ => serde_json::to_string(&format!("r{ordinal}:{}", raw_text(id)))
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
