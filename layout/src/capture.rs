//! Reading and writing a stored capture's documents: the one place that
//! parses `manifest.json` and `<stem>.meta.json`, checks their `format`
//! before anything else, and spells the stored files' suffixes.
//!
//! The bytes come from `rankline-storage` (`Storage::read_manifest`,
//! `Storage::read_sidecar`) or from a local folder; either way they go
//! through [`read_manifest`] / [`read_sidecar`].

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{Manifest, Sidecar, MANIFEST_FORMAT, MANIFEST_NAME, SIDECAR_FORMAT};

/// A rank's Chrome/Kineto trace, as stored.
pub const TRACE_SUFFIX: &str = ".trace.json.gz";
/// A rank's XSpace protobuf, as stored (and as JAX names it).
pub const XPLANE_SUFFIX: &str = ".xplane.pb";
/// A rank's metadata sidecar, written last.
pub const SIDECAR_SUFFIX: &str = ".meta.json";

/// The key of a capture's manifest: `<profile_id>/manifest.json`.
pub fn manifest_key(profile_id: &str) -> String {
    format!("{profile_id}/{MANIFEST_NAME}")
}

/// Which of a rank's stored objects a key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Trace,
    Xplane,
    Sidecar,
}

impl ObjectKind {
    /// The kind a key's canonical suffix names, if any.
    pub fn of_key(key: &str) -> Option<ObjectKind> {
        ObjectKind::split(key).map(|(_, kind)| kind)
    }

    /// A key's stem (the key without its canonical suffix) and kind.
    pub fn split(key: &str) -> Option<(&str, ObjectKind)> {
        [ObjectKind::Trace, ObjectKind::Xplane, ObjectKind::Sidecar]
            .into_iter()
            .find_map(|kind| Some((key.strip_suffix(kind.suffix())?, kind)))
    }

    /// The suffix stored objects of this kind end with.
    pub fn suffix(self) -> &'static str {
        match self {
            ObjectKind::Trace => TRACE_SUFFIX,
            ObjectKind::Xplane => XPLANE_SUFFIX,
            ObjectKind::Sidecar => SIDECAR_SUFFIX,
        }
    }
}

/// Why a capture document could not be read.
#[derive(Debug, Error)]
pub enum DocumentError {
    #[error("not a rankline {what}: {source}")]
    NotJson {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "this {what} has format {found:?}, but this rankline ({version}) reads only {expected:?}: \
         upgrade rankline to read it"
    )]
    UnknownFormat {
        what: &'static str,
        found: String,
        expected: &'static str,
        version: &'static str,
    },
}

/// Only the `format` field: checked before the rest is parsed, so a newer
/// document whose shape changed still gets the "upgrade" answer.
#[derive(Deserialize)]
struct FormatProbe {
    format: Option<String>,
}

fn read_document<T: DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
    expected: &'static str,
) -> Result<T, DocumentError> {
    let not_json = |source| DocumentError::NotJson { what, source };
    let probe: FormatProbe = serde_json::from_slice(bytes).map_err(not_json)?;
    match probe.format {
        Some(found) if found != expected => Err(DocumentError::UnknownFormat {
            what,
            found,
            expected,
            version: env!("CARGO_PKG_VERSION"),
        }),
        _ => serde_json::from_slice(bytes).map_err(not_json),
    }
}

/// Parses a capture's `manifest.json`, refusing formats this version does
/// not know.
pub fn read_manifest(bytes: &[u8]) -> Result<Manifest, DocumentError> {
    read_document(bytes, "capture manifest", MANIFEST_FORMAT)
}

/// Parses a rank's `<stem>.meta.json`, refusing formats this version does
/// not know.
pub fn read_sidecar(bytes: &[u8]) -> Result<Sidecar, DocumentError> {
    read_document(bytes, "rank sidecar", SIDECAR_FORMAT)
}

/// A document as stored: pretty JSON, so people can read it in a bucket.
pub fn write_document<T: Serialize>(document: &T) -> Vec<u8> {
    serde_json::to_vec_pretty(document).expect("capture documents serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_kind() {
        assert_eq!(
            ObjectKind::of_key("c/c-TP-0-EP-0.trace.json.gz"),
            Some(ObjectKind::Trace)
        );
        assert_eq!(
            ObjectKind::of_key("c/c-TP-0-EP-0.xplane.pb"),
            Some(ObjectKind::Xplane)
        );
        assert_eq!(
            ObjectKind::of_key("c/c-TP-0-EP-0.meta.json"),
            Some(ObjectKind::Sidecar)
        );
        assert_eq!(ObjectKind::of_key("c/manifest.json"), None);
        assert_eq!(
            ObjectKind::split("p/TP-1-EP-0.xplane.pb"),
            Some(("p/TP-1-EP-0", ObjectKind::Xplane))
        );
    }

    #[test]
    fn an_unknown_format_says_to_upgrade() {
        let error =
            read_manifest(br#"{"format":"rankline.capture/v9","ranks":"changed"}"#).unwrap_err();
        let text = error.to_string();
        assert!(
            matches!(error, DocumentError::UnknownFormat { .. }),
            "{text}"
        );
        assert!(text.contains("rankline.capture/v9"), "{text}");
        assert!(text.contains("upgrade rankline"), "{text}");
        let error = read_sidecar(br#"{"format":"rankline.rank/v2"}"#).unwrap_err();
        assert!(error.to_string().contains("rankline.rank/v1"), "{error}");
    }

    #[test]
    fn a_stored_profile_id_is_checked_when_read() {
        let error =
            read_sidecar(br#"{"format":"rankline.rank/v1","profile_id":"../escape"}"#).unwrap_err();
        assert!(matches!(error, DocumentError::NotJson { .. }), "{error}");
        assert!(error.to_string().contains("profile id"), "{error}");
    }

    #[test]
    fn not_json_names_the_document() {
        let error = read_manifest(b"<html>").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("not a rankline capture manifest"),
            "{error}"
        );
    }
}
