//! A stored capture's documents, read through the one parser in
//! `rankline-layout` (which checks their `format`).

use rankline_layout::{read_manifest, read_sidecar, DocumentError, Manifest, Sidecar};

use crate::{Storage, StorageError};

impl Storage {
    /// Reads and checks a `manifest.json` at `key`.
    pub async fn read_manifest(&self, key: &str) -> Result<Manifest, StorageError> {
        let bytes = self.get_bytes(key).await?;
        read_manifest(&bytes).map_err(|source| self.document(key, source))
    }

    /// Reads and checks a rank's sidecar at `key`.
    pub async fn read_sidecar(&self, key: &str) -> Result<Sidecar, StorageError> {
        let bytes = self.get_bytes(key).await?;
        read_sidecar(&bytes).map_err(|source| self.document(key, source))
    }

    fn document(&self, key: &str, source: DocumentError) -> StorageError {
        StorageError::Document {
            key: key.to_string(),
            url: self.url.clone(),
            source: Box::new(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_newer_manifest_is_refused_for_good() {
        let storage = Storage::open("memory://").unwrap();
        storage
            .put_bytes(
                "cap/manifest.json",
                br#"{"format":"rankline.capture/v2"}"#.to_vec(),
            )
            .await
            .unwrap();
        let error = storage
            .read_manifest("cap/manifest.json")
            .await
            .unwrap_err();
        assert!(matches!(error, StorageError::Document { .. }), "{error}");
        assert!(!error.is_transient() && !error.is_not_found());
        assert!(error.to_string().contains("upgrade rankline"), "{error}");
        let missing = storage.read_sidecar("cap/x.meta.json").await.unwrap_err();
        assert!(missing.is_not_found(), "{missing}");
    }
}
