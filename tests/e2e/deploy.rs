//! The deployment files in deploy/ configure rankline through `RANKLINE_*`
//! variables; every one they use must be a variable the CLI reads, or a
//! deployment would silently run with defaults.

use std::collections::BTreeSet;

use rankline_e2e::{run_rankline, workspace_root};

fn variables_in(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("RANKLINE_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || *c == '_')
            .collect();
        found.insert(name.trim_end_matches('_').to_string());
        rest = &rest[at + "RANKLINE_".len()..];
    }
    found
}

#[test]
fn every_variable_the_deploy_files_set_is_read_by_the_cli() {
    let mut known = BTreeSet::new();
    for command in ["coordinator", "agent", "capture"] {
        let help = run_rankline(&[command, "--help"]).unwrap();
        known.extend(variables_in(&String::from_utf8_lossy(&help.stdout)));
    }
    let mut used = BTreeSet::new();
    for dir in ["deploy/kubernetes", "deploy/systemd"] {
        for entry in std::fs::read_dir(workspace_root().join(dir)).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            used.extend(variables_in(&text));
        }
    }
    assert!(!used.is_empty());
    let unknown: Vec<_> = used.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "deploy/ sets variables the CLI ignores: {unknown:?}"
    );
}
