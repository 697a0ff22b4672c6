//! Storage against a real S3-compatible server (s3s-fs on loopback, installed
//! by `.ci/run`): the same calls the agent and coordinator make.

use crate::common;

use common::ServerProcess;
use rankline_storage::Storage;

const INSTALL_HINT: &str =
    "run `bash .ci/run` or `cargo install s3s-fs@0.14.1 --features binary --locked`";

#[tokio::test]
async fn uploads_lists_and_downloads_through_s3() {
    let server = ServerProcess::start(
        "s3s-fs",
        INSTALL_HINT,
        |root| std::fs::create_dir(root.join("traces")).unwrap(),
        |port, root| {
            let mut args: Vec<String> = ["--host", "127.0.0.1", "--port", &port.to_string()]
                .map(String::from)
                .to_vec();
            args.extend(
                [
                    "--access-key",
                    "rankline",
                    "--secret-key",
                    "rankline-secret",
                ]
                .map(String::from),
            );
            args.push(root.display().to_string());
            args
        },
    )
    // s3s-fs is always installed by .ci/run, so its absence is a failure.
    .unwrap_or_else(|| panic!("s3s-fs is not installed: {INSTALL_HINT}"));
    // Each test binary runs in its own process under nextest, so setting the
    // usual AWS variables here is what a user's shell would do.
    std::env::set_var("AWS_ENDPOINT_URL", server.endpoint());
    std::env::set_var("AWS_ALLOW_HTTP", "true");
    std::env::set_var("AWS_ACCESS_KEY_ID", "rankline");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "rankline-secret");
    std::env::set_var("AWS_REGION", "us-east-1");

    let storage = Storage::open("s3://traces/team-a").unwrap();
    let samples = common::samples();
    common::store_samples(&storage, &samples).await;
    common::read_samples_back(&storage, &samples).await;
}
