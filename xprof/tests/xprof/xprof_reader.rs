//! XProf's own reader opens the exported layout: `check_xprof.py` builds
//! XProf's profile plugin on the log dir and converts every host's xplane.
//! Runs only when `RANKLINE_XPROF_PYTHON` names a python with `xprof`
//! installed (`pip install xprof`, ~350 MB); skipped otherwise.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::*;
use rankline_xprof::{export, CaptureLocation, ExportOptions};

#[tokio::test]
async fn xprof_lists_the_run_and_converts_every_host() {
    let Ok(python) = std::env::var("RANKLINE_XPROF_PYTHON") else {
        eprintln!("skipped: set RANKLINE_XPROF_PYTHON to a python with xprof installed");
        return;
    };
    let storage = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let folder = write_folder(
        storage.path(),
        "cap1",
        &capture_objects("cap1", &mixed_capture()),
    );
    let location = CaptureLocation::resolve(folder.to_str().unwrap(), "/nonexistent").unwrap();
    let options = ExportOptions {
        out: Some(out.path().to_path_buf()),
        run: None,
    };
    let summary = export(&location, &options, &|_| {}).await.unwrap();
    assert_eq!(summary.hosts.len(), 3);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("check_xprof.py");
    let output = Command::new(&python)
        .arg(&script)
        .arg(out.path())
        .output()
        .unwrap_or_else(|e| panic!("run {python}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "check_xprof.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for host in &summary.hosts {
        assert!(
            stdout.contains(&host.host),
            "{host:?} not checked:\n{stdout}"
        );
    }
    assert!(stdout.contains("check_xprof: OK"), "{stdout}");
}
