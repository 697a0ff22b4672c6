//! `rankline-simserver`: a simulated sglang-jax / SGLang server for tests,
//! benchmarks, `rankline demo` and users without a TPU.
//!
//! It answers the profiling HTTP API exactly as `shared/docs/SERVERS.md`
//! describes (quirks included), runs forward steps continuously whose
//! collectives rendezvous for real with the other ranks, and writes
//! real-format files: JAX (`trace.json.gz` + `.xplane.pb`) or Kineto.
//!
//! In-process use:
//! ```no_run
//! # async fn demo() -> Result<(), rankline_simserver::SimError> {
//! use rankline_simserver::{serve, SimServerConfig};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! serve(SimServerConfig::default(), listener, std::future::pending()).await
//! # }
//! ```
//! Benchmarks write big ranks with [`synthetic::write_jax_rank`].

mod config;
mod events_log;
mod http;
mod link;
mod requests;
mod scheduler;
mod server;
pub mod synthetic;
pub mod trace;

pub use config::{
    system_hostname, DisaggregationMode, Faults, GroupConfig, ServerKind, SimServerConfig,
};
pub use server::{serve, SimServer};
pub use trace::TraceFileKind;

/// Why a simulated server could not start or write its files.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid simulated-server settings: {0}")]
    Config(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("rendering the trace failed: {0}")]
    Render(String),
}

impl From<std::io::Error> for SimError {
    fn from(source: std::io::Error) -> Self {
        SimError::Io {
            context: "i/o error".to_string(),
            source,
        }
    }
}

/// The wall clock now, epoch ns (what every written timestamp comes from,
/// so `faketime` shifts it).
pub(crate) fn unix_now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as i64)
}

/// Completes once the server's shutdown flag is raised.
pub(crate) async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
