//! Opening a [`Storage`] from a URL or a plain path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use url::Url;

use crate::{Storage, StorageError};

impl Storage {
    /// Opens storage from `s3://bucket/prefix`, `gs://bucket/prefix`,
    /// `az://container/prefix`, `memory://`, `file:///abs/path` or a plain
    /// path (created if missing).
    ///
    /// Cloud credentials and endpoints come from the usual environment
    /// variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
    /// `AWS_ENDPOINT_URL` and `AWS_ALLOW_HTTP=true` for an S3-compatible server
    /// on plain HTTP; `GOOGLE_APPLICATION_CREDENTIALS` / `GOOGLE_SERVICE_ACCOUNT`;
    /// `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`). Emulators:
    /// a service-account key (`GOOGLE_SERVICE_ACCOUNT_KEY` or the file in
    /// `GOOGLE_SERVICE_ACCOUNT`) with `"gcs_base_url"` and `"disable_oauth": true`,
    /// plus `GOOGLE_ALLOW_HTTP=true`, for a GCS one; `AZURE_STORAGE_USE_EMULATOR=true`
    /// and `AZURITE_BLOB_STORAGE_URL` for Azurite.
    pub fn open(url_or_path: &str) -> Result<Storage, StorageError> {
        let invalid = |reason: String| StorageError::InvalidUrl {
            url: url_or_path.to_string(),
            reason,
        };
        let trimmed = url_or_path.trim();
        if trimmed.is_empty() {
            return Err(invalid("empty storage location".into()));
        }
        let Some((scheme, _)) = trimmed.split_once("://") else {
            return open_folder(url_or_path, Path::new(trimmed));
        };
        let url = Url::parse(trimmed).map_err(|e| invalid(e.to_string()))?;
        let bucket = url.host_str().unwrap_or_default().to_string();
        let root = ObjectPath::from_url_path(url.path()).map_err(|e| invalid(e.to_string()))?;
        let store: Arc<dyn ObjectStore> = match scheme {
            "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|_| invalid("a file:// URL needs an absolute path".into()))?;
                return open_folder(url_or_path, &path);
            }
            "memory" => Arc::new(InMemory::new()),
            "s3" | "s3a" => {
                need_bucket(&bucket, url_or_path)?;
                Arc::new(
                    AmazonS3Builder::from_env()
                        .with_bucket_name(&bucket)
                        .build()
                        .map_err(|e| invalid(e.to_string()))?,
                )
            }
            "gs" => {
                need_bucket(&bucket, url_or_path)?;
                Arc::new(
                    GoogleCloudStorageBuilder::from_env()
                        .with_bucket_name(&bucket)
                        .build()
                        .map_err(|e| invalid(e.to_string()))?,
                )
            }
            "az" | "abfs" | "abfss" => {
                need_bucket(&bucket, url_or_path)?;
                Arc::new(
                    MicrosoftAzureBuilder::from_env()
                        .with_container_name(&bucket)
                        .build()
                        .map_err(|e| invalid(e.to_string()))?,
                )
            }
            other => {
                return Err(invalid(format!(
                    "unknown scheme {other:?}; use a folder path, file://, s3://, gs:// or az://"
                )))
            }
        };
        let url = if root.as_ref().is_empty() {
            format!("{scheme}://{bucket}")
        } else {
            format!("{scheme}://{bucket}/{root}")
        };
        Ok(Storage {
            store,
            root,
            url,
            local_root: None,
        })
    }
}

fn need_bucket(bucket: &str, url: &str) -> Result<(), StorageError> {
    if bucket.is_empty() {
        return Err(StorageError::InvalidUrl {
            url: url.to_string(),
            reason: "no bucket or container name after the scheme".into(),
        });
    }
    Ok(())
}

fn open_folder(given: &str, path: &Path) -> Result<Storage, StorageError> {
    let absolute: PathBuf = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|source| StorageError::Io {
                op: "find the current directory for",
                path: path.to_path_buf(),
                source,
            })?
            .join(path)
    };
    std::fs::create_dir_all(&absolute).map_err(|source| StorageError::Io {
        op: "create storage folder",
        path: absolute.clone(),
        source,
    })?;
    let absolute = absolute.canonicalize().map_err(|source| StorageError::Io {
        op: "resolve storage folder",
        path: absolute.clone(),
        source,
    })?;
    let store =
        LocalFileSystem::new_with_prefix(&absolute).map_err(|e| StorageError::InvalidUrl {
            url: given.to_string(),
            reason: e.to_string(),
        })?;
    let url = Url::from_file_path(&absolute)
        .map(String::from)
        .unwrap_or_else(|_| format!("file://{}", absolute.display()));
    Ok(Storage {
        store: Arc::new(store),
        root: ObjectPath::default(),
        url,
        local_root: Some(absolute),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_become_file_urls_and_are_created() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a/b");
        let storage = Storage::open(target.to_str().unwrap()).unwrap();
        assert!(target.is_dir());
        assert!(storage.url().starts_with("file:///"), "{}", storage.url());
        assert_eq!(
            storage.local_path("x/y.json").unwrap(),
            target.canonicalize().unwrap().join("x").join("y.json")
        );
    }

    #[test]
    fn cloud_urls_keep_their_prefix() {
        std::env::set_var("AWS_REGION", "us-east-1");
        let storage = Storage::open("s3://bucket/some/prefix/").unwrap();
        assert_eq!(storage.url(), "s3://bucket/some/prefix");
        assert_eq!(storage.local_path("k"), None);
    }

    #[test]
    fn bad_locations_say_what_is_wrong() {
        for (url, words) in [
            ("", "empty"),
            ("ftp://host/x", "unknown scheme"),
            ("s3://", "no bucket"),
        ] {
            let error = Storage::open(url).unwrap_err().to_string();
            assert!(error.contains(words), "{url}: {error}");
        }
    }
}
