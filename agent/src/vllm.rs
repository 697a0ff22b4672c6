//! vLLM: its profiler writes into the server's own fixed dir
//! (`VLLM_TORCH_PROFILER_DIR`, given to the agent as `--profiler-dir`),
//! never into a dir the request names, one
//! `<worker>.<unix ms>.pt.trace.json.gz` per worker
//! (`layout::VllmTraceName`). So this rank's files are the ones naming its
//! TP/DP/PP/EP ranks that were exported after the capture's start: older
//! captures' files stay in the same dir.

use std::io;
use std::path::Path;

use rankline_layout::{FileKind, RankCoords, VllmTraceName};

use crate::files::{list_dir, FoundFile, Scan};

/// This rank's vLLM trace below `dir`, exported at or after `since_unix_ms`
/// (this host's clock). torch writes the file in place, so a complete scan
/// is one the stability check then confirms by size.
pub(crate) fn scan(dir: &Path, coords: &RankCoords, since_unix_ms: i64) -> io::Result<Scan> {
    let mut files = Vec::new();
    let mut others = Vec::new();
    for (name, size) in list_dir(dir, false)? {
        let Some(parsed) = VllmTraceName::parse(&name) else {
            if name.ends_with(".json.gz") || name.ends_with(".json") {
                others.push(name);
            }
            continue;
        };
        let ours = parsed.tp_rank == coords.tp_rank
            && parsed.ep_rank == coords.ep_rank
            && parsed.dp_rank == coords.dp_rank.unwrap_or(0)
            && parsed.pp_rank == coords.pp_rank.unwrap_or(0);
        if !ours {
            others.push(name);
        } else if parsed.unix_ms >= since_unix_ms {
            files.push((parsed.unix_ms, name, size));
        }
    }
    // A rank has one file per capture; the newest wins if a stray start made more.
    files.sort();
    others.sort();
    let files: Vec<FoundFile> = files
        .pop()
        .map(|(_, name, size)| FoundFile {
            kind: FileKind::Trace,
            path: dir.join(name),
            size,
            stage: None,
        })
        .into_iter()
        .collect();
    Ok(Scan {
        all_present: !files.is_empty(),
        ours_pending: false,
        files,
        others,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_ranks_file_of_this_capture_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "dp0_pp0_tp1_dcp0_ep0_rank1.1000.pt.trace.json.gz", // an older capture
            "dp0_pp0_tp1_dcp0_ep0_rank1.5000.pt.trace.json.gz",
            "dp0_pp0_tp0_dcp0_ep0_rank0.5000.pt.trace.json.gz", // another rank
            "profiler_out_1.txt",
        ] {
            std::fs::write(dir.path().join(name), b"{}").unwrap();
        }
        let coords = RankCoords::unified(1, 0);
        let scan = scan(dir.path(), &coords, 4000).unwrap();
        assert!(scan.all_present);
        assert_eq!(scan.files.len(), 1);
        assert!(scan.files[0]
            .path
            .ends_with("dp0_pp0_tp1_dcp0_ep0_rank1.5000.pt.trace.json.gz"));
        assert_eq!(
            scan.others,
            ["dp0_pp0_tp0_dcp0_ep0_rank0.5000.pt.trace.json.gz"]
        );
        assert!(!super::scan(dir.path(), &coords, 6000).unwrap().all_present);
    }
}
