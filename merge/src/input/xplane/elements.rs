//! A rank's `.xplane.pb` handed out as Chrome trace elements
//! ([`for_each_element`]), for the consumers that read those (JSON output,
//! the collective alignment, `rankline report`).

use std::ops::ControlFlow;

use rankline_xplane::{line_start_unix_ns, EventKind, EventView, PlaneMetadata, XplaneError};

use crate::events::XplaneCounts;
use crate::input::chrome::{Element, Micros, RawEvent};
use crate::input::json_scan::RawText;
use crate::input::number::push_nanos_as_micros;
use crate::input::xplane::{span_ns, stat_key, stat_value, LineError, OpenXplane, XplaneFailure};
use crate::output::json_out::push_json_string;
use crate::output::packets::AnnotationValue;
use crate::time::timebase::RankTime;

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
            ts: get(3).map(Micros::of),
            dur: get(4).map(Micros::of),
            name: get(5).map(RawText::of),
            args: get(6),
            cat: None,
            id: None,
            others: Vec::new(),
        }
    }
}
