//! Lays a rankline capture's `.xplane.pb` files out as one multi-host
//! XProf / TensorBoard run, so XProf's own tools open the stored profiles.
//!
//! ```text
//! <out>/plugins/profile/<run>/<role>-<worker>.TP-<n>-EP-<m>[.<host>].xplane.pb
//! <out>/rankline-xprof-<run>.json        host name -> rank, file, clock offset
//! ```
//!
//! `<run>` is the capture's start as `YYYY_MM_DD_HH_MM_SS` (UTC), the name
//! JAX gives its own runs; XProf lists runs by name, newest first. XProf
//! takes the host name from the file name (everything before
//! `.xplane.pb`, dots allowed; a comma would break its multi-host
//! selection), and shows it as the process name in its trace viewer.
//!
//! Files come from a local capture folder as hard links (a copy across
//! filesystems) or are streamed down from object storage; each is checked
//! against the size and sha256 its sidecar recorded. XProf cannot put hosts
//! on one clock, so the index and summary carry each host's measured offset.

mod locate;
mod place;
mod plan;
mod summary;

use std::path::{Path, PathBuf};

use futures::stream::{self, StreamExt};
use rankline_layout::ProfileIdError;
use rankline_storage::StorageError;

pub use locate::CaptureLocation;
pub use summary::{ClockSpread, ExportSummary, ExportedHost, FailedHost, Placement, SkippedRank};

/// xplanes placed at once (downloads in flight, or local links and hashes).
const PLACE_IN_PARALLEL: usize = 4;

/// Why an export could not be done.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("capture {capture:?} not found: {why}")]
    NotFound { capture: String, why: String },
    #[error(
        "{capture:?} is neither a capture folder nor a capture id ({source}); give the capture's \
         folder, its storage URL, or its id with --storage"
    )]
    BadCaptureId {
        capture: String,
        #[source]
        source: ProfileIdError,
    },
    #[error("{url}/manifest.json: {source}")]
    BadManifest {
        url: String,
        #[source]
        source: rankline_layout::DocumentError,
    },
    #[error("capture {capture} has no .xplane.pb to export ({why})")]
    NoXplanes { capture: String, why: String },
    #[error(
        "run name {run:?} cannot be a folder name XProf lists; use letters, digits, '_', '-' \
         and '.', not starting with '.'"
    )]
    BadRunName { run: String },
    #[error(
        "{index} says run {run} of {out} already holds capture {other}; pick another --out or \
         --run"
    )]
    RunTaken {
        run: String,
        out: String,
        index: String,
        other: String,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ExportError {
    fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ExportError {
        let path = path.to_path_buf();
        move |source| ExportError::Io { op, path, source }
    }
}

/// What to write where.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// The XProf log dir to write; default `./<capture id>-xprof`.
    pub out: Option<PathBuf>,
    /// The run's folder name; default the capture's start time as
    /// `YYYY_MM_DD_HH_MM_SS` (UTC).
    pub run: Option<String>,
}

/// What an export reports while it works.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// The plan: this many xplanes, this many bytes, into this run folder.
    Started {
        hosts: usize,
        bytes: u64,
        run_dir: &'a Path,
    },
    /// One xplane is in place and verified.
    Placed(&'a ExportedHost),
    /// One xplane could not be placed.
    Failed(&'a FailedHost),
}

/// Writes `<out>/plugins/profile/<run>/<host>.xplane.pb` for every rank of
/// the capture that has an xplane, verifies each, and writes the index
/// `<out>/rankline-xprof-<run>.json` (the returned summary).
pub async fn export(
    location: &CaptureLocation,
    options: &ExportOptions,
    progress: &(dyn Fn(Progress<'_>) + Send + Sync),
) -> Result<ExportSummary, ExportError> {
    let plan = plan::read(location).await?;
    if plan.hosts.is_empty() && plan.failed.is_empty() {
        return Err(ExportError::NoXplanes {
            capture: location.url(),
            why: plan.why_no_xplanes(),
        });
    }
    let run = match &options.run {
        Some(run) => valid_run_name(run)?,
        None => plan.run_name(),
    };
    let out = options
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}-xprof", plan::name_safe(&plan.capture_id))));
    let run_dir = out.join("plugins").join("profile").join(&run);
    let index = out.join(format!("rankline-xprof-{run}.json"));
    refuse_other_capture(&index, &out, &run, &plan.capture_id)?;
    std::fs::create_dir_all(&run_dir).map_err(ExportError::io("create", &run_dir))?;

    progress(Progress::Started {
        hosts: plan.hosts.len(),
        bytes: plan.hosts.iter().map(|h| h.stored_size).sum(),
        run_dir: &run_dir,
    });
    let placed: Vec<Result<ExportedHost, FailedHost>> = stream::iter(&plan.hosts)
        .map(|host| async {
            let result = place::place(location, host, &run_dir).await;
            match &result {
                Ok(done) => progress(Progress::Placed(done)),
                Err(failed) => progress(Progress::Failed(failed)),
            }
            result
        })
        .buffered(PLACE_IN_PARALLEL)
        .collect()
        .await;

    let mut summary = ExportSummary::new(location.url(), &plan, out, run, run_dir, index);
    for result in placed {
        match result {
            Ok(host) => summary.hosts.push(host),
            Err(failed) => summary.failed.push(failed),
        }
    }
    summary.note_other_xplanes()?;
    summary.clocks = ClockSpread::of(&summary.hosts);
    summary.write_index()?;
    Ok(summary)
}

/// A run name XProf lists as one run folder.
fn valid_run_name(run: &str) -> Result<String, ExportError> {
    let ok = !run.is_empty()
        && !run.starts_with('.')
        && run
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(run.to_string())
    } else {
        Err(ExportError::BadRunName {
            run: run.to_string(),
        })
    }
}

/// Refuses to mix two captures in one run folder (two captures started in
/// the same second, exported into the same log dir).
fn refuse_other_capture(
    index: &Path,
    out: &Path,
    run: &str,
    capture_id: &str,
) -> Result<(), ExportError> {
    let Ok(bytes) = std::fs::read(index) else {
        return Ok(());
    };
    let other = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("capture_id")?.as_str().map(str::to_string));
    match other {
        Some(other) if other != capture_id => Err(ExportError::RunTaken {
            run: run.to_string(),
            out: out.display().to_string(),
            index: index.display().to_string(),
            other,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_names_are_single_folder_names() {
        assert_eq!(
            valid_run_name("2026_11_22_21_47_17").unwrap(),
            "2026_11_22_21_47_17"
        );
        for bad in ["", "..", "a/b", ".hidden", "a b", "a,b"] {
            assert!(valid_run_name(bad).is_err(), "{bad:?}");
        }
    }
}
