//! `rankline captures`: the captures the coordinator knows, as a table or
//! `--json`.

use std::process::ExitCode;

use rankline_client::render as report;
use rankline_proto::ListCapturesRequest;

pub(crate) use crate::args::ListArgs as Args;
use crate::output::print_list;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::cmd::runtime()?.block_on(async {
        let mut client = args.coordinator.connect().await?;
        let captures = client
            .list_captures(ListCapturesRequest {})
            .await
            .map_err(|status| args.coordinator.failed(&status))?
            .into_inner()
            .captures;
        print_list(
            args.json,
            &captures,
            report::summary_json,
            || {
                args.coordinator
                    .hint("no captures yet; start one with `rankline capture`")
            },
            report::captures_table,
        )?;
        Ok(ExitCode::SUCCESS)
    })
}
