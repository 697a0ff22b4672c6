//! Where a capture is: a folder, a storage URL of its folder, or a capture
//! id under a storage root, turned into one storage and a key prefix.

use std::path::{Path, PathBuf};

use rankline_layout::ProfileId;
use rankline_storage::Storage;

use crate::ExportError;

/// A capture's folder inside some storage.
#[derive(Debug, Clone)]
pub struct CaptureLocation {
    storage: Storage,
    /// Key prefix of the capture's folder in `storage`: `""` when the
    /// storage was opened at the folder itself, else the capture id.
    prefix: String,
}

impl CaptureLocation {
    /// The capture whose objects sit under `prefix` (`""` or a capture id)
    /// in `storage`.
    pub fn new(storage: Storage, prefix: &str) -> CaptureLocation {
        CaptureLocation {
            storage,
            prefix: prefix.trim_matches('/').to_string(),
        }
    }

    /// Finds the capture the user named: a capture folder (`/data/cap-1`,
    /// `file:///data/cap-1`), the URL of one (`s3://bucket/prefix/cap-1`), or
    /// a capture id looked up under `storage_root` (a folder or URL, like the
    /// coordinator's `--storage`). Never creates a folder.
    pub fn resolve(capture: &str, storage_root: &str) -> Result<CaptureLocation, ExportError> {
        let not_found = |why: String| ExportError::NotFound {
            capture: capture.to_string(),
            why,
        };
        let named_as_path = capture.contains("://") || looks_like_path(capture);
        match local_folder(capture) {
            Some(folder) if folder.is_dir() => return open_at(&folder, ""),
            Some(folder) if named_as_path => {
                return Err(not_found(format!(
                    "there is no folder {}",
                    folder.display()
                )))
            }
            Some(_) => {}
            None => {
                // `s3://b/cap/` and `s3://b/cap` are the same folder.
                let url = match capture.split_once("://") {
                    Some((scheme, rest)) => format!("{scheme}://{}", rest.trim_end_matches('/')),
                    None => capture.to_string(),
                };
                return Ok(CaptureLocation::new(Storage::open(&url)?, ""));
            }
        }
        ProfileId::parse(capture).map_err(|source| ExportError::BadCaptureId {
            capture: capture.to_string(),
            source,
        })?;
        match local_folder(storage_root) {
            Some(root) => {
                let folder = root.join(capture);
                if !folder.is_dir() {
                    return Err(not_found(format!(
                        "there is no folder {} (the storage is {}; pick another with --storage)",
                        folder.display(),
                        root.display()
                    )));
                }
                open_at(&root, capture)
            }
            None => Ok(CaptureLocation::new(Storage::open(storage_root)?, capture)),
        }
    }

    /// The storage the capture is in.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The capture folder's key prefix (`""` when the storage is the folder).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The capture folder's URL, for messages.
    pub fn url(&self) -> String {
        let root = self.storage.url();
        match (self.prefix.as_str(), root.ends_with('/')) {
            ("", _) => root.to_string(),
            (prefix, true) => format!("{root}{prefix}"),
            (prefix, false) => format!("{root}/{prefix}"),
        }
    }

    /// The last part of the folder's name: the capture id when nothing
    /// better is known.
    pub fn folder_name(&self) -> String {
        self.url()
            .rsplit('/')
            .find(|part| !part.is_empty())
            .unwrap_or("capture")
            .to_string()
    }

    /// A key relative to the capture folder, as a storage key.
    pub fn key(&self, inside: &str) -> String {
        if self.prefix.is_empty() {
            inside.to_string()
        } else {
            format!("{}/{inside}", self.prefix)
        }
    }

    /// A key written by the agent or coordinator (relative to the storage
    /// root the capture was stored in, so starting with `<profile_id>/`), as
    /// a storage key here: the capture folder may have moved or be opened
    /// directly.
    pub fn stored_key(&self, profile_id: &str, key: &str) -> String {
        let inside = key
            .strip_prefix(profile_id)
            .and_then(|rest| rest.strip_prefix('/'))
            .unwrap_or(key);
        self.key(inside)
    }

    /// A storage key as a key relative to the capture folder.
    pub fn inside<'k>(&self, key: &'k str) -> &'k str {
        if self.prefix.is_empty() {
            return key;
        }
        key.strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .unwrap_or(key)
    }
}

/// Opens a folder that exists (so opening creates nothing).
fn open_at(folder: &Path, prefix: &str) -> Result<CaptureLocation, ExportError> {
    let storage = Storage::open(&folder.to_string_lossy())?;
    Ok(CaptureLocation::new(storage, prefix))
}

/// The local folder a location names: a plain path or a `file://` URL;
/// `None` for object storage.
fn local_folder(location: &str) -> Option<PathBuf> {
    match location.split_once("://") {
        Some(("file", path)) => Some(PathBuf::from(path)),
        Some(_) => None,
        None => Some(PathBuf::from(location)),
    }
}

/// Whether a name can only be meant as a path, never as a capture id.
fn looks_like_path(name: &str) -> bool {
    name.contains('/') || name.contains('\\') || name.starts_with('.') || name.starts_with('~')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_keys_follow_the_folder() {
        let memory = Storage::open("memory://").unwrap();
        let at_root = CaptureLocation::new(memory.clone(), "cap1");
        assert_eq!(
            at_root.stored_key("cap1", "cap1/prefill-0/cap1-TP-0-EP-0.xplane.pb"),
            "cap1/prefill-0/cap1-TP-0-EP-0.xplane.pb"
        );
        let at_folder = CaptureLocation::new(memory, "");
        assert_eq!(
            at_folder.stored_key("cap1", "cap1/cap1-TP-0-EP-0.xplane.pb"),
            "cap1-TP-0-EP-0.xplane.pb"
        );
        assert_eq!(at_root.inside("cap1/a/b.pb"), "a/b.pb");
    }

    #[test]
    fn local_and_remote_locations() {
        assert_eq!(
            local_folder("file:///data/x"),
            Some(PathBuf::from("/data/x"))
        );
        assert_eq!(local_folder("./x"), Some(PathBuf::from("./x")));
        assert_eq!(local_folder("s3://b/x"), None);
        assert_eq!(local_folder("memory://"), None);
        assert!(looks_like_path("./cap") && looks_like_path("a/b") && !looks_like_path("cap-1"));
    }
}
