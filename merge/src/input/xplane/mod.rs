//! One rank's `.xplane.pb`, the JAX profiler's complete record, opened and
//! indexed for the two ways it is read: converted to `.pftrace` packets
//! line by line (`crate::output::xplane_pftrace`) and handed out as Chrome
//! trace elements (`elements`).
//!
//! The file is walked plane by plane and line by line
//! ([`rankline_xplane::XSpaceFile`]): one line's bytes are in memory at a
//! time, never a plane or the whole file. Every plane with lines becomes
//! tracks under the rank (`/host:CPU`'s lines as threads, as the JSON
//! export shows them; a device plane as a track, `TPU:0`, with one child
//! track per line), every span event a slice named by its metadata, with
//! its stats (and its metadata's) as debug annotations. Aggregates
//! (`num_occurrences`) are counted, not drawn. This file holds what both
//! share: the open file, picosecond spans in nanoseconds, stat names and
//! values.

mod elements;

pub use elements::for_each_element;

use std::borrow::Cow;
use std::io::{self, Read, Seek};

use rankline_xplane::{
    LineView, PlaneIndex, PlaneMetadata, SpaceIndex, StatValue, StatView, XSpaceFile, XplaneError,
};

use crate::error::{InputError, InputProblem};
use crate::events::XplaneCounts;
use crate::input::rank::Location;
use crate::output::packets::AnnotationValue;
use crate::time::timebase::RankTime;

/// The plane whose lines are the host's threads.
pub(crate) const HOST_PLANE: &str = "/host:CPU";
/// Byte values longer than this are summarized, not shown in hex.
pub(crate) const MAX_HEX_BYTES: usize = 16;
/// The annotation that shows an event's name when its display name hides
/// it.
pub(crate) const LONG_NAME: &str = "long_name";

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
    pub(crate) file: XSpaceFile<Box<dyn XplaneSource>>,
    pub(crate) index: SpaceIndex,
    /// What the file's relative line timestamps count from.
    pub(crate) session_start_ns: i64,
    pub(crate) display: String,
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
pub(crate) fn ps_to_ns(ps: i64) -> i64 {
    match ps.checked_add(500) {
        // 64-bit division: this runs several times per event.
        Some(rounded) => rounded.div_euclid(1000),
        None => ((i128::from(ps) + 500).div_euclid(1000)) as i64,
    }
}

/// An event's start and duration in ns from its offset and duration in ps.
/// The end is rounded from the exact end, not the rounded start plus the
/// rounded duration, so that back-to-back events stay back to back.
pub(crate) fn span_ns(offset_ps: i64, duration_ps: i64) -> (i64, i64) {
    let start = ps_to_ns(offset_ps);
    let duration_ps = duration_ps.max(0);
    let end = match offset_ps.checked_add(duration_ps) {
        Some(end_ps) => ps_to_ns(end_ps),
        // Both halves fit in an i64 once divided.
        None => ((i128::from(offset_ps) + i128::from(duration_ps) + 500).div_euclid(1000)) as i64,
    };
    (start, end - start)
}

/// A stat's name (`stat <id>` for an id the plane does not define).
pub(crate) fn stat_key(metadata: &PlaneMetadata, id: i64) -> Cow<'_, str> {
    match metadata.stat_name(id) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(format!("stat {id}")),
    }
}

/// A stat's value as an annotation's: a `ref_value` as the name it refers
/// to, bytes in hex or as their size (in `scratch`).
pub(crate) fn stat_value<'m>(
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

pub(crate) fn bytes_text(raw: &[u8]) -> String {
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

/// Why one line's conversion stopped.
pub(crate) enum LineError {
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
