//! Putting one xplane into the run folder: a hard link (or copy) from a
//! local capture folder, or a streamed download, then a check of its size
//! and sha256 against what storage and the sidecar say.

use std::io::Read;
use std::path::{Path, PathBuf};

use rankline_layout::{ClockFit, XPLANE_SUFFIX};
use sha2::{Digest, Sha256};

use crate::plan::PlannedHost;
use crate::summary::{ExportedHost, FailedHost, Placement};
use crate::CaptureLocation;

/// How much of a file is hashed at a time.
const HASH_CHUNK: usize = 1024 * 1024;

/// Places `host`'s xplane at `<run_dir>/<host>.xplane.pb` and verifies it.
pub(crate) async fn place(
    location: &CaptureLocation,
    host: &PlannedHost,
    run_dir: &Path,
) -> Result<ExportedHost, FailedHost> {
    let dest = run_dir.join(format!("{}{XPLANE_SUFFIX}", host.host));
    let fail = |reason: String| FailedHost {
        host: host.host.clone(),
        rank: host.rank.clone(),
        key: host.key.clone(),
        reason,
    };
    // A re-run keeps a file that is already right (no second download).
    if let (Some(recorded), true) = (&host.recorded_sha256, dest.is_file()) {
        if sha256_of(&dest).await.ok().as_ref() == Some(recorded) {
            return Ok(exported(host, dest, Placement::Kept, recorded.clone()));
        }
    }
    let placement = match location
        .storage()
        .local_path(&host.key)
        .filter(|p| p.is_file())
    {
        Some(source) => {
            let target = dest.clone();
            tokio::task::spawn_blocking(move || link_or_copy(&source, &target))
                .await
                .map_err(|e| fail(format!("the copy stopped: {e}")))?
                .map_err(|e| fail(format!("cannot write {}: {e}", dest.display())))?
        }
        None => {
            location
                .storage()
                .download_to(&host.key, &dest)
                .await
                .map_err(|e| fail(format!("download failed: {e}")))?;
            Placement::Downloaded
        }
    };
    match verify(host, &dest).await {
        Ok(sha256) => Ok(exported(host, dest, placement, sha256)),
        Err(reason) => {
            // A wrong file must not be shown as this rank's profile.
            std::fs::remove_file(&dest).ok();
            Err(fail(reason))
        }
    }
}

/// Checks the placed file's size against storage's and the sidecar's, and
/// its sha256 against the sidecar's. Returns the sha256.
async fn verify(host: &PlannedHost, dest: &Path) -> Result<String, String> {
    let size = std::fs::metadata(dest)
        .map_err(|e| format!("cannot read back {}: {e}", dest.display()))?
        .len();
    for (expected, by) in [
        (Some(host.stored_size), "storage lists"),
        (host.recorded_size, "its sidecar recorded"),
    ] {
        if let Some(expected) = expected.filter(|e| *e != size) {
            return Err(format!(
                "{} has {size} bytes but {by} {expected} for {}",
                dest.display(),
                host.key
            ));
        }
    }
    let sha256 = sha256_of(dest)
        .await
        .map_err(|e| format!("cannot read back {}: {e}", dest.display()))?;
    match &host.recorded_sha256 {
        Some(recorded) if *recorded != sha256 => Err(format!(
            "{} has sha256 {sha256} but its sidecar recorded {recorded} for {}",
            dest.display(),
            host.key
        )),
        _ => Ok(sha256),
    }
}

fn exported(host: &PlannedHost, path: PathBuf, placed: Placement, sha256: String) -> ExportedHost {
    ExportedHost {
        host: host.host.clone(),
        rank: host.rank.clone(),
        coords: host.coords.clone(),
        hostname: host.hostname.clone(),
        key: host.key.clone(),
        path,
        size: host.stored_size,
        sha256,
        sha256_recorded: host.recorded_sha256.is_some(),
        placed,
        // The summary shows the fit, not the samples it came from.
        clock: host.clock.clone().map(|fit| ClockFit {
            samples: Vec::new(),
            ..fit
        }),
    }
}

/// A hard link when source and target share a filesystem (instant, no
/// space), else a copy; through a temporary name, so a half-written file
/// never carries the final name.
fn link_or_copy(source: &Path, target: &Path) -> std::io::Result<Placement> {
    let partial = target.with_extension("partial");
    std::fs::remove_file(&partial).ok();
    let placement = match std::fs::hard_link(source, &partial) {
        Ok(()) => Placement::Linked,
        Err(error) => {
            tracing::debug!("cannot hard-link {}: {error}; copying", source.display());
            if let Err(error) = std::fs::copy(source, &partial) {
                std::fs::remove_file(&partial).ok();
                return Err(error);
            }
            Placement::Copied
        }
    };
    std::fs::rename(&partial, target)?;
    Ok(placement)
}

/// The lower-case hex sha256 of a file, read on a blocking thread.
async fn sha256_of(path: &Path) -> std::io::Result<String> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; HASH_CHUNK];
        loop {
            let read = file.read(&mut buffer)?;
            if read == 0 {
                return Ok(hex::encode(hasher.finalize()));
            }
            hasher.update(&buffer[..read]);
        }
    })
    .await
    .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_within_a_filesystem_and_replaces_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("a.xplane.pb");
        let target = dir.path().join("b.xplane.pb");
        std::fs::write(&source, b"new").unwrap();
        std::fs::write(&target, b"stale").unwrap();
        assert_eq!(link_or_copy(&source, &target).unwrap(), Placement::Linked);
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert!(!dir.path().join("b.xplane.partial").exists());
    }
}
