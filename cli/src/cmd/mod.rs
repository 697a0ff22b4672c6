//! One module per subcommand: argument definitions and the glue that calls
//! the library crates.

pub mod agent;
pub mod capture;
pub mod coordinator;
pub mod demo;
pub mod diff;
pub mod export_xprof;
pub mod merge;
pub mod report;
pub mod security;
pub mod sim_server;
mod workload;

/// A multi-threaded tokio runtime for the async subcommands.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Writes a command's summary on stdout: pretty JSON with `--json`, else
/// its text.
pub fn print_summary<T: serde::Serialize>(
    json: bool,
    summary: &T,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut stdout, summary)
            .map_err(|e| anyhow::anyhow!("cannot write the summary: {e}"))?;
        writeln!(stdout)?;
    } else {
        write!(stdout, "{}", text())?;
    }
    Ok(())
}
