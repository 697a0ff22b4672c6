//! Why a merge, or one rank of it, failed: every message names the input and
//! says what to do next.

use std::io;
use std::path::PathBuf;

/// A merge that could not be done (nothing was written).
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// An option value that cannot be used (bad `--window`, unknown output
    /// extension, ...).
    #[error("{0}")]
    Options(String),
    /// One input is unusable; without `--keep-going` that ends the merge.
    /// The hint lives here, not in [`InputError`]: a rank skipped with
    /// `--keep-going` is reported by its `InputError` alone.
    #[error("{0}; or pass --keep-going to merge the other ranks")]
    Input(InputError),
    /// Every rank was filtered out or skipped.
    #[error("nothing to merge: {0}")]
    NothingToMerge(String),
    /// `--window` lies outside every event: the merge would be empty.
    #[error("{0}")]
    WindowSelectsNothing(String),
    /// The output could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Output {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl From<InputError> for MergeError {
    fn from(error: InputError) -> Self {
        MergeError::Input(error)
    }
}

/// One input (a file, folder or URL) that cannot be read as a trace.
#[derive(Debug, thiserror::Error)]
#[error("{input}: {problem}")]
pub struct InputError {
    /// The path or URL as the user would recognise it.
    pub input: String,
    pub problem: InputProblem,
}

impl InputError {
    pub fn new(input: impl Into<String>, problem: InputProblem) -> Self {
        InputError {
            input: input.into(),
            problem,
        }
    }
}

impl InputProblem {
    /// Why a file could not be opened.
    pub fn opening(error: io::Error) -> InputProblem {
        if error.kind() == io::ErrorKind::NotFound {
            InputProblem::NotFound
        } else {
            InputProblem::Unreadable(error)
        }
    }
}

/// What is wrong with an input.
#[derive(Debug, thiserror::Error)]
pub enum InputProblem {
    #[error("cannot be read: {0}")]
    Unreadable(#[source] io::Error),
    #[error("not found (check the path or URL)")]
    NotFound,
    #[error("the file is empty: the profiler probably did not finish writing it")]
    Empty,
    #[error(
        "corrupt gzip data ({0}): the file is damaged or was copied while being written; \
         copy it again"
    )]
    CorruptGzip(String),
    #[error(
        "truncated JSON: the input ends after {events} trace events, inside the \
         traceEvents array; it was probably cut off while being written or copied"
    )]
    Truncated { events: u64 },
    #[error("invalid JSON at byte {offset} of the decompressed trace ({message})")]
    Syntax { offset: u64, message: String },
    #[error(
        "not a Chrome trace: {0}; rankline merges Chrome JSON traces \
         (`{{\"traceEvents\": [...]}}` or a bare array), JAX log dirs and rankline captures"
    )]
    NotATrace(String),
    #[error("{0}")]
    Layout(String),
    #[error("cannot read the time base from {what}: {message}")]
    TimeBase { what: String, message: String },
    #[error("no trace found: {0}")]
    NoTraces(String),
    #[error(
        "not a readable .xplane.pb ({0}): the file is damaged or was copied while being \
         written; copy it again, or merge its trace.json.gz with --source json"
    )]
    Xplane(String),
    #[error(
        "--source xplane, but this rank has no .xplane.pb: put it beside the trace, or use \
         --source auto to merge the trace.json.gz (the JSON export stops at about 1,000,000 \
         events)"
    )]
    NoXplane,
    #[error("--source json, but this rank has only an .xplane.pb: use --source auto or xplane")]
    NoJsonTrace,
}
