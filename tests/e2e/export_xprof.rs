//! `rankline export-xprof` end to end: a real capture made by `rankline
//! demo`, laid out as an XProf run by the real binary, by capture id and by
//! folder; XProf's own reader checks it when `RANKLINE_XPROF_PYTHON` names a
//! python with `xprof` installed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use rankline_e2e::{rankline_bin, run_rankline, workspace_root};
use rankline_layout::Manifest;

/// A demo capture: (demo folder, capture id, capture folder).
fn demo_capture() -> (tempfile::TempDir, String, PathBuf) {
    let demo = tempfile::tempdir().unwrap();
    let output = run_rankline(&[
        "demo",
        "--out",
        demo.path().to_str().unwrap(),
        "--ranks",
        "2",
        "--duration",
        "300ms",
    ])
    .unwrap();
    assert!(output.status.success(), "demo failed: {}", text(&output));
    let captures = demo.path().join("captures");
    let folder = std::fs::read_dir(&captures)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("manifest.json").is_file())
        .expect("the demo wrote a capture");
    let id = folder.file_name().unwrap().to_string_lossy().into_owned();
    (demo, id, folder)
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn export_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(rankline_bin())
        .arg("export-xprof")
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn xplanes(run_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(run_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".xplane.pb"))
        .collect();
    names.sort();
    names
}

#[test]
fn a_demo_capture_exports_by_id_into_the_default_folder() {
    let (demo, id, folder) = demo_capture();
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(folder.join("manifest.json")).unwrap()).unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let storage = demo.path().join("captures");
    let output = export_in(cwd.path(), &[&id, "--storage", storage.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output));

    let out = cwd.path().join(format!("{id}-xprof"));
    let runs: Vec<PathBuf> = std::fs::read_dir(out.join("plugins/profile"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1);
    let run = runs[0].file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(run.len(), "YYYY_MM_DD_HH_MM_SS".len(), "{run}");
    assert!(run[..4].parse::<i32>().unwrap() > 2000, "{run}");
    let names = xplanes(&runs[0]);
    assert_eq!(names.len(), manifest.ranks.len(), "{names:?}");
    for rank in &manifest.ranks {
        let label = rank.identity.coords.rank_label();
        let name = names
            .iter()
            .find(|n| n.starts_with(&format!("unified-0.{label}.")))
            .unwrap_or_else(|| panic!("no host for {label} in {names:?}"));
        let stored = folder.join(format!("{id}-{label}.xplane.pb"));
        assert_eq!(
            std::fs::read(runs[0].join(name)).unwrap(),
            std::fs::read(stored).unwrap()
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("xprof --logdir {id}-xprof")),
        "{stdout}"
    );
    assert!(stdout.contains("own clock"), "{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("exporting 2 xplane(s)"), "{stderr}");
    assert!(out.join(format!("rankline-xprof-{run}.json")).is_file());
}

#[test]
fn json_summary_and_xprof_reader_on_a_capture_folder() {
    let (_demo, id, folder) = demo_capture();
    let out = tempfile::tempdir().unwrap();
    let output = run_rankline(&[
        "export-xprof",
        folder.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
        "--json",
    ])
    .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["capture_id"], id.as_str());
    let hosts = summary["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 2);
    for host in hosts {
        assert_eq!(host["placed"], "linked");
        assert_eq!(host["sha256_recorded"], true);
        assert!(host["clock"]["offset_ns"].is_i64(), "{host}");
    }

    let Ok(python) = std::env::var("RANKLINE_XPROF_PYTHON") else {
        eprintln!("XProf reader check skipped: set RANKLINE_XPROF_PYTHON to a python with xprof");
        return;
    };
    let check = Command::new(python)
        .arg(workspace_root().join("xprof/check_xprof.py"))
        .arg(out.path())
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check));
}

#[test]
fn an_unknown_capture_id_says_where_it_looked() {
    let storage = tempfile::tempdir().unwrap();
    let output = run_rankline(&[
        "export-xprof",
        "no-such-capture",
        "--storage",
        storage.path().to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("capture \"no-such-capture\" not found") && stderr.contains("--storage"),
        "{stderr}"
    );
}
