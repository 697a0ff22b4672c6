//! Moving bytes: streaming uploads with hashing and verification, downloads,
//! listings.

use std::path::Path;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Storage, StorageError};

/// Parts of a multipart upload. S3 needs at least 5 MiB per part but the
/// last; 8 MiB keeps the part count of a 1 GB trace low.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts in flight at once; with [`PART_SIZE`] this bounds upload memory.
const PARTS_IN_FLIGHT: usize = 2;
/// Files up to this size go up in one PUT.
const SINGLE_PUT_LIMIT: u64 = PART_SIZE as u64;
/// How much of a file is read at a time.
const READ_CHUNK: usize = 1024 * 1024;

/// What was stored under a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    pub key: String,
    pub size: u64,
    /// Lower-case hex sha256 of the bytes sent.
    pub sha256: String,
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    pub size: u64,
}

impl Storage {
    /// Streams a local file to `key`: one PUT when small, a multipart upload
    /// with at most [`PARTS_IN_FLIGHT`] parts of [`PART_SIZE`] in memory when
    /// large. Hashes while streaming and checks the stored size afterwards.
    /// `progress` is called with the bytes sent so far.
    pub async fn upload_file(
        &self,
        key: &str,
        local: &Path,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<StoredFile, StorageError> {
        let path = self.object_path(key)?;
        let io = |op: &'static str| {
            move |source| StorageError::Io {
                op,
                path: local.to_path_buf(),
                source,
            }
        };
        let mut file = tokio::fs::File::open(local).await.map_err(io("open"))?;
        let expected = file.metadata().await.map_err(io("stat"))?.len();
        let mut hasher = Sha256::new();
        let mut sent = 0u64;

        if expected <= SINGLE_PUT_LIMIT {
            let mut whole = Vec::with_capacity(expected as usize);
            file.read_to_end(&mut whole).await.map_err(io("read"))?;
            hasher.update(&whole);
            sent = whole.len() as u64;
            self.store
                .put(&path, PutPayload::from(whole))
                .await
                .map_err(|e| self.backend("upload", key, e))?;
            progress(sent);
        } else {
            let upload = self
                .store
                .put_multipart(&path)
                .await
                .map_err(|e| self.backend("start upload of", key, e))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            let mut buf = vec![0u8; READ_CHUNK];
            loop {
                let n = match file.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(source) => {
                        writer.abort().await.ok();
                        return Err(io("read")(source));
                    }
                };
                hasher.update(&buf[..n]);
                if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                    // Parts already stored would otherwise linger (and cost) on S3.
                    writer.abort().await.ok();
                    return Err(self.backend("upload part of", key, e));
                }
                writer.write(&buf[..n]);
                sent += n as u64;
                progress(sent);
            }
            writer
                .finish()
                .await
                .map_err(|e| self.backend("finish upload of", key, e))?;
        }

        let stored = self.head(key).await?.unwrap_or(0);
        if stored != sent {
            return Err(StorageError::SizeMismatch {
                key: key.to_string(),
                url: self.url.clone(),
                expected: sent,
                stored,
            });
        }
        Ok(StoredFile {
            key: key.to_string(),
            size: sent,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    /// Reads `key` back and checks that it holds `size` bytes whose sha256
    /// is `sha256`: proof that storage has exactly what was sent, on every
    /// backend alike (an S3 multipart object's own checksum is a checksum of
    /// part checksums, not the file's sha256, and not every store keeps one).
    /// Streams, so memory stays bounded whatever the size.
    pub async fn verify(&self, key: &str, size: u64, sha256: &str) -> Result<(), StorageError> {
        let path = self.object_path(key)?;
        let result = self
            .store
            .get(&path)
            .await
            .map_err(|e| self.backend("read back", key, e))?;
        let mut stream = result.into_stream();
        let mut hasher = Sha256::new();
        let mut stored = 0u64;
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(|e| self.backend("read back", key, e))?
        {
            hasher.update(&chunk);
            stored += chunk.len() as u64;
        }
        if stored != size {
            return Err(StorageError::SizeMismatch {
                key: key.to_string(),
                url: self.url.clone(),
                expected: size,
                stored,
            });
        }
        let stored_sha256 = hex::encode(hasher.finalize());
        if stored_sha256 != sha256 {
            return Err(StorageError::ChecksumMismatch {
                key: key.to_string(),
                url: self.url.clone(),
                expected: sha256.to_string(),
                stored: stored_sha256,
            });
        }
        Ok(())
    }

    /// Stores small bytes (a sidecar, a manifest) in one PUT.
    pub async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<StoredFile, StorageError> {
        let path = self.object_path(key)?;
        let size = bytes.len() as u64;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|e| self.backend("write", key, e))?;
        Ok(StoredFile {
            key: key.to_string(),
            size,
            sha256,
        })
    }

    /// Reads a whole (small) object.
    pub async fn get_bytes(&self, key: &str) -> Result<Bytes, StorageError> {
        let path = self.object_path(key)?;
        let result = self
            .store
            .get(&path)
            .await
            .map_err(|e| self.backend("read", key, e))?;
        result
            .bytes()
            .await
            .map_err(|e| self.backend("read", key, e))
    }

    /// Streams an object into a local file (written whole, then renamed into
    /// place, so a failed download leaves no partial file behind).
    pub async fn download_to(&self, key: &str, local: &Path) -> Result<u64, StorageError> {
        let path = self.object_path(key)?;
        let io = |op: &'static str, at: &Path| {
            let at = at.to_path_buf();
            move |source| StorageError::Io {
                op,
                path: at,
                source,
            }
        };
        let partial = local.with_extension("partial");
        let result = self
            .store
            .get(&path)
            .await
            .map_err(|e| self.backend("download", key, e))?;
        let mut stream = result.into_stream();
        let mut file = tokio::fs::File::create(&partial)
            .await
            .map_err(io("create", &partial))?;
        let mut written = 0u64;
        let copied: Result<(), StorageError> = async {
            while let Some(chunk) = stream
                .try_next()
                .await
                .map_err(|e| self.backend("download", key, e))?
            {
                file.write_all(&chunk)
                    .await
                    .map_err(io("write", &partial))?;
                written += chunk.len() as u64;
            }
            file.flush().await.map_err(io("write", &partial))?;
            Ok(())
        }
        .await;
        if let Err(error) = copied {
            tokio::fs::remove_file(&partial).await.ok();
            return Err(error);
        }
        tokio::fs::rename(&partial, local)
            .await
            .map_err(io("rename into place", local))?;
        Ok(written)
    }

    /// The size of `key`, or `None` when it does not exist.
    pub async fn head(&self, key: &str) -> Result<Option<u64>, StorageError> {
        let path = self.object_path(key)?;
        match self.store.head(&path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.backend("look up", key, e)),
        }
    }

    /// Every object under a key prefix (`""` for all), sorted by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ListedObject>, StorageError> {
        let trimmed = prefix.trim_end_matches('/');
        let path = if trimmed.is_empty() {
            self.root.clone()
        } else {
            self.object_path(trimmed)?
        };
        let mut objects: Vec<ListedObject> = self
            .store
            .list(Some(&path))
            .map_ok(|meta| ListedObject {
                key: self.key_of(&meta.location),
                size: meta.size,
            })
            .try_collect()
            .await
            .map_err(|e| self.backend("list", prefix, e))?;
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn round_trip(storage: &Storage, size: usize) {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("trace.bin");
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&source, &data).unwrap();

        let seen = std::sync::atomic::AtomicU64::new(0);
        let stored = storage
            .upload_file("cap/r/trace.bin", &source, &|n| {
                seen.store(n, std::sync::atomic::Ordering::Relaxed)
            })
            .await
            .unwrap();
        assert_eq!(stored.size, size as u64);
        assert_eq!(stored.sha256, hex::encode(Sha256::digest(&data)));
        assert_eq!(seen.into_inner(), size as u64);
        assert_eq!(
            storage.head("cap/r/trace.bin").await.unwrap(),
            Some(size as u64)
        );

        let back = dir.path().join("back.bin");
        assert_eq!(
            storage.download_to("cap/r/trace.bin", &back).await.unwrap(),
            size as u64
        );
        assert_eq!(std::fs::read(&back).unwrap(), data);
    }

    #[tokio::test]
    async fn small_and_multipart_uploads_round_trip_on_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path().to_str().unwrap()).unwrap();
        round_trip(&storage, 1000).await;
        round_trip(&storage, PART_SIZE * 2 + 12345).await;
        assert!(storage.local_path("cap/r/trace.bin").unwrap().is_file());
    }

    #[tokio::test]
    async fn verify_reads_back_size_and_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path().to_str().unwrap()).unwrap();
        let stored = storage
            .put_bytes("c/x.bin", b"stored bytes".to_vec())
            .await
            .unwrap();
        storage
            .verify("c/x.bin", stored.size, &stored.sha256)
            .await
            .unwrap();

        // Same size, other bytes: only the checksum tells.
        std::fs::write(storage.local_path("c/x.bin").unwrap(), b"STORED bytes").unwrap();
        let changed = storage
            .verify("c/x.bin", stored.size, &stored.sha256)
            .await
            .unwrap_err();
        assert!(
            matches!(changed, StorageError::ChecksumMismatch { .. }),
            "{changed}"
        );
        assert!(
            changed.is_transient(),
            "an upload that reads back wrong is tried again"
        );

        let short = storage
            .verify("c/x.bin", stored.size + 1, &stored.sha256)
            .await
            .unwrap_err();
        assert!(
            matches!(short, StorageError::SizeMismatch { .. }),
            "{short}"
        );
        let missing = storage.verify("c/none", 1, "00").await.unwrap_err();
        assert!(
            missing.is_not_found() && missing.is_transient(),
            "{missing}"
        );
    }

    #[tokio::test]
    async fn only_what_a_person_must_fix_is_permanent() {
        let storage = Storage::open("memory://").unwrap();
        let gone = storage
            .upload_file("k", Path::new("/nonexistent/trace.bin"), &|_| {})
            .await
            .unwrap_err();
        assert!(!gone.is_transient(), "{gone}");
        let bad_key = storage.put_bytes("../k", vec![]).await.unwrap_err();
        assert!(!bad_key.is_transient(), "{bad_key}");
        let refused = storage.backend(
            "upload",
            "k",
            object_store::Error::PermissionDenied {
                path: "k".into(),
                source: "403".into(),
            },
        );
        assert!(!refused.is_transient());
        let down = storage.backend(
            "upload",
            "k",
            object_store::Error::Generic {
                store: "S3",
                source: "connection refused".into(),
            },
        );
        assert!(down.is_transient());
    }

    #[tokio::test]
    async fn memory_store_lists_relative_keys() {
        let storage = Storage::open("memory://").unwrap();
        storage.put_bytes("c/b.json", b"{}".to_vec()).await.unwrap();
        storage.put_bytes("c/a.json", b"[]".to_vec()).await.unwrap();
        storage.put_bytes("d/z.json", b"1".to_vec()).await.unwrap();
        let keys: Vec<String> = storage
            .list("c/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, ["c/a.json", "c/b.json"]);
        assert_eq!(&storage.get_bytes("c/b.json").await.unwrap()[..], b"{}");
    }

    #[tokio::test]
    async fn missing_objects_and_bad_keys() {
        let storage = Storage::open("memory://").unwrap();
        assert_eq!(storage.head("nope").await.unwrap(), None);
        assert!(storage.get_bytes("nope").await.unwrap_err().is_not_found());
        for key in ["", "../x", "a//b", "a/./b"] {
            assert!(
                matches!(
                    storage.put_bytes(key, vec![]).await,
                    Err(StorageError::InvalidKey { .. })
                ),
                "{key:?}"
            );
        }
    }
}
