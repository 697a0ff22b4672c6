//! `rankline agents`: the agents connected to the coordinator, with their
//! clock offsets, as a table or `--json`.

use std::process::ExitCode;

use rankline_client::render as report;
use rankline_proto::{unix_now_ns, ListAgentsRequest};

pub(crate) use crate::args::ListArgs as Args;
use crate::output::print_list;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::cmd::runtime()?.block_on(async {
        let mut client = args.coordinator.connect().await?;
        let agents = client
            .list_agents(ListAgentsRequest {})
            .await
            .map_err(|status| args.coordinator.failed(&status))?
            .into_inner()
            .agents;
        let url = &args.coordinator.coordinator;
        print_list(
            args.json,
            &agents,
            report::agent_json,
            || {
                format!(
                    "no agents have joined {url}; start one beside each server with \
                     `rankline agent --coordinator {url}`"
                )
            },
            |agents| report::agents_table(agents, unix_now_ns()),
        )?;
        Ok(ExitCode::SUCCESS)
    })
}
