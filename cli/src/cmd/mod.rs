//! One module per subcommand (`capture` holds its own two and their
//! shared follow loop): argument definitions and the glue that calls the
//! library crates.

pub mod agent;
pub mod agents;
pub mod capture;
pub mod captures;
pub mod coordinator;
pub mod demo;
pub mod diff;
pub mod export_xprof;
pub mod merge;
pub mod report;
pub mod sim_server;
pub mod stop;

/// A multi-threaded tokio runtime for the async subcommands.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
