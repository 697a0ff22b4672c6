//! `rankline stop ID`: ask every rank of a running capture to stop now.

use std::process::ExitCode;

use rankline_proto::StopRequest;

use crate::args::CoordinatorArg;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The capture's profile id.
    profile_id: String,

    #[command(flatten)]
    coordinator: CoordinatorArg,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::cmd::runtime()?.block_on(async {
        let mut client = args.coordinator.connect().await?;
        let told = client
            .stop(StopRequest {
                profile_id: args.profile_id.clone(),
            })
            .await
            .map_err(|status| args.coordinator.failed(&status))?
            .into_inner()
            .ranks;
        println!(
            "{}",
            args.coordinator.hint(&format!(
                "asked {told} rank(s) of capture {id} to stop; follow it with `rankline capture show {id} --follow`",
                id = args.profile_id
            ))
        );
        Ok(ExitCode::SUCCESS)
    })
}
