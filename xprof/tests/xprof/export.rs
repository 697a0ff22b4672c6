//! Exporting captures as XProf runs: from a local folder (hard links), from
//! object storage (downloads), without a manifest, and what goes wrong.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use rankline_storage::Storage;
use rankline_xprof::{
    export, CaptureLocation, ExportError, ExportOptions, ExportSummary, Placement, Progress,
};

fn quiet(_: Progress<'_>) {}

fn options(out: &Path) -> ExportOptions {
    ExportOptions {
        out: Some(out.to_path_buf()),
        run: None,
    }
}

/// Host name -> file bytes of the run folder's xplanes.
fn run_files(out: &Path, run: &str) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(out.join("plugins/profile").join(run))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p
                .file_name()?
                .to_str()?
                .strip_suffix(".xplane.pb")?
                .to_string();
            Some((name, std::fs::read(&p).unwrap()))
        })
        .collect()
}

/// Stores `objects` in `storage` and exports capture `cap1` from there; the
/// output folder lives as long as the returned guard.
async fn export_stored(
    storage: Storage,
    objects: &[(String, Vec<u8>)],
) -> (ExportSummary, tempfile::TempDir) {
    put_all(&storage, objects).await;
    let out = tempfile::tempdir().unwrap();
    let summary = export(
        &CaptureLocation::new(storage, "cap1"),
        &options(out.path()),
        &quiet,
    )
    .await
    .unwrap();
    (summary, out)
}

fn local_capture(root: &Path, id: &str, ranks: &[TestRank]) -> CaptureLocation {
    let folder = write_folder(root, id, &capture_objects(id, ranks));
    CaptureLocation::resolve(folder.to_str().unwrap(), "/nonexistent").unwrap()
}

#[tokio::test]
async fn a_local_capture_becomes_one_run_of_hard_links() {
    let storage = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let location = local_capture(storage.path(), "cap1", &mixed_capture());
    let summary = export(&location, &options(out.path()), &quiet)
        .await
        .unwrap();

    assert_eq!(summary.run, RUN);
    let files = run_files(out.path(), RUN);
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "decode-0.TP-0-EP-0.tpu-c",
            "prefill-0.TP-0-EP-0.tpu-a",
            "prefill-0.TP-1-EP-0.tpu-b"
        ]
    );
    assert_eq!(files["prefill-0.TP-1-EP-0.tpu-b"], fixture_xplane(1));
    assert_eq!(files["decode-0.TP-0-EP-0.tpu-c"], fixture_xplane(0));
    for host in &summary.hosts {
        assert_eq!(host.placed, Placement::Linked, "{}", host.host);
        assert!(host.sha256_recorded);
        assert_eq!(host.sha256, sha256_hex(&files[&host.host]));
        assert_eq!(host.size, files[&host.host].len() as u64);
        assert_eq!(std::fs::metadata(&host.path).unwrap().len(), host.size);
    }
    let prefill0 = &summary.hosts[0];
    assert_eq!(prefill0.rank, "prefill-0 TP-0-EP-0");
    assert_eq!(prefill0.hostname.as_deref(), Some("tpu-a.zone.internal"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let stored = storage
            .path()
            .join("cap1/prefill-0/cap1-TP-0-EP-0.xplane.pb");
        assert_eq!(
            std::fs::metadata(&prefill0.path).unwrap().ino(),
            std::fs::metadata(stored).unwrap().ino(),
            "a hard link, not a copy"
        );
    }

    let skipped: Vec<(&str, &str)> = summary
        .skipped
        .iter()
        .map(|s| (s.rank.as_str(), s.reason.as_str()))
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(skipped.contains(&(
        "unified-0 TP-0-EP-0",
        "an SGLang (PyTorch/Kineto) rank: it writes a trace.json.gz only, which XProf cannot open"
    )));
    assert!(skipped.contains(&(
        "decode-0 TP-1-EP-0",
        "the rank is failed: timed out in collecting"
    )));
    assert!(summary.complete() && summary.failed.is_empty());
}

#[tokio::test]
async fn the_index_maps_hosts_to_ranks_and_clock_offsets() {
    let storage = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let location = local_capture(storage.path(), "cap1", &mixed_capture());
    let summary = export(&location, &options(out.path()), &quiet)
        .await
        .unwrap();

    let index_path = out.path().join(format!("rankline-xprof-{RUN}.json"));
    assert_eq!(summary.index, index_path);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    assert_eq!(index["capture_id"], "cap1");
    assert_eq!(index["run"], RUN);
    let host = &index["hosts"][1];
    assert_eq!(host["host"], "prefill-0.TP-1-EP-0.tpu-b");
    assert_eq!(host["coords"]["tp_rank"], 1);
    assert_eq!(host["clock"]["offset_ns"], 2_000_000);
    // Offsets 1 ms (proc0 ranks) and 2 ms (proc1).
    assert_eq!(summary.clocks.spread_ns, Some(1_000_000));
    assert_eq!(summary.clocks.hosts_measured, 3);
    let text = summary.render();
    assert!(
        text.contains("own clock") && text.contains("spread 1.000 ms"),
        "{text}"
    );
    assert!(
        text.contains(&format!("xprof --logdir {}", out.path().display())),
        "{text}"
    );
}

#[tokio::test]
async fn a_remote_capture_is_downloaded_and_verified() {
    let storage = Storage::open("memory://").unwrap();
    put_all(&storage, &capture_objects("cap1", &mixed_capture())).await;
    let out = tempfile::tempdir().unwrap();
    let location = CaptureLocation::new(storage, "cap1");
    let summary = export(&location, &options(out.path()), &quiet)
        .await
        .unwrap();

    assert_eq!(summary.hosts.len(), 3);
    assert!(summary
        .hosts
        .iter()
        .all(|h| h.placed == Placement::Downloaded && h.sha256_recorded));
    let files = run_files(out.path(), RUN);
    assert_eq!(files["prefill-0.TP-0-EP-0.tpu-a"], fixture_xplane(0));
    assert_eq!(summary.source, "memory://cap1");
}

#[tokio::test]
async fn a_file_url_and_a_capture_id_find_the_same_capture() {
    let storage = tempfile::tempdir().unwrap();
    let folder = write_folder(
        storage.path(),
        "cap1",
        &capture_objects("cap1", &mixed_capture()),
    );
    let by_url =
        CaptureLocation::resolve(&format!("file://{}/", folder.display()), "/nonexistent").unwrap();
    let by_id = CaptureLocation::resolve("cap1", storage.path().to_str().unwrap()).unwrap();
    for location in [by_url, by_id] {
        let out = tempfile::tempdir().unwrap();
        let summary = export(&location, &options(out.path()), &quiet)
            .await
            .unwrap();
        assert_eq!(summary.capture_id, "cap1");
        assert_eq!(run_files(out.path(), RUN).len(), 3);
    }
}

#[tokio::test]
async fn a_wrong_file_is_reported_and_not_left_in_the_run() {
    let storage = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let location = local_capture(storage.path(), "cap1", &mixed_capture());
    // The stored file no longer matches what its agent recorded.
    let stored = storage
        .path()
        .join("cap1/prefill-0/cap1-TP-1-EP-0.xplane.pb");
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&stored, bytes).unwrap();

    let summary = export(&location, &options(out.path()), &quiet)
        .await
        .unwrap();
    assert!(!summary.complete());
    assert_eq!(summary.failed.len(), 1);
    let failed = &summary.failed[0];
    assert_eq!(failed.host, "prefill-0.TP-1-EP-0.tpu-b");
    assert!(
        failed.reason.contains("sha256") && failed.reason.contains("sidecar recorded"),
        "{}",
        failed.reason
    );
    assert!(!run_files(out.path(), RUN).contains_key("prefill-0.TP-1-EP-0.tpu-b"));
    assert_eq!(summary.hosts.len(), 2);
}

#[tokio::test]
async fn a_missing_xplane_object_is_a_failed_host() {
    let storage = Storage::open("memory://").unwrap();
    let objects: Vec<_> = capture_objects("cap1", &mixed_capture())
        .into_iter()
        .filter(|(key, _)| key != "cap1/decode-0/cap1-TP-0-EP-0.xplane.pb")
        .collect();
    let (summary, _out) = export_stored(storage, &objects).await;
    assert_eq!(summary.failed.len(), 1);
    assert_eq!(
        summary.failed[0].reason,
        "cap1/decode-0/cap1-TP-0-EP-0.xplane.pb is not in storage"
    );
    assert_eq!(summary.hosts.len(), 2);
}

#[tokio::test]
async fn without_a_manifest_the_folder_is_listed() {
    let storage = Storage::open("memory://").unwrap();
    let mut objects: Vec<_> = capture_objects("cap1", &mixed_capture())
        .into_iter()
        .filter(|(key, _)| !key.ends_with("manifest.json"))
        // One rank's sidecar is lost: its xplane is named from its key.
        .filter(|(key, _)| key != "cap1/decode-0/cap1-TP-0-EP-0.meta.json")
        .collect();
    objects.push(("cap1/vm.xplane.pb".into(), fixture_xplane(1)));
    let (summary, _out) = export_stored(storage, &objects).await;

    assert_eq!(summary.capture_id, "cap1");
    assert_eq!(summary.run, RUN, "the earliest start a sidecar recorded");
    let names: Vec<&str> = summary.hosts.iter().map(|h| h.host.as_str()).collect();
    assert_eq!(
        names,
        [
            "prefill-0.TP-0-EP-0.tpu-a",
            "prefill-0.TP-1-EP-0.tpu-b",
            "decode-0.TP-0-EP-0",
            "vm"
        ]
    );
    assert!(!summary.hosts[2].sha256_recorded && summary.hosts[2].clock.is_none());
    assert!(summary.warnings[0].contains("no manifest.json"));
    assert!(summary
        .warnings
        .iter()
        .any(|w| w.starts_with("cap1/vm.xplane.pb has no sidecar")));
    assert_eq!(summary.skipped.len(), 1, "the Kineto rank's sidecar");
}

#[tokio::test]
async fn a_rerun_keeps_verified_files_and_refuses_another_capture_in_the_run() {
    let storage = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let location = local_capture(storage.path(), "cap1", &mixed_capture());
    export(&location, &options(out.path()), &quiet)
        .await
        .unwrap();
    let again = export(&location, &options(out.path()), &quiet)
        .await
        .unwrap();
    assert!(again.hosts.iter().all(|h| h.placed == Placement::Kept));

    // Another capture started in the same second, exported into the same dir.
    let other = local_capture(storage.path(), "cap2", &mixed_capture());
    let error = export(&other, &options(out.path()), &quiet)
        .await
        .unwrap_err();
    assert!(matches!(error, ExportError::RunTaken { .. }), "{error}");
    assert!(
        error.to_string().contains("already holds capture cap1"),
        "{error}"
    );
    let renamed = ExportOptions {
        run: Some(format!("{RUN}_cap2")),
        ..options(out.path())
    };
    let summary: ExportSummary = export(&other, &renamed, &quiet).await.unwrap();
    assert_eq!(run_files(out.path(), &summary.run).len(), 3);
}

#[tokio::test]
async fn a_capture_without_xplanes_is_an_error_that_says_why() {
    let storage = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let kineto_only: Vec<TestRank> = mixed_capture()
        .into_iter()
        .filter(|r| matches!(r.stored, Stored::Kineto))
        .collect();
    let location = local_capture(storage.path(), "cap1", &kineto_only);
    let error = export(&location, &options(out.path()), &quiet)
        .await
        .unwrap_err();
    assert!(matches!(error, ExportError::NoXplanes { .. }));
    assert!(error.to_string().contains("Kineto"), "{error}");
    assert!(!out.path().join("plugins").exists(), "nothing written");
}

#[test]
fn bad_capture_names_say_what_to_do() {
    let storage = tempfile::tempdir().unwrap();
    let root = storage.path().to_str().unwrap();

    let error = CaptureLocation::resolve("no-such-capture", root).unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, ExportError::NotFound { .. }));
    assert!(
        text.contains("no-such-capture") && text.contains("--storage"),
        "{text}"
    );

    let error = CaptureLocation::resolve("bad id!", root).unwrap_err();
    assert!(matches!(error, ExportError::BadCaptureId { .. }));
    assert!(
        error
            .to_string()
            .contains("neither a capture folder nor a capture id"),
        "{error}"
    );

    let missing = storage.path().join("gone");
    let error = CaptureLocation::resolve(missing.to_str().unwrap(), root).unwrap_err();
    assert!(error.to_string().contains("there is no folder"), "{error}");
    let error =
        CaptureLocation::resolve(&format!("file://{}", missing.display()), root).unwrap_err();
    assert!(matches!(error, ExportError::NotFound { .. }), "{error}");
    assert!(!missing.exists(), "looking never creates a folder");
}

#[tokio::test]
async fn an_empty_remote_prefix_is_not_found() {
    let storage = Storage::open("memory://").unwrap();
    let out = tempfile::tempdir().unwrap();
    let error = export(
        &CaptureLocation::new(storage, "nothing"),
        &options(out.path()),
        &quiet,
    )
    .await
    .unwrap_err();
    assert!(matches!(error, ExportError::NotFound { .. }), "{error}");
}

/// A manifest is input: names in it must not place files outside the run
/// folder, whatever they say.
#[tokio::test]
async fn hostile_names_in_a_manifest_stay_inside_the_run_folder() {
    let storage = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let location = local_capture(storage.path(), "cap1", &mixed_capture());
    let manifest_path = storage.path().join("cap1/manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    for rank in manifest["ranks"].as_array_mut().unwrap() {
        rank["identity"]["role"] = "../../../../escaped".into();
        rank["identity"]["host"] = "../up,and/away".into();
        // Without a sidecar the manifest's identity is all there is.
        rank["objects"]["meta"] = serde_json::Value::Null;
    }
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();

    let export_dir = out.path().join("x");
    let summary = export(&location, &options(&export_dir), &quiet)
        .await
        .unwrap();
    let run_dir = export_dir.join("plugins/profile").join(&summary.run);
    assert_eq!(summary.hosts.len(), 3);
    for host in &summary.hosts {
        assert_eq!(host.path.parent(), Some(run_dir.as_path()), "{}", host.host);
        assert!(!host.host.starts_with('.'), "{}", host.host);
        assert!(!host.host.contains(['/', ',']), "{}", host.host);
    }
    let outside: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(outside, ["x"], "nothing written beside the export");
}
