//! `<profile_id>/workload.json`: the requests `rankline capture --workload`
//! sent during the profiling window, written beside the manifest by the CLI
//! that drove them.
//!
//! The file is a Chrome JSON trace (`traceEvents`, one slice per request,
//! `baseTimeNanoseconds` on the coordinator's clock) with the summary under
//! `workload`, so `rankline merge` reads it like any Kineto trace and
//! `rankline capture show` reads only the summary.

use serde::{Deserialize, Serialize};

/// The `format` value of a workload file this version writes.
pub const WORKLOAD_FORMAT: &str = "rankline.workload/v1";
/// The workload file's name inside the capture's folder.
pub const WORKLOAD_NAME: &str = "workload.json";

/// One distinct failure and how often it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadError {
    /// `<url> <kind>: HTTP 400: <the server's message>` (or the transport error).
    pub message: String,
    pub count: u64,
}

/// What the workload did, as `capture show` and scripts read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadSummary {
    /// The SPEC as given (`chat:rate=20,prompt=512,output=64`).
    pub spec: String,
    /// The model name sent (given, or read from the server).
    pub model: String,
    /// The servers' base URLs.
    pub targets: Vec<String>,
    /// Requests sent inside the window (warm-up not counted).
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    /// Distinct failures, most frequent first.
    pub errors: Vec<WorkloadError>,
    /// Latency of the successful requests.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub prompt_tokens: u64,
    pub output_tokens: u64,
    /// Warm-up requests sent before the window.
    pub warmup: u64,
    /// `ok`, or `failed` with `reason` (a server refused the requests, or
    /// none succeeded and idle windows were not allowed).
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The driver's clock minus the coordinator's, when it was measured;
    /// request instants in the file are already on the coordinator's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_ns: Option<i64>,
}

/// The part of `workload.json` that is not the trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadFile {
    pub format: String,
    pub workload: WorkloadSummary,
}
