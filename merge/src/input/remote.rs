//! Inputs given as object-store URLs (`s3://`, `gs://`, `az://`, `file://`,
//! ...): the objects merge needs are streamed to a local folder (bounded
//! memory, several at once), mirroring their keys, and discovery then reads
//! that folder like a local capture.
//!
//! With a manifest, only the selected ranks' files are fetched: a rank's
//! `.xplane.pb` when it will be read (`--source auto` or `xplane`), or when
//! its sidecar has no time base. Without one, every sidecar, trace and
//! xplane under the URL is fetched. An xplane the manifest lists but the
//! storage lacks is a warning, not a failure of the whole URL: its rank is
//! read without it (from its JSON trace, under `--source auto`).

use std::path::{Path, PathBuf};

use futures::stream::{self, StreamExt, TryStreamExt};
use rankline_layout::{
    read_manifest, read_sidecar, FileKind, Manifest, RankStatus, TimeBaseSource, MANIFEST_NAME,
    SIDECAR_SUFFIX, TRACE_SUFFIX, WORKLOAD_NAME, XPLANE_SUFFIX,
};
use rankline_storage::{Storage, StorageError};

use crate::error::{InputError, InputProblem};
use crate::options::Filters;

/// Downloads in flight at once.
const PARALLEL_DOWNLOADS: usize = 8;

/// A URL input, fetched.
pub struct Fetched {
    /// Holds the files for as long as the merge needs them.
    pub dir: tempfile::TempDir,
    /// The URL as given, without a trailing `/`.
    pub url: String,
    /// Listed objects that were not found (ranks are read without them).
    pub warnings: Vec<String>,
}

impl Fetched {
    /// The URL of a file fetched into [`Fetched::dir`].
    pub fn url_of(&self, local: &Path) -> Option<String> {
        let relative = local.strip_prefix(self.dir.path()).ok()?;
        let key: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        Some(format!("{}/{}", self.url, key.join("/")))
    }
}

/// Whether an input names object storage rather than a local path.
pub fn is_url(input: &str) -> bool {
    input.contains("://") || input.starts_with("memory:")
}

/// Fetches what merging `url` needs. Runs its own small async runtime on a
/// separate thread, so it works from any caller (async or not).
pub fn fetch(url: &str, filters: &Filters, xplanes: bool) -> Result<Fetched, InputError> {
    // `s3://bucket/prefix/` and `s3://bucket/prefix` are the same capture;
    // `gs://` stays a URL (without a bucket).
    let url = match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", rest.trim_end_matches('/')),
        None => url.to_string(),
    };
    let problem = |problem: InputProblem| InputError::new(url.clone(), problem);
    if let Some(path) = url.strip_prefix("file://") {
        // Opening a folder storage creates it; merging must not.
        if !Path::new(path).exists() {
            return Err(problem(InputProblem::NotFound));
        }
    }
    let storage = Storage::open(&url).map_err(|e| problem(InputProblem::Layout(e.to_string())))?;
    let dir = tempfile::Builder::new()
        .prefix("rankline-merge-")
        .tempdir()
        .map_err(|e| problem(InputProblem::Unreadable(e)))?;
    let local = dir.path().to_path_buf();
    let absent = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| problem(InputProblem::Unreadable(e)))?;
                runtime
                    .block_on(fetch_into(&storage, &local, filters, xplanes))
                    .map_err(|e| storage_problem(&url, e))
            })
            .join()
            .unwrap_or_else(|_| {
                Err(problem(InputProblem::Layout(
                    "the download thread failed".into(),
                )))
            })
    })?;
    let warnings = absent
        .iter()
        .map(|key| {
            format!(
                "{url}/{key} is listed in {MANIFEST_NAME} but not found in the storage: its \
                 rank is merged without it (from its JSON trace, under --source auto)"
            )
        })
        .collect();
    Ok(Fetched { dir, url, warnings })
}

fn storage_problem(url: &str, error: FetchError) -> InputError {
    let problem = match error {
        FetchError::Storage(e) if e.is_not_found() => InputProblem::NotFound,
        FetchError::Storage(e) => InputProblem::Layout(format!(
            "cannot be read ({e}); check the URL and the storage credentials"
        )),
        FetchError::Layout(why) => InputProblem::Layout(why),
        FetchError::Empty => InputProblem::NoTraces(
            "no manifest.json, no *.meta.json sidecars and no trace files under this URL".into(),
        ),
    };
    InputError::new(url, problem)
}

enum FetchError {
    Storage(StorageError),
    Layout(String),
    Empty,
}

impl From<StorageError> for FetchError {
    fn from(error: StorageError) -> Self {
        FetchError::Storage(error)
    }
}

/// Fetches what merging needs into `local`; returns the listed xplanes
/// that are not in the storage.
async fn fetch_into(
    storage: &Storage,
    local: &Path,
    filters: &Filters,
    xplanes: bool,
) -> Result<Vec<String>, FetchError> {
    match storage.get_bytes(MANIFEST_NAME).await {
        Ok(bytes) => {
            let manifest = read_manifest(&bytes)
                .map_err(|e| FetchError::Layout(format!("{MANIFEST_NAME}: {e}")))?;
            std::fs::write(local.join(MANIFEST_NAME), &bytes).map_err(io_layout)?;
            fetch_capture(storage, local, &manifest, filters, xplanes).await
        }
        Err(e) if e.is_not_found() => fetch_listing(storage, local).await.map(|()| Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// The selected ranks' sidecars and traces, and the xplanes needed; returns
/// the xplanes the storage lacks.
async fn fetch_capture(
    storage: &Storage,
    local: &Path,
    manifest: &Manifest,
    filters: &Filters,
    xplanes: bool,
) -> Result<Vec<String>, FetchError> {
    let inside = |key: &str| -> String {
        key.strip_prefix(manifest.profile_id.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .unwrap_or(key)
            .to_string()
    };
    let ranks: Vec<_> = manifest
        .ranks
        .iter()
        .filter(|r| r.status == RankStatus::Ok && filters.selects(&r.identity.coords))
        .collect();
    let sidecars: Vec<String> = ranks
        .iter()
        .filter_map(|r| r.objects.meta.as_deref())
        .map(inside)
        .collect();
    download_all(storage, local, &sidecars).await?;
    let (mut wanted, mut xplane_keys) = (Vec::new(), Vec::new());
    for rank in ranks {
        wanted.extend(rank.objects.trace.as_deref().map(inside));
        let sidecar = rank
            .objects
            .meta
            .as_deref()
            .and_then(|key| std::fs::read(local.join(inside(key))).ok())
            .and_then(|bytes| read_sidecar(&bytes).ok());
        // Per-stage traces (profile_by_stage) beyond the one the manifest names.
        for file in sidecar.iter().flat_map(|s| &s.files) {
            let key = inside(&file.key);
            if file.kind == FileKind::Trace && !wanted.contains(&key) {
                wanted.push(key);
            }
        }
        let has_time_base = sidecar.is_some_and(|s| s.time_base.source != TimeBaseSource::None);
        let read = xplanes || rank.objects.trace.is_none();
        if let (true, Some(xplane)) = (read || !has_time_base, &rank.objects.xplane) {
            xplane_keys.push(inside(xplane));
        }
    }
    let workload = [WORKLOAD_NAME.to_string()];
    let ((), absent, _) = futures::try_join!(
        download_all(storage, local, &wanted),
        download_present(storage, local, &xplane_keys),
        // The requests a workload sent, when the capture had one.
        download_present(storage, local, &workload)
    )?;
    Ok(absent)
}

/// No manifest: every sidecar, trace and xplane under the URL.
async fn fetch_listing(storage: &Storage, local: &Path) -> Result<(), FetchError> {
    let keys: Vec<String> = storage
        .list("")
        .await?
        .into_iter()
        .map(|o| o.key)
        .filter(|key| {
            key.ends_with(SIDECAR_SUFFIX)
                || key.ends_with(XPLANE_SUFFIX)
                || [TRACE_SUFFIX, ".trace.json"]
                    .iter()
                    .any(|s| key.ends_with(s))
        })
        .collect();
    if keys.is_empty() {
        return Err(FetchError::Empty);
    }
    download_all(storage, local, &keys).await
}

/// Downloads every key, several at once; one that is missing fails them.
async fn download_all(storage: &Storage, local: &Path, keys: &[String]) -> Result<(), FetchError> {
    stream::iter(keys.iter().map(Ok::<_, FetchError>))
        .try_for_each_concurrent(PARALLEL_DOWNLOADS, |key| download(storage, local, key))
        .await
}

/// Downloads the keys that exist, several at once; returns the others.
async fn download_present(
    storage: &Storage,
    local: &Path,
    keys: &[String],
) -> Result<Vec<String>, FetchError> {
    let found: Vec<Option<String>> = stream::iter(keys)
        .map(|key| async move {
            match download(storage, local, key).await {
                Ok(()) => Ok(None),
                Err(FetchError::Storage(e)) if e.is_not_found() => Ok(Some(key.clone())),
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(PARALLEL_DOWNLOADS)
        .try_collect()
        .await?;
    let mut absent: Vec<String> = found.into_iter().flatten().collect();
    absent.sort();
    Ok(absent)
}

async fn download(storage: &Storage, local: &Path, key: &str) -> Result<(), FetchError> {
    let target = key_path(local, key)?;
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(io_layout)?;
    }
    storage.download_to(key, &target).await?;
    Ok(())
}

/// Where a key is mirrored; keys that would leave the folder are refused.
fn key_path(local: &Path, key: &str) -> Result<PathBuf, FetchError> {
    let mut path = local.to_path_buf();
    for part in key.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(FetchError::Layout(format!(
                "refusing the object key {key:?}"
            )));
        }
        path.push(part);
    }
    Ok(path)
}

fn io_layout(error: std::io::Error) -> FetchError {
    FetchError::Layout(format!(
        "cannot write the downloaded files locally: {error}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_inside_the_download_folder() {
        let local = Path::new("/tmp/x");
        assert_eq!(
            key_path(local, "a/b.json").ok(),
            Some(PathBuf::from("/tmp/x/a/b.json"))
        );
        for bad in ["../a", "a//b", "/a", "a/./b"] {
            assert!(key_path(local, bad).is_err(), "{bad}");
        }
        assert!(is_url("s3://b/p") && is_url("memory://") && !is_url("/data/cap"));
    }
}
