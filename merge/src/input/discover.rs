//! From command-line inputs to ranks: rankline captures (a manifest and
//! per-rank sidecars), JAX log dirs (`plugins/profile/<run>/<host>.*`), and
//! loose trace files named by SGLang's pattern or by nothing at all.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rankline_layout::{
    parse_rank_file_name, read_manifest, FileKind, RankCoords, RankStatus, Sidecar, TimeBaseSource,
    MANIFEST_NAME, SIDECAR_SUFFIX, TRACE_SUFFIX, WORKLOAD_NAME, XPLANE_SUFFIX,
};
use tracing::debug;

use crate::error::{InputError, InputProblem};
use crate::input::rank::{Location, NamedBy, RankInput, RankName};
use crate::input::remote::{self, Fetched};
use crate::options::Filters;

/// What a trace given as input may be called: as stored, or as a server left it.
const TRACE_SUFFIXES: [&str; 4] = [TRACE_SUFFIX, ".trace.json", ".json.gz", ".json"];
/// JAX writes this beside `<host>.trace.json.gz` with `create_perfetto_trace`:
/// the same events again.
const JAX_PERFETTO_COPY: &str = "perfetto_trace.json.gz";

/// A rank the manifest lists that has nothing to merge.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MissingRank {
    pub rank: String,
    pub reason: String,
}

/// What the inputs hold.
#[derive(Default)]
pub struct Discovery {
    pub ranks: Vec<RankInput>,
    /// Inputs (or ranks of a capture) that cannot be used.
    pub unusable: Vec<InputError>,
    pub missing: Vec<MissingRank>,
    pub warnings: Vec<String>,
    /// The capture's common start instant (coordinator clock), when a
    /// manifest gave one.
    pub capture_start_ns: Option<i64>,
    /// Local copies of URL inputs; they live as long as this does.
    pub fetched: Vec<Fetched>,
}

/// Finds every rank in `inputs`, in argument order, then names the unnamed
/// ones `TP-0, TP-1, ...` (skipping numbers already taken). URL inputs are
/// fetched first (only the ranks `filters` selects, when a manifest says
/// which they are; their `.xplane.pb`s when `fetch_xplanes`, or when only
/// an xplane has their time base).
///
/// A rank has a Chrome JSON trace, an `.xplane.pb`, or both: an xplane
/// without the JSON export beside it (given as a file, in a JAX log dir or
/// a capture) is a rank of its own, which only `--source json` refuses.
pub fn discover(inputs: &[String], filters: &Filters, fetch_xplanes: bool) -> Discovery {
    let mut found = Discovery::default();
    for input in inputs {
        if remote::is_url(input) {
            match remote::fetch(input, filters, fetch_xplanes) {
                Ok(fetched) => {
                    let (first_rank, first_error) = (found.ranks.len(), found.unusable.len());
                    if let Err(error) = discover_one(input, fetched.dir.path(), &mut found) {
                        found.unusable.push(error);
                    }
                    // Name the fetched files by their URLs, not their copies.
                    for rank in &mut found.ranks[first_rank..] {
                        rank.trace = rank.trace.take().map(|t| t.fetched_from(&fetched));
                        rank.xplane = rank.xplane.take().map(|x| x.fetched_from(&fetched));
                    }
                    for error in &mut found.unusable[first_error..] {
                        if let Some(url) = fetched.url_of(Path::new(&error.input)) {
                            error.input = url;
                        }
                    }
                    found.warnings.extend(fetched.warnings.iter().cloned());
                    found.fetched.push(fetched);
                }
                Err(error) => found.unusable.push(error),
            }
        } else if let Err(error) = discover_one(input, Path::new(input), &mut found) {
            found.unusable.push(error);
        }
    }
    name_unnamed_ranks(&mut found.ranks);
    reject_duplicates(&mut found);
    found
}

/// Finds the ranks of one input, read from `path`.
fn discover_one(input: &str, path: &Path, found: &mut Discovery) -> Result<(), InputError> {
    let path = path.to_path_buf();
    let meta = fs::metadata(&path).map_err(|e| io_problem(input, e))?;
    if meta.is_file() {
        let file_name = file_name(&path);
        if file_name == MANIFEST_NAME {
            return discover_capture(input, path.parent().unwrap_or(Path::new(".")), found);
        }
        if file_name.ends_with(SIDECAR_SUFFIX) {
            let rank = rank_from_sidecar(input, &path, None)?;
            found.ranks.push(rank);
            return Ok(());
        }
        found.ranks.push(loose_rank(input, &path));
        return Ok(());
    }
    if path.join(MANIFEST_NAME).is_file() {
        return discover_capture(input, &path, found);
    }
    let sidecars = find_files(&path, 3, |name| name.ends_with(SIDECAR_SUFFIX));
    if !sidecars.is_empty() {
        found.warnings.push(format!(
            "{input}: no {MANIFEST_NAME} (the capture may not have finished): merging the {} \
             ranks whose sidecars are present",
            sidecars.len()
        ));
        for sidecar in sidecars {
            match rank_from_sidecar(input, &sidecar, None) {
                Ok(rank) => found.ranks.push(rank),
                Err(error) => found.unusable.push(error),
            }
        }
        return Ok(());
    }
    if path.join("plugins").join("profile").is_dir() {
        return discover_jax_log_dir(input, &path.join("plugins").join("profile"), found);
    }
    let files = find_files(&path, 1, is_rank_file);
    if files.is_empty() {
        return Err(InputError::new(
            input,
            InputProblem::NoTraces(
                "the folder has no manifest.json, no *.meta.json sidecars, no \
                 plugins/profile/ (JAX log dir), no *.trace.json[.gz] and no *.xplane.pb files"
                    .into(),
            ),
        ));
    }
    // A trace and the xplane beside it are one rank.
    let mut stems = BTreeSet::new();
    for file in files {
        if stems.insert(file_stem(&file_name(&file)).to_string()) {
            found.ranks.push(loose_rank(input, &file));
        }
    }
    Ok(())
}

fn io_problem(input: &str, error: io::Error) -> InputError {
    InputError::new(input, InputProblem::opening(error))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn is_trace_name(name: &str) -> bool {
    name != JAX_PERFETTO_COPY
        && !name.ends_with(SIDECAR_SUFFIX)
        && name != MANIFEST_NAME
        && TRACE_SUFFIXES.iter().any(|s| name.ends_with(s))
}

fn is_xplane_name(name: &str) -> bool {
    name.ends_with(XPLANE_SUFFIX)
}

/// A Chrome JSON trace or an `.xplane.pb`.
fn is_rank_file(name: &str) -> bool {
    is_trace_name(name) || is_xplane_name(name)
}

/// The file name without its trace or xplane suffix: `vm`, `cap-TP-0-EP-0`.
fn file_stem(name: &str) -> &str {
    TRACE_SUFFIXES
        .iter()
        .chain(&[XPLANE_SUFFIX])
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

/// The Chrome JSON trace named `<stem>.trace.json[.gz]` in `dir`, if any.
fn trace_beside(dir: &Path, stem: &str) -> Option<PathBuf> {
    [TRACE_SUFFIX, ".trace.json"]
        .iter()
        .map(|suffix| dir.join(format!("{stem}{suffix}")))
        .find(|p| p.is_file())
}

/// Files under `dir` (up to `depth` levels down) whose names pass `wanted`,
/// sorted by path. Unreadable subfolders are skipped.
fn find_files(dir: &Path, depth: usize, wanted: impl Fn(&str) -> bool + Copy) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() && depth > 1 {
            out.extend(find_files(&path, depth - 1, wanted));
        } else if kind.is_file() && wanted(&file_name(&path)) {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// A trace file or `.xplane.pb` given on its own (or found in a plain
/// folder), with its sibling of the other kind when there is one: its
/// sidecar beside it names it when there is one, else its file name, else
/// nothing.
fn loose_rank(input: &str, path: &Path) -> RankInput {
    let name = file_name(path);
    let stem = file_stem(&name).to_string();
    let dir = path.parent().unwrap_or(Path::new("."));
    let sidecar_path = dir.join(format!("{stem}{SIDECAR_SUFFIX}"));
    if sidecar_path.is_file() {
        match rank_from_sidecar(input, &sidecar_path, Some(path)) {
            Ok(rank) => return rank,
            Err(error) => debug!("ignoring the sidecar beside {}: {error}", path.display()),
        }
    }
    let (trace, xplane) = if is_xplane_name(&name) {
        (trace_beside(dir, &stem), Some(path.to_path_buf()))
    } else {
        let xplane = dir.join(format!("{stem}{XPLANE_SUFFIX}"));
        (Some(path.to_path_buf()), xplane.is_file().then_some(xplane))
    };
    let in_jax_run = dir
        .parent()
        .is_some_and(|p| p.file_name().is_some_and(|n| n == "profile"));
    let (coords, stage, named_by) = match parse_rank_file_name(&name) {
        Some(parsed) => (
            RankCoords {
                dp_rank: parsed.dp_rank,
                pp_rank: parsed.pp_rank,
                ..RankCoords::unified(parsed.tp_rank, parsed.ep_rank.unwrap_or(0))
            },
            parsed.stage,
            NamedBy::FileName,
        ),
        None => (RankCoords::unified(0, 0), None, NamedBy::ArgumentOrder),
    };
    RankInput {
        name: RankName {
            coords,
            stage,
            host: (in_jax_run || xplane.is_some()).then_some(stem),
            requests: false,
        },
        named_by,
        trace: trace.map(Location::Local),
        xplane: xplane.map(Location::Local),
        sidecar: None,
        from: input.to_string(),
    }
}

/// `plugins/profile/<run>/<host>.trace.json.gz` (and `<host>.xplane.pb`):
/// one rank per host, from the newest run that host wrote (hosts of one
/// capture can get different run folders, since each names its own at
/// export time).
fn discover_jax_log_dir(
    input: &str,
    profile_dir: &Path,
    found: &mut Discovery,
) -> Result<(), InputError> {
    let mut by_host: BTreeMap<String, BTreeMap<PathBuf, PathBuf>> = BTreeMap::new();
    for file in find_files(profile_dir, 2, is_rank_file) {
        let host = file_stem(&file_name(&file)).to_string();
        let run = file.parent().unwrap_or(profile_dir).to_path_buf();
        // Per run, the trace if there is one (it sorts before the xplane).
        by_host.entry(host).or_default().entry(run).or_insert(file);
    }
    if by_host.is_empty() {
        return Err(InputError::new(
            input,
            InputProblem::NoTraces(format!(
                "{} has no <host>.trace.json.gz or <host>.xplane.pb: the profile may still be \
                 being written",
                profile_dir.display()
            )),
        ));
    }
    for (host, runs) in by_host {
        // Run folders are named YYYY_MM_DD_HH_MM_SS, so the last sorts newest.
        let runs_found = runs.len();
        let Some((run, newest)) = runs.into_iter().next_back() else {
            continue;
        };
        if runs_found > 1 {
            found.warnings.push(format!(
                "{input}: host {host} has {runs_found} profile runs; merging the newest ({}) only",
                file_name(&run)
            ));
        }
        found.ranks.push(loose_rank(input, &newest));
    }
    Ok(())
}

/// A rankline capture folder: `manifest.json` names every rank and where its
/// objects are; each rank's sidecar holds its time base and clock.
fn discover_capture(input: &str, dir: &Path, found: &mut Discovery) -> Result<(), InputError> {
    let manifest_path = dir.join(MANIFEST_NAME);
    let bytes = fs::read(&manifest_path).map_err(|e| io_problem(input, e))?;
    let manifest = read_manifest(&bytes).map_err(|e| {
        InputError::new(
            manifest_path.display().to_string(),
            InputProblem::Layout(e.to_string()),
        )
    })?;
    found.capture_start_ns = Some(match found.capture_start_ns {
        Some(earlier) => earlier.min(manifest.start_at_unix_ns),
        None => manifest.start_at_unix_ns,
    });
    for rank in &manifest.ranks {
        let name = RankName {
            coords: rank.identity.coords.clone(),
            stage: None,
            host: Some(rank.identity.host.clone()),
            requests: false,
        };
        if rank.status != RankStatus::Ok {
            found.missing.push(MissingRank {
                rank: name.label(),
                reason: format!(
                    "the manifest says {}{}",
                    rank.status,
                    rank.reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ),
            });
            continue;
        }
        if rank.objects.trace.is_none() && rank.objects.xplane.is_none() {
            found.missing.push(MissingRank {
                rank: name.label(),
                reason: "the manifest lists no trace object for it".into(),
            });
            continue;
        }
        let listed: Vec<PathBuf> = [&rank.objects.trace, &rank.objects.xplane]
            .into_iter()
            .flatten()
            .map(|key| resolve_key(dir, &manifest.profile_id, key))
            .collect();
        let present = |key: &Option<String>| {
            key.as_ref()
                .map(|key| resolve_key(dir, &manifest.profile_id, key))
                .filter(|p| p.is_file())
        };
        let (trace, xplane) = (present(&rank.objects.trace), present(&rank.objects.xplane));
        if trace.is_none() && xplane.is_none() {
            let listed: Vec<String> = listed.iter().map(|p| p.display().to_string()).collect();
            found.missing.push(MissingRank {
                rank: name.label(),
                reason: format!(
                    "its files ({}) are not in the capture folder",
                    listed.join(", ")
                ),
            });
            continue;
        }
        let sidecar = match &rank.objects.meta {
            Some(key) => {
                let path = resolve_key(dir, &manifest.profile_id, key);
                match read_sidecar(&path) {
                    Ok(sidecar) => Some(sidecar),
                    Err(error) => {
                        found.unusable.push(error);
                        continue;
                    }
                }
            }
            None => None,
        };
        let stages = sidecar.as_ref().map(stage_traces).unwrap_or_default();
        if stages.len() > 1 {
            // SGLang's profile_by_stage: one file per stage, each its own track.
            for (stage, key) in stages {
                let path = resolve_key(dir, &manifest.profile_id, &key);
                if !path.is_file() {
                    found.missing.push(MissingRank {
                        rank: format!("{}/{stage}", name.label()),
                        reason: format!("its file {} is not in the capture folder", path.display()),
                    });
                    continue;
                }
                found.ranks.push(RankInput {
                    name: RankName {
                        stage: Some(stage),
                        ..name.clone()
                    },
                    named_by: NamedBy::Capture,
                    trace: Some(Location::Local(path)),
                    xplane: None,
                    sidecar: sidecar.clone().map(|mut s| {
                        // Each stage file has its own baseTimeNanoseconds;
                        // the sidecar's is the first file's.
                        s.time_base.source = TimeBaseSource::None;
                        s
                    }),
                    from: input.to_string(),
                });
            }
            continue;
        }
        found.ranks.push(RankInput {
            name,
            named_by: NamedBy::Capture,
            trace: trace.map(Location::Local),
            xplane: xplane.map(Location::Local),
            sidecar,
            from: input.to_string(),
        });
    }
    let workload = dir.join(WORKLOAD_NAME);
    if workload.is_file() {
        found.ranks.push(RankInput {
            name: RankName {
                coords: RankCoords::unified(0, 0),
                stage: None,
                host: None,
                requests: true,
            },
            named_by: NamedBy::Capture,
            trace: Some(Location::Local(workload)),
            xplane: None,
            sidecar: None,
            from: input.to_string(),
        });
    }
    Ok(())
}

/// A rank's per-stage traces (`-EXTEND`, `-DECODE`, ...) as the sidecar
/// lists them: `(stage, key)`, in the sidecar's order.
fn stage_traces(sidecar: &Sidecar) -> Vec<(String, String)> {
    sidecar
        .files
        .iter()
        .filter(|f| f.kind == FileKind::Trace)
        .filter_map(|f| {
            let stage = parse_rank_file_name(&f.source_name)?.stage?;
            Some((stage, f.key.clone()))
        })
        .collect()
}

/// An object key (`<profile_id>/...`, relative to the storage root) as a path,
/// given the capture's folder `<root>/<profile_id>`.
fn resolve_key(capture_dir: &Path, profile_id: &str, key: &str) -> PathBuf {
    let inside = key
        .strip_prefix(profile_id)
        .and_then(|rest| rest.strip_prefix('/'));
    match inside {
        Some(rest) if capture_dir.join(rest).exists() => capture_dir.join(rest),
        _ => capture_dir.parent().unwrap_or(capture_dir).join(key),
    }
}

fn read_sidecar(path: &Path) -> Result<Sidecar, InputError> {
    let bytes = fs::read(path).map_err(|e| io_problem(&path.display().to_string(), e))?;
    rankline_layout::read_sidecar(&bytes).map_err(|e| {
        InputError::new(
            path.display().to_string(),
            InputProblem::Layout(e.to_string()),
        )
    })
}

/// A rank described by its sidecar: identity, time base, clock, files.
/// `given` is a trace or xplane given on its own beside the sidecar: it
/// overrides where that file is.
fn rank_from_sidecar(
    input: &str,
    path: &Path,
    given: Option<&Path>,
) -> Result<RankInput, InputError> {
    let sidecar = read_sidecar(path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let stem = file_name(path).trim_end_matches(SIDECAR_SUFFIX).to_string();
    // The sidecar's keys are relative to the storage root; the files sit
    // beside the sidecar with the same stem.
    let by_key = |kind| {
        sidecar
            .file(kind)
            .map(|f| dir.join(file_name(Path::new(&f.key))))
            .filter(|p| p.is_file())
    };
    let given_xplane = given.filter(|g| is_xplane_name(&file_name(g)));
    let given_trace = given.filter(|g| !is_xplane_name(&file_name(g)));
    let trace = match given_trace {
        Some(trace) => Some(trace.to_path_buf()),
        None => by_key(FileKind::Trace).or_else(|| trace_beside(dir, &stem)),
    };
    let xplane = match given_xplane {
        Some(xplane) => Some(xplane.to_path_buf()),
        None => by_key(FileKind::Xplane)
            .or_else(|| Some(dir.join(format!("{stem}{XPLANE_SUFFIX}"))).filter(|p| p.is_file())),
    };
    if trace.is_none() && xplane.is_none() {
        return Err(InputError::new(
            path.display().to_string(),
            InputProblem::NoTraces("no trace file or .xplane.pb beside this sidecar".into()),
        ));
    }
    Ok(RankInput {
        name: RankName {
            coords: sidecar.identity.coords.clone(),
            stage: None,
            host: Some(sidecar.identity.host.clone()),
            requests: false,
        },
        named_by: NamedBy::Capture,
        trace: trace.map(Location::Local),
        xplane: xplane.map(Location::Local),
        sidecar: Some(sidecar),
        from: input.to_string(),
    })
}

/// Ranks nothing named become `TP-0, TP-1, ...` in argument order, skipping
/// TP numbers that named unified worker-0 ranks already use.
fn name_unnamed_ranks(ranks: &mut [RankInput]) {
    let taken: BTreeSet<u32> = ranks
        .iter()
        .filter(|r| r.named_by != NamedBy::ArgumentOrder && r.name.coords.server_folder().is_none())
        .map(|r| r.name.coords.tp_rank)
        .collect();
    let mut next = (0..).filter(|n| !taken.contains(n));
    for rank in ranks
        .iter_mut()
        .filter(|r| r.named_by == NamedBy::ArgumentOrder)
    {
        rank.name.coords.tp_rank = next.next().expect("an unbounded range");
    }
}

/// Two inputs that are the same rank cannot both be merged; a file given
/// twice (directly, or as the sibling of another) is merged once.
fn reject_duplicates(found: &mut Discovery) {
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    let mut files: BTreeSet<String> = BTreeSet::new();
    let mut kept = Vec::with_capacity(found.ranks.len());
    for rank in std::mem::take(&mut found.ranks) {
        let label = rank.name.label();
        let described = rank.describe();
        if let Some(again) = rank
            .files()
            .map(Location::display)
            .find(|f| files.contains(f))
        {
            found
                .warnings
                .push(format!("{again} was given twice; merging it once"));
            continue;
        }
        match labels.get(&label) {
            Some(first) => found.unusable.push(InputError::new(
                described,
                InputProblem::Layout(format!(
                    "it is rank {label} again (already from {first}): merge the two \
                     captures separately, or rename one file"
                )),
            )),
            None => {
                files.extend(rank.files().map(Location::display));
                labels.insert(label, described);
                kept.push(rank);
            }
        }
    }
    found.ranks = kept;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_names_and_stems() {
        assert!(is_trace_name("vm.trace.json.gz"));
        assert!(is_trace_name("x-TP-0.trace.json"));
        assert!(!is_trace_name("perfetto_trace.json.gz"));
        assert!(!is_trace_name("cap-TP-0-EP-0.meta.json"));
        assert!(!is_trace_name("vm.xplane.pb"));
        assert!(is_rank_file("vm.xplane.pb") && is_rank_file("vm.trace.json.gz"));
        assert_eq!(file_stem("vm.trace.json.gz"), "vm");
        assert_eq!(file_stem("vm.xplane.pb"), "vm");
        assert_eq!(file_stem("a.json"), "a");
    }

    #[test]
    fn unnamed_ranks_skip_taken_numbers() {
        let rank = |tp, named_by| RankInput {
            name: RankName {
                coords: RankCoords::unified(tp, 0),
                stage: None,
                host: None,
                requests: false,
            },
            named_by,
            trace: Some(Location::Local(PathBuf::from(format!(
                "/t{tp}{named_by:?}"
            )))),
            xplane: None,
            sidecar: None,
            from: String::new(),
        };
        let mut ranks = vec![
            rank(0, NamedBy::ArgumentOrder),
            rank(1, NamedBy::FileName),
            rank(0, NamedBy::ArgumentOrder),
        ];
        name_unnamed_ranks(&mut ranks);
        let tps: Vec<u32> = ranks.iter().map(|r| r.name.coords.tp_rank).collect();
        assert_eq!(tps, [0, 1, 2]);
    }

    #[test]
    fn a_manifest_of_a_newer_format_says_to_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(MANIFEST_NAME),
            br#"{"format":"rankline.capture/v2","ranks":{}}"#,
        )
        .unwrap();
        let input = dir.path().display().to_string();
        let found = discover(&[input], &Filters::default(), false);
        assert!(found.ranks.is_empty());
        let error = found.unusable[0].to_string();
        assert!(
            error.contains("rankline.capture/v2") && error.contains("upgrade rankline"),
            "{error}"
        );
    }

    #[test]
    fn keys_resolve_inside_the_capture_folder() {
        let dir = tempfile::tempdir().unwrap();
        let capture = dir.path().join("cap1");
        fs::create_dir_all(capture.join("prefill-0")).unwrap();
        fs::write(capture.join("prefill-0/x.trace.json.gz"), b"").unwrap();
        assert_eq!(
            resolve_key(&capture, "cap1", "cap1/prefill-0/x.trace.json.gz"),
            capture.join("prefill-0/x.trace.json.gz")
        );
        assert_eq!(
            resolve_key(&capture, "cap1", "other/y.trace.json.gz"),
            dir.path().join("other/y.trace.json.gz")
        );
    }
}
