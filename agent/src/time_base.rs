//! What `ts = 0` means in a rank's trace: the xplane's `profile_start_time`
//! (JAX) or Kineto's `baseTimeNanoseconds`, read by streaming, never by
//! loading a whole file.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::Path;

use flate2::read::GzDecoder;
use rankline_layout::{FileKind, TimeBase, TimeBaseSource};

use crate::files::FoundFile;

/// A trace's time base and, for JAX, the recorded stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceTimes {
    pub time_base: TimeBase,
    pub profile_stop_unix_ns: Option<i64>,
}

impl TraceTimes {
    /// No time base found: the trace's `ts` is taken as given.
    pub fn unknown() -> TraceTimes {
        TraceTimes {
            time_base: TimeBase {
                source: TimeBaseSource::None,
                unix_ns: 0,
            },
            profile_stop_unix_ns: None,
        }
    }
}

/// The time base of a rank's files: the xplane's when there is one (JAX),
/// else the first trace's Kineto base (a stage-less file before stage files).
pub fn for_rank(files: &[FoundFile]) -> io::Result<TraceTimes> {
    if let Some(xplane) = files.iter().find(|f| f.kind == FileKind::Xplane) {
        return from_xplane(&xplane.path);
    }
    let mut traces: Vec<&FoundFile> = files.iter().filter(|f| f.kind == FileKind::Trace).collect();
    traces.sort_by_key(|f| f.stage.is_some());
    match traces.first() {
        Some(trace) => from_kineto(&trace.path),
        None => Ok(TraceTimes::unknown()),
    }
}

/// Reads `profile_start_time` / `profile_stop_time` from an `.xplane.pb`.
pub fn from_xplane(path: &Path) -> io::Result<TraceTimes> {
    let file = BufReader::with_capacity(64 * 1024, File::open(path)?);
    let times = rankline_xplane::read_profile_times(file)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    Ok(match times.start_unix_ns {
        Some(start) => TraceTimes {
            time_base: TimeBase {
                source: TimeBaseSource::XplaneProfileStartTime,
                unix_ns: start,
            },
            profile_stop_unix_ns: times.stop_unix_ns,
        },
        None => TraceTimes::unknown(),
    })
}

/// Finds Kineto's top-level `baseTimeNanoseconds` in a gzip JSON trace.
/// Kineto writes it at the end, so the whole stream is read; the last
/// occurrence wins, since the top-level key follows every event.
pub fn from_kineto(path: &Path) -> io::Result<TraceTimes> {
    let file = BufReader::with_capacity(64 * 1024, File::open(path)?);
    Ok(
        match rankline_layout::scan_kineto_base(&mut GzDecoder::new(file))? {
            Some(base) => TraceTimes {
                time_base: TimeBase {
                    source: TimeBaseSource::KinetoBaseTimeNanoseconds,
                    unix_ns: base,
                },
                profile_stop_unix_ns: None,
            },
            None => TraceTimes::unknown(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(text: &str) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(text.as_bytes()).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn finds_kineto_base_at_the_end_across_chunks() {
        let events: String = (0..20_000)
            .map(|i| format!(r#"{{"ph":"X","ts":{i},"dur":1,"name":"op{i}"}},"#))
            .collect();
        let text = format!(
            r#"{{"schemaVersion":1,"traceEvents":[{events}{{}}],"displayTimeUnit":"ms","baseTimeNanoseconds": 1763850000123456789}}"#
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.trace.json.gz");
        std::fs::write(&path, gz(&text)).unwrap();
        let times = from_kineto(&path).unwrap();
        assert_eq!(
            times.time_base.source,
            TimeBaseSource::KinetoBaseTimeNanoseconds
        );
        assert_eq!(times.time_base.unix_ns, 1_763_850_000_123_456_789);
    }

    #[test]
    fn no_base_means_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.trace.json.gz");
        std::fs::write(&path, gz(r#"{"traceEvents":[]}"#)).unwrap();
        assert_eq!(
            from_kineto(&path).unwrap().time_base.source,
            TimeBaseSource::None
        );
    }
}
