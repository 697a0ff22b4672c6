//! `rankline-workload`: real requests at LLM servers' public APIs during a
//! profiling window, so the profile shows the work people want to see
//! (seed 002: a window 99.98% idle; seed 004: every request a 400).
//!
//! A [`WorkloadSpec`] (`chat:rate=20,prompt=512,output=64,warmup=4`) says
//! what to send; [`Driver::prepare`] reads the model name and sends the
//! warm-up; [`Driver::run`] paces requests at every target until told to
//! stop; [`summarize`] and [`workload_file`] turn the records into the
//! summary and the `workload.json` trace.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rankline_workload::WorkloadError> {
//! use std::sync::Arc;
//! use rankline_workload::{summarize, Driver, WorkloadSpec};
//! let spec: WorkloadSpec = "chat:rate=20,output=8".parse()?;
//! let driver = Arc::new(Driver::prepare(spec, vec!["http://127.0.0.1:30000".into()], None).await?);
//! let records = driver.clone().run(tokio::time::sleep(std::time::Duration::from_secs(2))).await;
//! let summary = summarize(&driver, &records, false);
//! println!("{} ok, p50 {:?} ms", summary.ok, summary.p50_ms);
//! # Ok(()) }
//! ```

mod driver;
mod report;
mod request;
mod spec;

pub use driver::{Driver, Outcome, RequestRecord};
pub use report::{summarize, workload_file};
pub use request::server_message;
pub use spec::{Pace, RequestKind, WorkloadSpec, SPEC_HELP};

/// Why a workload could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("bad workload SPEC {0}")]
    Spec(String),
    #[error("no server to send requests to: none of the selected ranks has a server URL; give --workload-url URL")]
    NoTargets,
    #[error("cannot make an HTTP client: {0}")]
    Client(String),
    #[error("cannot tell which model {url} serves ({tried}); name it in the SPEC with model=NAME")]
    NoModel { url: String, tried: String },
    #[error(
        "the warm-up request to {url}{path} failed{}: {message}. Nothing was profiled; fix the \
         workload (model=NAME, another KIND) or the server and try again",
        status.map(|s| format!(" with HTTP {s}")).unwrap_or_default()
    )]
    WarmUp {
        url: String,
        path: &'static str,
        status: Option<u16>,
        message: String,
    },
}
