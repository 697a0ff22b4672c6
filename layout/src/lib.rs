//! What a rankline capture looks like in storage.
//!
//! Every crate that reads or writes a capture agrees through this one: the
//! profile id rules, the canonical per-rank object names, the per-rank
//! metadata sidecar (`<stem>.meta.json`, written last as the completion
//! marker) and the capture manifest (`<profile_id>/manifest.json`).
//!
//! ```text
//! <storage>/<profile_id>/manifest.json
//! <storage>/<profile_id>/[<role>-<worker>/]<profile_id>-TP-<n>-EP-<m>.trace.json.gz
//! <storage>/<profile_id>/[<role>-<worker>/]<profile_id>-TP-<n>-EP-<m>.xplane.pb
//! <storage>/<profile_id>/[<role>-<worker>/]<profile_id>-TP-<n>-EP-<m>.meta.json
//! ```

mod capture;
mod clock;
mod manifest;
mod names;
mod profile_id;
mod sidecar;
mod time_base;
mod vllm;
mod vocabulary;
mod workload;

pub use capture::{
    manifest_key, read_manifest, read_sidecar, write_document, DocumentError, ObjectKind,
    SIDECAR_SUFFIX, TRACE_SUFFIX, XPLANE_SUFFIX,
};
pub use clock::{ClockFit, ClockSampleRecord};
pub use manifest::{
    AuditEntry, Manifest, ManifestRank, RankObjects, MANIFEST_FORMAT, MANIFEST_NAME,
};
pub use names::{parse_rank_file_name, sglang_ep_rank, ParsedRankName, RankCoords, RankKey};
pub use profile_id::{generate_profile_id, ProfileId, ProfileIdError};
pub use sidecar::{
    FileKind, FileRecord, RankIdentity, Sidecar, TimeBase, TimeBaseSource, SIDECAR_FORMAT,
};
pub use time_base::scan_kineto_base;
pub use vllm::VllmTraceName;
pub use vocabulary::{CaptureStatus, RankStatus, Role, ServerKind, SettingsRecord, UnknownRole};
pub use workload::{WorkloadError, WorkloadFile, WorkloadSummary, WORKLOAD_FORMAT, WORKLOAD_NAME};
