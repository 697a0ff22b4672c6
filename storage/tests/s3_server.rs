//! Storage against a real S3-compatible server (s3s-fs on loopback, installed
//! by `.ci/run`): the same calls the agent and coordinator make.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rankline_storage::Storage;

struct S3Server {
    child: Child,
    endpoint: String,
    _root: tempfile::TempDir,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn start_s3(bucket: &str) -> S3Server {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join(bucket)).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("s3s-fs")
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", "rankline", "--secret-key", "rankline-secret"])
        .arg(root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("s3s-fs is not installed: run `bash .ci/run` or `cargo install s3s-fs@0.14.1 --features binary --locked`");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "s3s-fs did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    S3Server {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
        _root: root,
    }
}

#[tokio::test]
async fn uploads_lists_and_downloads_through_s3() {
    let server = start_s3("traces");
    // Each test binary runs in its own process under nextest, so setting the
    // usual AWS variables here is what a user's shell would do.
    std::env::set_var("AWS_ENDPOINT_URL", &server.endpoint);
    std::env::set_var("AWS_ALLOW_HTTP", "true");
    std::env::set_var("AWS_ACCESS_KEY_ID", "rankline");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "rankline-secret");
    std::env::set_var("AWS_REGION", "us-east-1");

    let storage = Storage::open("s3://traces/team-a").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    let data: Vec<u8> = (0..20 * 1024 * 1024 + 7).map(|i| (i % 253) as u8).collect();
    std::fs::write(&big, &data).unwrap();

    let stored = storage
        .upload_file("cap/cap-TP-0-EP-0.trace.json.gz", &big, &|_| {})
        .await
        .unwrap();
    assert_eq!(stored.size, data.len() as u64);
    storage
        .verify(&stored.key, stored.size, &stored.sha256)
        .await
        .unwrap();
    storage
        .put_bytes("cap/cap-TP-0-EP-0.meta.json", b"{}".to_vec())
        .await
        .unwrap();

    let keys: Vec<String> = storage
        .list("cap")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(
        keys,
        [
            "cap/cap-TP-0-EP-0.meta.json",
            "cap/cap-TP-0-EP-0.trace.json.gz"
        ]
    );
    let back = dir.path().join("back.bin");
    storage
        .download_to("cap/cap-TP-0-EP-0.trace.json.gz", &back)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&back).unwrap(), data);
}
