//! What every output does with an event: its phase, whether the filters keep
//! it, and the per-rank counts the summary reports.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::input::chrome::{Element, RawEvent};
use crate::input::json_scan::RawText;
use crate::options::Filters;
use crate::time::timebase::RankTime;

/// Why an event is not in the output.
pub mod reason {
    pub const PYTHON: &str = "python tracer (--drop-python)";
    pub const WINDOW: &str = "outside --window";
    pub const MIN_DUR: &str = "shorter than --min-dur";
    pub const NO_TS: &str = "no ts";
    pub const BAD_TS: &str = "ts or dur out of range";
    pub const UNMATCHED_END: &str = "E without a B";
    pub const UNTERMINATED_BEGIN: &str = "B without an E";
    pub const COUNTER: &str = "counter (kept in .json output only)";
    pub const FLOW: &str = "flow (kept in .json output only)";
    pub const UNSUPPORTED: &str = "unsupported phase";
    pub const NOT_AN_OBJECT: &str = "not a JSON object";
    pub const AGGREGATED: &str = "xplane aggregate (num_occurrences), not a span";
}

/// A Chrome trace phase, grouped by what merge does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Complete,
    Instant,
    Begin,
    End,
    Metadata,
    Counter,
    Flow,
    /// Async, object, sample and other phases.
    Other,
}

impl Phase {
    pub fn of(ph: &str) -> Phase {
        match ph {
            "X" => Phase::Complete,
            "i" | "I" | "R" => Phase::Instant,
            "B" => Phase::Begin,
            "E" => Phase::End,
            "M" => Phase::Metadata,
            "C" => Phase::Counter,
            "s" | "t" | "f" => Phase::Flow,
            _ => Phase::Other,
        }
    }
}

/// Per-rank event counts: `events_in = events_out + metadata + sum(dropped)`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RankStats {
    /// Trace events read (XProf's trailing `{}` not counted).
    pub events_in: u64,
    /// Input events represented in the output (a B/E pair counts 2).
    pub events_out: u64,
    /// `M` events used for names (in `.json` output they are also written).
    pub metadata: u64,
    pub dropped: BTreeMap<&'static str, u64>,
    /// `X` events read: XProf's JSON export stops at about 1,000,000.
    pub complete_events: u64,
    /// Merged-clock ns of the first event start and last event end written.
    pub first_ns: Option<i64>,
    pub last_ns: Option<i64>,
    /// Decompressed bytes read.
    pub bytes_read: u64,
    /// What an `.xplane.pb` held, when the rank was read from one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xplane: Option<XplaneCounts>,
}

/// The parts of an `.xplane.pb` that were read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct XplaneCounts {
    /// Planes with at least one line (host, devices).
    pub planes: u64,
    pub lines: u64,
    /// Events on the lines, aggregates included.
    pub events: u64,
    /// Aggregates (`num_occurrences`): not drawn, skipped.
    pub aggregated: u64,
}

impl RankStats {
    /// Counts one element of `traceEvents` and hands back the event to
    /// convert, if any: a non-object is dropped with its reason, and JAX's
    /// trailing `{}` is not an event at all.
    pub fn admit<'a, 'b>(&mut self, element: Element<'a, 'b>) -> Option<&'b RawEvent<'a>> {
        match element {
            Element::NotAnObject => {
                self.events_in += 1;
                self.drop_events(reason::NOT_AN_OBJECT, 1);
                None
            }
            Element::Event(event) if event.is_empty() => None,
            Element::Event(event) => {
                self.events_in += 1;
                Some(event)
            }
        }
    }

    pub fn drop_events(&mut self, reason: &'static str, count: u64) {
        *self.dropped.entry(reason).or_default() += count;
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }

    pub fn kept(&mut self, count: u64, start: i64, end: i64) {
        self.events_out += count;
        self.first_ns = Some(self.first_ns.map_or(start, |f| f.min(start)));
        self.last_ns = Some(self.last_ns.map_or(end, |l| l.max(end)));
    }
}

/// The event filters with the window resolved to merged-clock ns.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub window: Option<(i64, i64)>,
    pub drop_python: bool,
    pub min_dur_ns: Option<i64>,
}

impl EventFilter {
    pub fn new(filters: &Filters, window: Option<(i64, i64)>) -> Self {
        EventFilter {
            window,
            drop_python: filters.drop_python,
            min_dur_ns: filters.min_dur_ns,
        }
    }

    /// JAX's Python tracer names events `$file.py:LINE func`; Kineto puts them
    /// in the `python_function` category.
    pub fn is_python(name: &str, category: Option<&str>) -> bool {
        name.starts_with('$') || category == Some("python_function")
    }

    /// Whether a slice (or instant, `start == end`) stays; the reason if not.
    pub fn check(
        &self,
        name: &str,
        category: Option<&str>,
        start: i64,
        end: i64,
        has_duration: bool,
    ) -> Result<(), &'static str> {
        if self.drop_python && Self::is_python(name, category) {
            return Err(reason::PYTHON);
        }
        if has_duration && self.min_dur_ns.is_some_and(|min| end - start < min) {
            return Err(reason::MIN_DUR);
        }
        if let Some((lo, hi)) = self.window {
            if end < lo || start > hi {
                return Err(reason::WINDOW);
            }
        }
        Ok(())
    }
}

/// An event's start and end on the merged clock, or why it has none.
pub fn event_span(
    event: &RawEvent<'_>,
    time: &RankTime,
    with_duration: bool,
) -> Result<(i64, i64), &'static str> {
    let ts = event.ts.ok_or(reason::NO_TS)?;
    let ts = ts.nanos().ok_or(reason::BAD_TS)?;
    let dur = match (with_duration, event.dur) {
        (true, Some(dur)) => dur.nanos().filter(|d| *d >= 0).ok_or(reason::BAD_TS)?,
        _ => 0,
    };
    let start = time.aligned(ts).ok_or(reason::BAD_TS)?;
    let end = time
        .aligned(ts.checked_add(dur).ok_or(reason::BAD_TS)?)
        .ok_or(reason::BAD_TS)?;
    Ok((start, end.max(start)))
}

/// A `pid` or `tid`: numbers in most traces, strings in some.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdKey {
    Num(i64),
    Text(Box<str>),
}

impl IdKey {
    pub fn from_raw(raw: Option<&str>) -> IdKey {
        let Some(raw) = raw else {
            return IdKey::Num(0);
        };
        match raw.parse::<i64>() {
            Ok(n) => IdKey::Num(n),
            Err(_) => IdKey::Text(RawText::of(raw).text().into()),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            IdKey::Num(n) => n.to_string(),
            IdKey::Text(t) => t.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_say_why() {
        let filter = EventFilter {
            window: Some((100, 200)),
            drop_python: true,
            min_dur_ns: Some(10),
        };
        assert_eq!(
            filter.check("$a.py:1 f", None, 150, 190, true),
            Err(reason::PYTHON)
        );
        assert_eq!(
            filter.check("f", Some("python_function"), 150, 190, true),
            Err(reason::PYTHON)
        );
        assert_eq!(
            filter.check("f", None, 150, 155, true),
            Err(reason::MIN_DUR)
        );
        assert_eq!(filter.check("f", None, 150, 150, false), Ok(()));
        assert_eq!(filter.check("f", None, 10, 99, true), Err(reason::WINDOW));
        assert_eq!(
            filter.check("f", None, 10, 100, true),
            Ok(()),
            "overlap keeps it whole"
        );
        assert_eq!(filter.check("f", None, 201, 300, true), Err(reason::WINDOW));
    }

    #[test]
    fn phases() {
        assert_eq!(Phase::of("X"), Phase::Complete);
        assert_eq!(Phase::of("i"), Phase::Instant);
        assert_eq!(Phase::of("s"), Phase::Flow);
        assert_eq!(Phase::of("b"), Phase::Other);
        assert_eq!(Phase::of(""), Phase::Other);
    }
}
