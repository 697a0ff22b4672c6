//! `rankline capture`, `stop`, `agents`, `captures` (being built).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {}
#[derive(Debug, clap::Args)]
pub struct StopArgs {}
#[derive(Debug, clap::Args)]
pub struct AgentsArgs {}
#[derive(Debug, clap::Args)]
pub struct CapturesArgs {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
pub fn run_stop(_args: StopArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
pub fn run_agents(_args: AgentsArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
pub fn run_captures(_args: CapturesArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
