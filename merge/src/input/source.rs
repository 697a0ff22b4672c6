//! Which of a rank's files is read, and opening its trace: plain or
//! gzipped JSON, decided by the content's magic bytes (not the name), with
//! read errors turned into messages that name the input.

use std::io::{self, BufRead, BufReader, Read};

use flate2::bufread::MultiGzDecoder;

use serde::Serialize;

use crate::error::{InputError, InputProblem};
use crate::input::chrome::ReadError;
use crate::input::rank::{Location, RankInput};
use crate::options::SourceMode;

/// Read buffer for the compressed bytes.
const FILE_BUFFER: usize = 256 << 10;

/// The kind of file a rank was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A Chrome JSON trace.
    Json,
    /// An `.xplane.pb`.
    Xplane,
}

/// The file a rank is read from.
#[derive(Debug, Clone)]
pub struct RankSource {
    pub kind: SourceKind,
    pub location: Location,
}

/// Picks the file `mode` asks for among a rank's files.
pub fn choose(input: &RankInput, mode: SourceMode) -> Result<RankSource, InputError> {
    let xplane = input.xplane.clone().map(|location| RankSource {
        kind: SourceKind::Xplane,
        location,
    });
    let json = input.trace.clone().map(|location| RankSource {
        kind: SourceKind::Json,
        location,
    });
    let (chosen, missing) = match mode {
        SourceMode::Auto => (xplane.or(json), InputProblem::NoXplane),
        SourceMode::Xplane => (xplane, InputProblem::NoXplane),
        SourceMode::Json => (json, InputProblem::NoJsonTrace),
    };
    chosen.ok_or_else(|| InputError::new(input.describe(), missing))
}

/// A trace's decompressed bytes.
pub struct TraceSource {
    pub reader: Box<dyn Read + Send>,
    pub gzipped: bool,
}

/// Opens `location` for reading its decompressed JSON.
pub fn open_trace(location: &Location) -> Result<TraceSource, InputError> {
    let file = location
        .open()
        .map_err(|e| InputError::new(location.display(), InputProblem::opening(e)))?;
    decompressed(file).map_err(|e| InputError::new(location.display(), InputProblem::Unreadable(e)))
}

/// The decompressed bytes of `raw`: gunzipped when it starts with gzip's
/// magic bytes, as they are otherwise.
pub fn decompressed(raw: impl Read + Send + 'static) -> io::Result<TraceSource> {
    let mut buffered = BufReader::with_capacity(FILE_BUFFER, raw);
    let gzipped = buffered.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read + Send> = if gzipped {
        Box::new(MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    Ok(TraceSource { reader, gzipped })
}

/// Turns a reader failure into a message about the input.
pub fn read_problem(error: ReadError, gzipped: bool) -> InputProblem {
    match error {
        ReadError::Io(e) if gzipped && is_decompression_error(&e) => {
            InputProblem::CorruptGzip(e.to_string())
        }
        ReadError::Io(e) => InputProblem::Unreadable(e),
        ReadError::Empty => InputProblem::Empty,
        ReadError::Truncated { events } => InputProblem::Truncated { events },
        ReadError::Syntax { offset, message } => InputProblem::Syntax { offset, message },
        ReadError::NotATrace(why) => InputProblem::NotATrace(why),
    }
}

/// flate2 reports bad compressed data with these kinds; a failing disk does not.
fn is_decompression_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
    )
}
