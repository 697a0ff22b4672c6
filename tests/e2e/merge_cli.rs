//! `rankline merge` as a person runs it: the built binary, its exit codes,
//! its summary and its error messages.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn rankline(args: &[&str]) -> Output {
    Command::new(rankline_e2e::rankline_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the rankline binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn multi2() -> Vec<String> {
    let root = rankline_e2e::fixture("jax_multi2");
    ["proc0", "proc1"]
        .iter()
        .map(|p| root.join(p).display().to_string())
        .collect()
}

fn with_output(inputs: &[String], out: &Path, extra: &[&str]) -> Output {
    let out = out.display().to_string();
    let mut args = vec!["merge"];
    args.extend(inputs.iter().map(String::as_str));
    args.extend(["-o", out.as_str()]);
    args.extend(extra);
    rankline(&args)
}

#[test]
fn merging_real_jax_ranks_succeeds_with_a_readable_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("multi2.pftrace");
    let run = with_output(&multi2(), &out, &[]);
    let stdout = text(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{stdout}{}", text(&run.stderr));
    assert!(stdout.contains("merged 2 ranks into"), "{stdout}");
    assert!(
        stdout.contains("TP-0-EP-0") && stdout.contains("TP-1-EP-0"),
        "{stdout}"
    );
    assert!(stdout.contains("xplane profile_start_time"), "{stdout}");
    assert!(stdout.contains("ui.perfetto.dev"), "{stdout}");
    assert!(fs::metadata(&out).unwrap().len() > 0);
}

#[test]
fn json_summary_is_machine_readable() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("multi2.json.gz");
    let run = with_output(
        &multi2(),
        &out,
        &["--json", "--drop-python", "--ranks", "TP-1"],
    );
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).expect("stdout is JSON");
    assert_eq!(summary["format"], "json_gz");
    assert_eq!(summary["ranks"].as_array().unwrap().len(), 1);
    assert_eq!(summary["ranks"][0]["rank"], "TP-1-EP-0");
    assert_eq!(summary["ranks"][0]["time_base"], "xplane");
    assert_eq!(summary["filtered_out"][0], "TP-0-EP-0");
    assert!(summary["ranks"][0]["events_in"].as_u64().unwrap() > 0);
}

#[test]
fn a_corrupt_input_names_the_file_and_exits_2_and_keep_going_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("broken-TP-5.trace.json.gz");
    fs::write(
        &corrupt,
        [
            0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3,
        ],
    )
    .unwrap();
    let mut inputs = multi2();
    inputs.push(corrupt.display().to_string());
    let out = dir.path().join("o.pftrace");

    let run = with_output(&inputs, &out, &[]);
    let stderr = text(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("broken-TP-5.trace.json.gz") && stderr.contains("corrupt gzip"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--keep-going"),
        "says what to do next: {stderr}"
    );
    assert!(!out.exists(), "nothing is written when the merge fails");

    let run = with_output(&inputs, &out, &["--keep-going"]);
    let stdout = text(&run.stdout);
    assert_eq!(run.status.code(), Some(1), "{stdout}{}", text(&run.stderr));
    assert!(stdout.contains("skipped TP-5-EP-0"), "{stdout}");
    assert!(out.exists());
}

#[test]
fn usage_errors_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let run = with_output(&multi2(), &dir.path().join("x.txt"), &[]);
    assert_eq!(run.status.code(), Some(2));
    assert!(
        text(&run.stderr).contains(".pftrace"),
        "{}",
        text(&run.stderr)
    );

    let run = with_output(
        &multi2(),
        &dir.path().join("x.pftrace"),
        &["--window", "soon"],
    );
    assert_eq!(run.status.code(), Some(2));
    assert!(
        text(&run.stderr).contains("START..END"),
        "{}",
        text(&run.stderr)
    );

    let run = with_output(
        &multi2(),
        &dir.path().join("x.pftrace"),
        &["--align", "sundial"],
    );
    assert_eq!(run.status.code(), Some(2));
    assert!(
        text(&run.stderr).contains("unknown alignment"),
        "{}",
        text(&run.stderr)
    );

    let missing: PathBuf = dir.path().join("missing");
    let run = with_output(
        &[missing.display().to_string()],
        &dir.path().join("x.pftrace"),
        &[],
    );
    assert_eq!(run.status.code(), Some(2));
    assert!(
        text(&run.stderr).contains("missing: not found"),
        "{}",
        text(&run.stderr)
    );
}

#[test]
fn a_window_outside_the_capture_exits_1_names_the_span_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["late.pftrace", "late.json.gz", "late.zip"] {
        let out = dir.path().join(name);
        let run = with_output(&multi2(), &out, &["--window", "3600s..7200s"]);
        let stderr = text(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("--window 3600000.000..7200000.000 ms lies outside the capture span"),
            "{stderr}"
        );
        assert!(stderr.contains("nothing selected"), "{stderr}");
        assert!(!out.exists(), "no empty trace is left behind");
    }
    let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert!(leftovers.is_empty(), "no temporary files either");
}

#[test]
fn max_size_cuts_the_output_to_fit_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.pftrace");
    assert_eq!(with_output(&multi2(), &full, &[]).status.code(), Some(0));
    let max = fs::metadata(&full).unwrap().len() / 2;
    let out = dir.path().join("half.pftrace");
    let run = with_output(&multi2(), &out, &["--max-size", &max.to_string(), "--json"]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).expect("stdout is JSON");
    let fit = &summary["size_fit"];
    assert_eq!(fit["max_bytes"], max);
    assert!(fit["events_dropped"].as_u64().unwrap() > 0, "{fit}");
    assert!(fs::metadata(&out).unwrap().len() <= max);

    let run = with_output(&multi2(), &out, &["--max-size", &max.to_string()]);
    let stdout = text(&run.stdout);
    assert!(stdout.contains("--max-size"), "{stdout}");
    assert!(stdout.contains("kept the window"), "{stdout}");

    let run = with_output(&multi2(), &out, &["--max-size", "1XB"]);
    assert_eq!(run.status.code(), Some(2));
    assert!(
        text(&run.stderr).contains("unknown unit"),
        "{}",
        text(&run.stderr)
    );
}
