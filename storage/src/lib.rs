//! Every byte rankline stores or reads goes through here, on `object_store`.
//!
//! A [`Storage`] is opened from the URL forms users know from gsutil and
//! aws-cli (`s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`)
//! or from a plain folder (`/data/captures`, `./captures`, `file:///data`),
//! the embedded default. Keys are `/`-separated and relative to that root.
//! Uploads stream in bounded memory and hash as they go, so a 1 GB trace
//! never sits in an agent's memory.

mod backoff;
mod capture;
mod open;
mod transfer;

use std::path::PathBuf;
use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;

pub use backoff::Backoff;
pub use transfer::{ListedObject, StoredFile};

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot use storage {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },
    #[error("{op} {key:?} in {url}: {source}")]
    Backend {
        op: &'static str,
        key: String,
        url: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{key:?} in {url}: {source}")]
    Document {
        key: String,
        url: String,
        #[source]
        source: Box<rankline_layout::DocumentError>,
    },
    #[error("object {key:?} in {url} has {stored} bytes after upload, expected {expected}")]
    SizeMismatch {
        key: String,
        url: String,
        expected: u64,
        stored: u64,
    },
    #[error("object {key:?} in {url} reads back with sha256 {stored}, expected {expected}")]
    ChecksumMismatch {
        key: String,
        url: String,
        expected: String,
        stored: String,
    },
}

impl StorageError {
    /// True when the object simply does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            StorageError::Backend { source, .. } if matches!(**source, object_store::Error::NotFound { .. })
        )
    }

    /// True when trying again later may succeed: the store was unreachable,
    /// overloaded or answered wrongly, or an object read back differently
    /// from what was sent. False for what only a person can fix: a bad URL
    /// or key, an unreadable local file, refused credentials or permissions,
    /// an operation the store does not offer.
    pub fn is_transient(&self) -> bool {
        match self {
            StorageError::InvalidUrl { .. }
            | StorageError::InvalidKey { .. }
            | StorageError::Io { .. }
            | StorageError::Document { .. } => false,
            StorageError::SizeMismatch { .. } | StorageError::ChecksumMismatch { .. } => true,
            StorageError::Backend { source, .. } => !matches!(
                **source,
                object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
                    | object_store::Error::NotImplemented
                    | object_store::Error::NotSupported { .. }
                    | object_store::Error::InvalidPath { .. }
                    | object_store::Error::UnknownConfigurationKey { .. }
            ),
        }
    }
}

/// An object store and the root prefix inside it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    root: ObjectPath,
    url: String,
    local_root: Option<PathBuf>,
}

impl Storage {
    /// The normalized URL (`file:///abs/path`, `s3://bucket/prefix`, ...).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Where `key` lives on disk when the storage is a plain folder.
    pub fn local_path(&self, key: &str) -> Option<PathBuf> {
        let root = self.local_root.as_ref()?;
        Some(
            key.split('/')
                .fold(root.clone(), |path, part| path.join(part)),
        )
    }

    /// The full object path of a key under the root, refusing keys that
    /// could escape it.
    fn object_path(&self, key: &str) -> Result<ObjectPath, StorageError> {
        let invalid = |reason: &str| StorageError::InvalidKey {
            key: key.to_string(),
            reason: reason.to_string(),
        };
        if key.is_empty() {
            return Err(invalid("empty key"));
        }
        if key
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(invalid("empty, '.' or '..' path segment"));
        }
        let relative = ObjectPath::parse(key).map_err(|e| invalid(&e.to_string()))?;
        Ok(self.root.parts().chain(relative.parts()).collect())
    }

    /// The key of an object path, relative to the root.
    fn key_of(&self, path: &ObjectPath) -> String {
        match path.prefix_match(&self.root) {
            Some(parts) => parts
                .map(|p| p.as_ref().to_string())
                .collect::<Vec<_>>()
                .join("/"),
            None => path.to_string(),
        }
    }

    fn backend(&self, op: &'static str, key: &str, source: object_store::Error) -> StorageError {
        StorageError::Backend {
            op,
            key: key.to_string(),
            url: self.url.clone(),
            source: Box::new(source),
        }
    }
}

/// Where an object is, for a person: a plain path for a local folder, the
/// URL otherwise.
pub fn object_location(storage_url: &str, key: &str) -> String {
    let root = storage_url.trim_end_matches('/');
    let root = root.strip_prefix("file://").unwrap_or(root);
    if key.is_empty() {
        root.to_string()
    } else {
        format!("{root}/{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_storage_shows_paths() {
        assert_eq!(
            object_location("file:///data/caps", "c/manifest.json"),
            "/data/caps/c/manifest.json"
        );
        assert_eq!(object_location("s3://b/p/", "c"), "s3://b/p/c");
    }
}
