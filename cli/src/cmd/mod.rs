//! One module per subcommand: argument definitions and the glue that calls
//! the library crates.

pub mod agent;
pub mod capture;
pub mod coordinator;
pub mod demo;
pub mod export_xprof;
pub mod merge;
pub mod sim_server;

/// A multi-threaded tokio runtime for the async subcommands.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
