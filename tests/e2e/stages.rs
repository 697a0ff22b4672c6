//! SGLang `profile_by_stage` end to end (issue 13): a rank's `-EXTEND` and
//! `-DECODE` files are stored per stage and merged as separate tracks.

use rankline_e2e::{merge_json, Cluster, TraceProcessor};

#[test]
fn per_stage_files_are_stored_per_stage_and_merged_as_tracks() {
    let mut cluster = Cluster::start(&[]).unwrap();
    let url = cluster
        .add_server("sglang", &["--kind", "sglang", "--hostname", "gpu0"])
        .unwrap();
    cluster
        .add_agent("agent", &url, &["--kind", "sglang", "--host", "gpu0"])
        .unwrap();
    cluster.wait_for_agents(1).unwrap();
    let run = cluster
        .capture(&[
            "--profile-id",
            "staged",
            "--duration",
            "800ms",
            "--server-arg",
            "profile_by_stage=true",
        ])
        .unwrap();
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let capture = cluster.storage().join("staged");
    for stage in ["EXTEND", "DECODE"] {
        let file = capture.join(format!("staged-TP-0-EP-0-{stage}.trace.json.gz"));
        assert!(file.is_file(), "{} stored", file.display());
    }

    let out = cluster.work.path().join("staged.pftrace");
    let summary = merge_json(&capture, &out, &[]).unwrap();
    let mut tracks: Vec<(String, String)> = summary["ranks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["rank"].as_str().unwrap().into(),
                r["name"].as_str().unwrap().into(),
            )
        })
        .collect();
    tracks.sort();
    assert_eq!(
        tracks,
        [
            (
                "TP-0-EP-0/DECODE".to_string(),
                "unified-0 TP-0 EP-0 DECODE (gpu0)".to_string()
            ),
            (
                "TP-0-EP-0/EXTEND".to_string(),
                "unified-0 TP-0 EP-0 EXTEND (gpu0)".to_string()
            ),
        ]
    );
    if let Some(tp) = TraceProcessor::find() {
        let import = tp.import(&out).unwrap();
        assert!(import.problems.is_empty(), "{:?}", import.problems);
        let tables = tp
            .query(
                &out,
                "select name from process where name like '%EXTEND%' or name like '%DECODE%';",
            )
            .unwrap();
        assert_eq!(tables[0].rows.len(), 2, "{:?}", tables[0]);
    }
}
