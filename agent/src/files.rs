//! Which files in a capture's output folder belong to this rank, and when
//! they are complete (every expected file present, no `.tmp` pending, sizes
//! unchanged over two polls).

use std::io;
use std::path::{Path, PathBuf};

use rankline_layout::{parse_rank_file_name, FileKind, RankCoords, TRACE_SUFFIX, XPLANE_SUFFIX};
use rankline_proto::ServerKind;

/// Where JAX puts a session's files below the output folder.
const JAX_SESSIONS: &str = "plugins/profile";

/// One file of the rank as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundFile {
    pub kind: FileKind,
    pub path: PathBuf,
    pub size: u64,
    /// SGLang's `-EXTEND` / `-DECODE` part when the server profiled by stage.
    pub stage: Option<String>,
}

impl FoundFile {
    /// The name the server gave the file.
    pub fn source_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// One look at the output folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// This rank's files, in a stable order.
    pub files: Vec<FoundFile>,
    /// Every expected file is there and none is still being written.
    pub all_present: bool,
    /// A file of this rank is still being written (an SGLang `.tmp`).
    pub ours_pending: bool,
    /// Names of other trace-like files seen, to tell a user whose `--host`
    /// or ranks do not match what the server wrote.
    pub others: Vec<String>,
}

/// What the agent looks for: the server kind, the host name JAX uses and
/// the rank SGLang's file names carry.
#[derive(Debug, Clone)]
pub struct RankFilesSpec {
    pub kind: ServerKind,
    pub host: String,
    pub coords: RankCoords,
    /// vLLM: only files exported at or after this instant (epoch ms, this
    /// host's clock) belong to the capture.
    pub since_unix_ms: i64,
}

impl RankFilesSpec {
    /// Looks for the rank's files below `output_dir`. A folder that does not
    /// exist yet is an empty scan, not an error.
    pub fn scan(&self, output_dir: &Path) -> io::Result<Scan> {
        match self.kind {
            ServerKind::Sglang => self.scan_kineto(output_dir),
            ServerKind::Vllm => crate::vllm::scan(output_dir, &self.coords, self.since_unix_ms),
            ServerKind::SglangJax | ServerKind::Unspecified => self.scan_jax(output_dir),
        }
    }

    /// `<dir>/plugins/profile/<YYYY_MM_DD_HH_MM_SS>/<host>.{trace.json.gz,xplane.pb}`:
    /// the newest session folder holding any of this host's files.
    fn scan_jax(&self, output_dir: &Path) -> io::Result<Scan> {
        let mut sessions = list_dir(&output_dir.join(JAX_SESSIONS), true)?;
        // The folder names are timestamps, so name order is time order.
        sessions.sort_by(|a, b| b.0.cmp(&a.0));
        let trace_name = format!("{}{TRACE_SUFFIX}", self.host);
        let xplane_name = format!("{}{XPLANE_SUFFIX}", self.host);
        let mut others = Vec::new();
        for (session, _) in sessions {
            let folder = output_dir.join(JAX_SESSIONS).join(&session);
            let entries = list_dir(&folder, false)?;
            let mut files = Vec::new();
            for (name, size) in &entries {
                let kind = if *name == trace_name {
                    FileKind::Trace
                } else if *name == xplane_name {
                    FileKind::Xplane
                } else {
                    if name.ends_with(XPLANE_SUFFIX) || name.ends_with(TRACE_SUFFIX) {
                        others.push(format!("{JAX_SESSIONS}/{session}/{name}"));
                    }
                    continue;
                };
                files.push(FoundFile {
                    kind,
                    path: folder.join(name),
                    size: *size,
                    stage: None,
                });
            }
            if !files.is_empty() {
                files.sort_by_key(|f| f.kind == FileKind::Xplane);
                let all_present = files.len() == 2;
                others.sort();
                return Ok(Scan {
                    files,
                    all_present,
                    ours_pending: false,
                    others,
                });
            }
        }
        others.sort();
        Ok(Scan {
            others,
            ..Scan::default()
        })
    }

    /// `<dir>/[prefix-]<id>-TP-t[-DP-d][-PP-p][-EP-e][-STAGE].trace.json.gz`
    /// naming this rank. A `.tmp` of this rank means the writer is not done.
    fn scan_kineto(&self, output_dir: &Path) -> io::Result<Scan> {
        let mut files = Vec::new();
        let mut pending = false;
        let mut others = Vec::new();
        for (name, size) in list_dir(output_dir, false)? {
            let (final_name, is_tmp) = match name.strip_suffix(".tmp") {
                Some(stripped) => (stripped, true),
                None => (name.as_str(), false),
            };
            if !final_name.ends_with(TRACE_SUFFIX) {
                continue;
            }
            let Some(parsed) = parse_rank_file_name(final_name) else {
                others.push(name.clone());
                continue;
            };
            let ours = parsed.tp_rank == self.coords.tp_rank
                && parsed.ep_rank.unwrap_or(0) == self.coords.ep_rank
                && parsed.dp_rank.unwrap_or(0) == self.coords.dp_rank.unwrap_or(0)
                && parsed.pp_rank.unwrap_or(0) == self.coords.pp_rank.unwrap_or(0);
            if !ours {
                others.push(name.clone());
            } else if is_tmp {
                pending = true;
            } else {
                files.push(FoundFile {
                    kind: FileKind::Trace,
                    path: output_dir.join(&name),
                    size,
                    stage: parsed.stage,
                });
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        others.sort();
        Ok(Scan {
            all_present: !files.is_empty() && !pending,
            ours_pending: pending,
            files,
            others,
        })
    }
}

/// Names of a folder's entries that are folders (`want_folders`) or
/// regular files, with file sizes; an absent folder is empty.
pub(crate) fn list_dir(dir: &Path, want_folders: bool) -> io::Result<Vec<(String, u64)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Ok(meta) = entry.metadata() else {
            // Renamed or removed between listing and stat: the next poll sees it.
            continue;
        };
        if (want_folders && meta.is_dir()) || (!want_folders && meta.is_file()) {
            out.push((entry.file_name().to_string_lossy().into_owned(), meta.len()));
        }
    }
    Ok(out)
}

/// Decides completeness across polls: the same complete set of files with
/// the same sizes twice in a row.
#[derive(Debug, Default)]
pub struct StabilityCheck {
    previous: Option<Vec<FoundFile>>,
}

impl StabilityCheck {
    /// Feeds one scan; returns the files once they are complete and stable.
    pub fn observe(&mut self, scan: Scan) -> Option<Vec<FoundFile>> {
        if !scan.all_present {
            self.previous = None;
            return None;
        }
        if self.previous.as_ref() == Some(&scan.files) {
            return Some(scan.files);
        }
        self.previous = Some(scan.files);
        None
    }
}

/// Notices files that are not this rank's sitting complete and unchanged
/// while none of the rank's own is there: the server writes under another
/// host name or other ranks than the agent expects.
#[derive(Debug, Default)]
pub struct ForeignFilesCheck {
    seen: Option<(Vec<(String, u64)>, std::time::Instant)>,
}

impl ForeignFilesCheck {
    /// Feeds one scan of `output_dir`; returns the foreign files' names once
    /// they stayed the same (names and sizes, none a `.tmp`) for `grace`
    /// with nothing of this rank's beside them.
    pub fn observe(
        &mut self,
        output_dir: &Path,
        scan: &Scan,
        grace: std::time::Duration,
    ) -> Option<Vec<String>> {
        let foreign: Vec<(String, u64)> = scan
            .others
            .iter()
            .map(|name| {
                let size = std::fs::metadata(output_dir.join(name)).map_or(0, |m| m.len());
                (name.clone(), size)
            })
            .collect();
        let quiet = scan.files.is_empty()
            && !scan.ours_pending
            && !foreign.is_empty()
            && !foreign.iter().any(|(name, _)| name.ends_with(".tmp"));
        if !quiet {
            self.seen = None;
            return None;
        }
        match &self.seen {
            Some((before, since)) if *before == foreign => (since.elapsed() >= grace)
                .then(|| foreign.into_iter().map(|(name, _)| name).collect()),
            _ => {
                self.seen = Some((foreign, std::time::Instant::now()));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, bytes: usize) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, vec![b'x'; bytes]).unwrap();
    }

    fn jax_spec(host: &str) -> RankFilesSpec {
        RankFilesSpec {
            kind: ServerKind::SglangJax,
            host: host.into(),
            coords: RankCoords::unified(0, 0),
            since_unix_ms: 0,
        }
    }

    #[test]
    fn jax_needs_both_files_of_this_host_in_one_session() {
        let dir = tempfile::tempdir().unwrap();
        let session = dir.path().join("plugins/profile/2026_11_22_21_52_13");
        std::fs::create_dir_all(&session).unwrap();
        assert!(!jax_spec("vm").scan(dir.path()).unwrap().all_present);

        write(&session.join("vm.trace.json.gz"), 10);
        write(&session.join("other.xplane.pb"), 10);
        let scan = jax_spec("vm").scan(dir.path()).unwrap();
        assert!(!scan.all_present);
        assert_eq!(scan.files.len(), 1);
        assert_eq!(
            scan.others,
            vec!["plugins/profile/2026_11_22_21_52_13/other.xplane.pb"]
        );

        write(&session.join("vm.xplane.pb"), 20);
        let scan = jax_spec("vm").scan(dir.path()).unwrap();
        assert!(scan.all_present);
        assert_eq!(scan.files[0].kind, FileKind::Trace);
        assert_eq!(scan.files[1].kind, FileKind::Xplane);
        assert_eq!(scan.files[1].size, 20);
        // Another host in the same folder only collects its own file.
        let other = jax_spec("other").scan(dir.path()).unwrap();
        assert_eq!(other.files.len(), 1);
        assert_eq!(other.files[0].source_name(), "other.xplane.pb");
    }

    #[test]
    fn jax_takes_the_newest_session_of_this_host() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("plugins/profile/2026_11_22_21_52_13");
        let new = dir.path().join("plugins/profile/2026_11_22_21_52_14");
        write(&old.join("vm.trace.json.gz"), 1);
        write(&old.join("vm.xplane.pb"), 1);
        write(&new.join("vm.trace.json.gz"), 2);
        let scan = jax_spec("vm").scan(dir.path()).unwrap();
        assert!(
            !scan.all_present,
            "the newest session is still being written"
        );
        assert!(scan.files[0].path.starts_with(&new));
    }

    #[test]
    fn kineto_matches_this_rank_and_never_a_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let spec = RankFilesSpec {
            kind: ServerKind::Sglang,
            host: "gpu0".into(),
            coords: RankCoords {
                ep_rank: 1,
                ..RankCoords::unified(1, 0)
            },
            since_unix_ms: 0,
        };
        write(&dir.path().join("1763850000.5-TP-0-EP-0.trace.json.gz"), 5);
        write(
            &dir.path().join("1763850000.5-TP-1-EP-1.trace.json.gz.tmp"),
            5,
        );
        let scan = spec.scan(dir.path()).unwrap();
        assert!(scan.files.is_empty());
        assert!(!scan.all_present);
        assert_eq!(scan.others, vec!["1763850000.5-TP-0-EP-0.trace.json.gz"]);

        std::fs::rename(
            dir.path().join("1763850000.5-TP-1-EP-1.trace.json.gz.tmp"),
            dir.path().join("1763850000.5-TP-1-EP-1.trace.json.gz"),
        )
        .unwrap();
        let scan = spec.scan(dir.path()).unwrap();
        assert!(scan.all_present);
        assert_eq!(scan.files.len(), 1);
        assert_eq!(
            scan.files[0].source_name(),
            "1763850000.5-TP-1-EP-1.trace.json.gz"
        );
    }

    #[test]
    fn kineto_stage_files_wait_for_every_stage() {
        let dir = tempfile::tempdir().unwrap();
        let spec = RankFilesSpec {
            kind: ServerKind::Sglang,
            host: "h".into(),
            coords: RankCoords::unified(0, 0),
            since_unix_ms: 0,
        };
        write(
            &dir.path()
                .join("run-1763850000.5-TP-0-EXTEND.trace.json.gz"),
            5,
        );
        write(
            &dir.path()
                .join("run-1763850000.5-TP-0-DECODE.trace.json.gz.tmp"),
            5,
        );
        assert!(!spec.scan(dir.path()).unwrap().all_present);
        std::fs::rename(
            dir.path()
                .join("run-1763850000.5-TP-0-DECODE.trace.json.gz.tmp"),
            dir.path()
                .join("run-1763850000.5-TP-0-DECODE.trace.json.gz"),
        )
        .unwrap();
        let scan = spec.scan(dir.path()).unwrap();
        assert!(scan.all_present);
        let stages: Vec<_> = scan
            .files
            .iter()
            .map(|f| f.stage.clone().unwrap())
            .collect();
        assert_eq!(stages, ["DECODE", "EXTEND"]);
    }

    #[test]
    fn foreign_files_count_only_when_complete_and_alone() {
        let dir = tempfile::tempdir().unwrap();
        let session = dir.path().join("plugins/profile/2026_11_22_21_52_13");
        write(&session.join("other.trace.json.gz"), 10);
        write(&session.join("other.xplane.pb"), 10);
        let spec = jax_spec("vm");
        let mut check = ForeignFilesCheck::default();
        let none = std::time::Duration::ZERO;
        let scan = spec.scan(dir.path()).unwrap();
        assert_eq!(check.observe(dir.path(), &scan, none), None, "first sight");
        assert_eq!(
            check.observe(dir.path(), &scan, none),
            Some(vec![
                "plugins/profile/2026_11_22_21_52_13/other.trace.json.gz".to_string(),
                "plugins/profile/2026_11_22_21_52_13/other.xplane.pb".to_string()
            ])
        );
        write(&session.join("other.xplane.pb"), 20);
        let scan = spec.scan(dir.path()).unwrap();
        assert_eq!(
            check.observe(dir.path(), &scan, none),
            None,
            "still growing"
        );
        write(&session.join("vm.trace.json.gz"), 5);
        let scan = spec.scan(dir.path()).unwrap();
        assert_eq!(check.observe(dir.path(), &scan, none), None);
        assert_eq!(
            check.observe(dir.path(), &scan, none),
            None,
            "one of its own is there"
        );
    }

    #[test]
    fn stable_means_the_same_sizes_twice() {
        let file = |size| FoundFile {
            kind: FileKind::Trace,
            path: "a".into(),
            size,
            stage: None,
        };
        let scan = |size| Scan {
            files: vec![file(size)],
            all_present: true,
            ..Scan::default()
        };
        let mut check = StabilityCheck::default();
        assert_eq!(check.observe(scan(10)), None);
        assert_eq!(check.observe(scan(20)), None, "still growing");
        assert_eq!(check.observe(scan(20)), Some(vec![file(20)]));
        let mut check = StabilityCheck::default();
        assert_eq!(check.observe(Scan::default()), None);
        assert_eq!(
            check.observe(Scan::default()),
            None,
            "nothing is never complete"
        );
    }
}
