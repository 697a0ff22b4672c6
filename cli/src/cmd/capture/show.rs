//! `rankline capture show ID`: a capture's per-rank results, from the
//! coordinator, else from the manifest in `--storage`; `--follow` follows a
//! running one to its end.

use std::process::ExitCode;

use anyhow::Context as _;
use rankline_client::render as report;
use rankline_layout::manifest_key;
use rankline_proto::convert::summary_from_manifest;
use rankline_proto::{CaptureSummary, GetCaptureRequest, WatchRequest};
use rankline_storage::{Storage, StorageError};

use super::follow::Follower;
use super::workload;
use crate::args::CoordinatorArg;
use crate::output::print_summary;

#[derive(Debug, clap::Args)]
pub(crate) struct ShowArgs {
    /// The capture's profile id.
    profile_id: String,

    /// Read `<ID>/manifest.json` from this storage when the coordinator is
    /// unreachable or does not know the capture.
    #[arg(long)]
    storage: Option<String>,

    /// Follow a running capture to its end.
    #[arg(long)]
    follow: bool,

    /// The summary as JSON.
    #[arg(long)]
    json: bool,

    // Last: its security flags open their own help section.
    #[command(flatten)]
    coordinator: CoordinatorArg,
}

pub(super) async fn run(args: ShowArgs) -> anyhow::Result<ExitCode> {
    if args.follow {
        let mut client = args.coordinator.connect().await?;
        let events = client
            .watch(WatchRequest {
                profile_id: args.profile_id.clone(),
            })
            .await;
        if let Ok(events) = events {
            Follower::new(args.json)
                .follow(events.into_inner(), &args.coordinator, None)
                .await?;
            return Ok(ExitCode::SUCCESS);
        }
        // Not in the coordinator's memory: a stored capture has nothing to follow.
    }
    let summary = find_summary(&args).await?;
    let workload = workload::stored_summary(&summary.storage_url, &summary.profile_id).await;
    let mut json = report::summary_json(&summary);
    if let (Some(workload), Some(object)) = (&workload, json.as_object_mut()) {
        object.insert("workload".into(), serde_json::to_value(workload)?);
    }
    print_summary(args.json, &json, || {
        let mut text = report::summary_table(&summary);
        if let Some(workload) = &workload {
            text.push_str(&workload::summary_text(workload));
        }
        text
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A capture's summary from the coordinator, else from `--storage`.
async fn find_summary(args: &ShowArgs) -> anyhow::Result<CaptureSummary> {
    let from_coordinator = async {
        let mut client = args.coordinator.connect().await?;
        let summary = client
            .get_capture(GetCaptureRequest {
                profile_id: args.profile_id.clone(),
            })
            .await
            .map_err(|status| args.coordinator.failed(&status))?;
        anyhow::Ok(summary.into_inner())
    }
    .await;
    let coordinator_error = match from_coordinator {
        Ok(summary) => return Ok(summary),
        Err(error) => error,
    };
    let Some(storage) = &args.storage else {
        return Err(coordinator_error.context(format!(
            "capture {} not found; to read its manifest straight from storage, add --storage URL",
            args.profile_id
        )));
    };
    tracing::info!("{coordinator_error:#}; reading the manifest from {storage}");
    let storage = Storage::open(storage)?;
    let key = manifest_key(&args.profile_id);
    let manifest = match storage.read_manifest(&key).await {
        Err(error @ StorageError::Document { .. }) => return Err(error.into()),
        read => read.with_context(|| {
            format!(
                "capture {} is neither on the coordinator ({coordinator_error}) nor in {}",
                args.profile_id,
                storage.url()
            )
        })?,
    };
    Ok(summary_from_manifest(&manifest))
}
