//! `rankline demo`, the README's first command: one process runs a whole
//! capture and merge and leaves a capture folder and a merged trace behind.

use rankline_e2e::run_rankline;
use rankline_layout::Manifest;

/// The demo's output folder, its stdout and its stderr.
fn run_demo(extra: &[&str]) -> (tempfile::TempDir, String, String) {
    let out = tempfile::tempdir().unwrap();
    let mut args = vec![
        "demo",
        "--out",
        out.path().to_str().unwrap(),
        "--duration",
        "300ms",
    ];
    args.extend_from_slice(extra);
    let output = run_rankline(&args).unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (out, stdout, stderr)
}

/// The capture's manifest and the merged trace the demo wrote.
fn outputs(out: &std::path::Path) -> (Manifest, std::path::PathBuf) {
    let captures = out.join("captures");
    let capture = std::fs::read_dir(&captures)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("manifest.json").is_file())
        .expect("a capture with a manifest");
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(capture.join("manifest.json")).unwrap()).unwrap();
    let merged = out.join(format!("{}.pftrace", manifest.profile_id));
    (manifest, merged)
}

#[test]
fn demo_captures_every_rank_and_merges_them_into_one_pftrace() {
    let (out, stdout, stderr) = run_demo(&["--ranks", "3"]);
    let (manifest, merged) = outputs(out.path());
    assert_eq!(manifest.status, "complete");
    assert_eq!(manifest.ranks.len(), 3);
    assert!(std::fs::metadata(&merged).unwrap().len() > 0);
    assert!(
        stdout.contains(&*merged.to_string_lossy()),
        "says where: {stdout}"
    );
    assert!(
        stdout.contains("ui.perfetto.dev"),
        "says how to open it: {stdout}"
    );
    // The ranks were read from their xplanes, device planes included.
    assert!(stdout.contains("xplane: 2 planes"), "{stdout}");
    assert!(stdout.contains("rankline export-xprof"), "{stdout}");
    // A clean run ends quietly: its teardown is not news.
    assert!(
        !stderr.contains("WARN") && !stderr.contains("ERROR"),
        "{stderr}"
    );
}

#[test]
fn demo_with_pd_has_prefill_and_decode_workers() {
    let (out, _, _) = run_demo(&["--pd", "--ranks", "2"]);
    let (manifest, merged) = outputs(out.path());
    let mut roles: Vec<String> = manifest
        .ranks
        .iter()
        .map(|r| r.identity.coords.role.to_string())
        .collect();
    roles.sort();
    assert_eq!(roles, ["decode", "decode", "prefill", "prefill"]);
    assert!(merged.is_file());
}

/// A relative `--out` (the default is `./rankline-demo`) is printed as a
/// clean absolute path, so every path and hint can be pasted anywhere.
#[test]
fn a_relative_out_folder_prints_clean_absolute_paths() {
    let cwd = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(rankline_e2e::rankline_bin())
        .args([
            "demo",
            "--out",
            "./here",
            "--ranks",
            "1",
            "--duration",
            "300ms",
        ])
        .current_dir(cwd.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let folder = cwd.path().join("here");
    assert!(
        stdout.contains(&format!("Everything is under {}", folder.display())),
        "{stdout}"
    );
    assert!(!stdout.contains("/./"), "{stdout}");
}
