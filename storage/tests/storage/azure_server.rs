//! Storage against a real Azure Blob emulator: Azurite on loopback (npm's
//! `azurite`; `.ci/run` installs it), reached the way a user points rankline
//! at one: `AZURE_STORAGE_USE_EMULATOR=true` and `AZURITE_BLOB_STORAGE_URL`.
//! Everything is exercised, block-blob multipart uploads included.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use common::ServerProcess;
use rankline_storage::Storage;

const INSTALL_HINT: &str = "run `bash .ci/run` or `npm install -g azurite@3.37.0`";

/// Azurite's well-known development account and key.
const ACCOUNT: &str = "devstoreaccount1";
const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const API_VERSION: &str = "2021-08-06";

/// Creates a blob container, as an administrator would before pointing
/// rankline at it: object_store itself never creates containers. The request
/// carries a Shared Key signature, the only way Azurite lets one in.
fn create_container(port: u16, container: &str) {
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    // The Shared Key string-to-sign: the verb, eleven standard headers (all
    // empty here, Content-Length included since it is zero), then the x-ms-
    // headers and the resource, path-style for the emulator.
    let string_to_sign = format!(
        "PUT\n{}x-ms-date:{date}\nx-ms-version:{API_VERSION}\n/{ACCOUNT}/{ACCOUNT}/{container}\nrestype:container",
        "\n".repeat(11)
    );
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        &BASE64.decode(ACCOUNT_KEY).unwrap(),
    );
    let signature = BASE64.encode(ring::hmac::sign(&key, string_to_sign.as_bytes()));
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "PUT /{ACCOUNT}/{container}?restype=container HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         x-ms-date: {date}\r\nx-ms-version: {API_VERSION}\r\n\
         Authorization: SharedKey {ACCOUNT}:{signature}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 201"),
        "Azurite refused to create container {container}: {response}"
    );
}

#[tokio::test]
async fn uploads_lists_and_downloads_through_azure() {
    let Some(server) = ServerProcess::start(
        "azurite-blob",
        INSTALL_HINT,
        |_| {},
        |port, data| {
            let mut args: Vec<String> =
                ["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()]
                    .map(String::from)
                    .to_vec();
            args.extend(["--location".into(), data.display().to_string()]);
            // Azurite refuses clients newer than itself unless told not to.
            args.extend(["--silent", "--skipApiVersionCheck"].map(String::from));
            args
        },
    ) else {
        return;
    };
    create_container(server.port(), "traces");
    // Each test binary runs in its own process under nextest, so setting the
    // usual variables here is what a user's shell would do.
    std::env::set_var("AZURE_STORAGE_USE_EMULATOR", "true");
    std::env::set_var("AZURITE_BLOB_STORAGE_URL", server.endpoint());

    let storage = Storage::open("az://traces/team-a").unwrap();
    let samples = common::samples();
    common::store_samples(&storage, &samples).await;
    common::read_samples_back(&storage, &samples).await;
}
