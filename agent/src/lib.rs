//! The rankline agent: the daemon beside each server process.
//!
//! It dials the coordinator (`AgentLink.Join`) and keeps that link up
//! through outages, measures its clock against the coordinator's, and on a
//! `StartCapture` drives the local server's profiling HTTP API at the common
//! start instant, waits for the rank's complete files, uploads them under
//! their canonical names (verified, retried until storage takes them,
//! resumed after a restart from the spool's journal) and writes the sidecar
//! last.
//!
//! ```no_run
//! # async fn example() -> Result<(), rankline_agent::AgentError> {
//! let config = rankline_agent::AgentConfig {
//!     coordinator_url: "http://10.0.0.1:7471".into(),
//!     spool: "/var/lib/rankline/spool".into(),
//!     ..Default::default()
//! };
//! rankline_agent::Agent::run(config, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```

mod agent;
mod book;
mod capture;
pub mod claim;
pub mod clock;
mod config;
pub mod discovery;
pub mod files;
mod host;
mod link;
pub mod server;
pub mod spool;
pub mod time_base;
mod upload;
mod vllm;

pub use agent::{Agent, AgentError};
pub use capture::CaptureError;
pub use config::{
    AgentConfig, KindChoice, ModeChoice, Timing, DEFAULT_COORDINATOR_URL, DEFAULT_SERVER_URL,
    DEFAULT_SPOOL,
};
pub use host::{run_ranks, RankChoice};
pub use spool::Retention;
