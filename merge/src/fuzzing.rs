//! Entry points for the fuzz targets in `fuzz/` and the stable fuzz test:
//! the trace parsers run on arbitrary bytes, end to end, in memory. Hidden
//! from the documented API; they exist so that no input can panic merge.

use std::io::Cursor;
use std::ops::ControlFlow;
use std::sync::Mutex;

use crate::events::EventFilter;
use crate::input::chrome::{self, Element};
use crate::input::json_scan::{self, RawText};
use crate::input::number;
use crate::input::source::decompressed;
use crate::input::xplane::{self as xplane_in, OpenXplane};
use crate::output::json_out::JsonRank;
use crate::output::packets::SequenceInfo;
use crate::output::pftrace::Timeline;
use crate::output::sink::TextOutput;
use crate::time::timebase::RankTime;

/// Reads `bytes` (plain or gzipped) as a Chrome trace, touching every
/// field the outputs use. Returns how many elements were read.
pub fn read_elements(bytes: &[u8]) -> Option<u64> {
    let source = decompressed(Cursor::new(bytes.to_vec())).ok()?;
    let footer = chrome::read_trace(source.reader, |element| {
        if let Element::Event(event) = element {
            let _ = event.phase();
            // What the scanner learnt on the way must be what reading the
            // text again gives.
            for text in [event.name, event.cat].into_iter().flatten() {
                assert_eq!(text.text(), RawText::of(text.raw).text(), "{text:?}");
            }
            for raw in [event.args, event.id].into_iter().flatten() {
                let _ = RawText::of(raw).text();
            }
            for time in [event.ts, event.dur].into_iter().flatten() {
                assert_eq!(
                    time.nanos(),
                    number::micros_text_to_nanos(time.raw),
                    "{time:?}"
                );
            }
            if let Some(args) = event.args {
                json_scan::members(args).for_each(drop);
            }
        }
        ControlFlow::Continue(())
    })
    .ok()?;
    Some(footer.elements)
}

/// Converts `bytes` to one rank's packet sequence, as `merge` does.
pub fn to_pftrace(bytes: &[u8]) -> Option<Vec<u8>> {
    let source = decompressed(Cursor::new(bytes.to_vec())).ok()?;
    let time = RankTime::identity();
    let filter = EventFilter::default();
    let mut timeline = Timeline::new(&time, &filter);
    chrome::read_trace(source.reader, |element| timeline.ingest(element)).ok()?;
    timeline.finish_input();
    let sink = Mutex::new(Vec::new());
    let info = SequenceInfo {
        ordinal: 0,
        ranks: 1,
        process_name: "fuzz",
    };
    timeline.write(&info, &sink).ok()?;
    Some(sink.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// Converts `bytes` as an `.xplane.pb` to one rank's packet sequence, as
/// `merge` does.
pub fn xplane_to_pftrace(bytes: &[u8]) -> Option<Vec<u8>> {
    let time = RankTime::identity();
    let xplane =
        OpenXplane::from_reader(Box::new(Cursor::new(bytes.to_vec())), "fuzz".into(), &time)
            .ok()?;
    let sink = Mutex::new(Vec::new());
    let info = SequenceInfo {
        ordinal: 0,
        ranks: 1,
        process_name: "fuzz",
    };
    crate::output::xplane_pftrace::write_pftrace(
        xplane,
        &time,
        &EventFilter::default(),
        &info,
        &sink,
        &|| false,
    )
    .ok()?;
    Some(sink.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// Reads `bytes` as an `.xplane.pb` through the Chrome-element view (JSON
/// output, collectives), touching every field; returns the events seen.
pub fn xplane_elements(bytes: &[u8]) -> Option<u64> {
    let time = RankTime::identity();
    let mut xplane =
        OpenXplane::from_reader(Box::new(Cursor::new(bytes.to_vec())), "fuzz".into(), &time)
            .ok()?;
    let read = xplane_in::for_each_element(&mut xplane, &time, &|| false, |element| {
        if let Element::Event(event) = element {
            for raw in [event.name.map(|name| name.raw), event.args]
                .into_iter()
                .chain([event.ts, event.dur].map(|time| time.map(|time| time.raw)))
                .flatten()
            {
                let _ = RawText::of(raw).text();
            }
            if let Some(args) = event.args {
                json_scan::members(args).for_each(drop);
            }
        }
        ControlFlow::Continue(())
    })
    .ok()?;
    Some(read.counts.events)
}

/// Converts `bytes` to Chrome JSON events, as `merge` does; returns the
/// staged text's size.
pub fn to_json(bytes: &[u8]) -> Option<u64> {
    let source = decompressed(Cursor::new(bytes.to_vec())).ok()?;
    let time = RankTime::identity();
    let filter = EventFilter::default();
    let dir = tempfile::tempdir().ok()?;
    let output = TextOutput::create(&dir.path().join("fuzz.json"), false).ok()?;
    let mut rank = JsonRank::new(0, "fuzz", &time, &filter, 0, output.stage());
    chrome::read_trace(source.reader, |element| rank.ingest(element)).ok()?;
    let (stage, edits, stats) = rank.finish().ok()?;
    output.commit_stage(stage, &edits).ok()?;
    Some(stats.events_out)
}

/// Scans `text` as one JSON value and walks it as an object.
pub fn scan_json(text: &str) -> Option<usize> {
    let members = json_scan::members(text).count();
    match json_scan::scan_value(text.as_bytes(), 0) {
        json_scan::Scan::Done(end) => Some(end + members),
        _ => None,
    }
}

/// Parses `text` as microseconds; when it is a number, checks that the
/// nanoseconds print back and parse to the same value.
pub fn micros_round_trip(text: &str) -> Option<i64> {
    let nanos = number::micros_text_to_nanos(text)?;
    let mut printed = Vec::new();
    number::push_nanos_as_micros(&mut printed, nanos);
    let again = std::str::from_utf8(&printed)
        .ok()
        .and_then(number::micros_text_to_nanos);
    assert_eq!(again, Some(nanos), "{text:?} -> {nanos} did not round-trip");
    Some(nanos)
}
