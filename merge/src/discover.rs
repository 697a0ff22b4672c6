//! From command-line inputs to ranks: rankline captures (a manifest and
//! per-rank sidecars), JAX log dirs (`plugins/profile/<run>/<host>.*`), and
//! loose trace files named by SGLang's pattern or by nothing at all.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rankline_layout::{
    parse_rank_file_name, FileKind, Manifest, RankCoords, Sidecar, MANIFEST_NAME,
};
use tracing::debug;

use crate::error::{InputError, InputProblem};
use crate::options::Filters;
use crate::rank::{Location, NamedBy, RankInput, RankName};
use crate::remote::{self, Fetched};

const TRACE_SUFFIXES: [&str; 4] = [".trace.json.gz", ".trace.json", ".json.gz", ".json"];
const SIDECAR_SUFFIX: &str = ".meta.json";
const XPLANE_SUFFIX: &str = ".xplane.pb";
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
/// which they are).
pub fn discover(inputs: &[String], filters: &Filters) -> Discovery {
    let mut found = Discovery::default();
    for input in inputs {
        if remote::is_url(input) {
            match remote::fetch(input, filters) {
                Ok(fetched) => {
                    let (first_rank, first_error) = (found.ranks.len(), found.unusable.len());
                    if let Err(error) = discover_one(input, fetched.dir.path(), &mut found) {
                        found.unusable.push(error);
                    }
                    // Name the fetched files by their URLs, not their copies.
                    for rank in &mut found.ranks[first_rank..] {
                        rank.trace = rank.trace.fetched_from(&fetched);
                        rank.xplane = rank.xplane.take().map(|x| x.fetched_from(&fetched));
                    }
                    for error in &mut found.unusable[first_error..] {
                        if let Some(url) = fetched.url_of(Path::new(&error.input)) {
                            error.input = url;
                        }
                    }
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
        found.ranks.push(loose_trace(input, &path));
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
    let traces = find_files(&path, 1, is_trace_name);
    if traces.is_empty() {
        return Err(InputError::new(
            input,
            InputProblem::NoTraces(
                "the folder has no manifest.json, no *.meta.json sidecars, no \
                 plugins/profile/ (JAX log dir) and no *.trace.json[.gz] files"
                    .into(),
            ),
        ));
    }
    for trace in traces {
        found.ranks.push(loose_trace(input, &trace));
    }
    Ok(())
}

fn io_problem(input: &str, error: io::Error) -> InputError {
    let problem = if error.kind() == io::ErrorKind::NotFound {
        InputProblem::NotFound
    } else {
        InputProblem::Unreadable(error)
    };
    InputError::new(input, problem)
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

/// The file name without its trace suffix: `vm`, `cap-TP-0-EP-0`.
fn trace_stem(name: &str) -> &str {
    TRACE_SUFFIXES
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
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

/// A trace file given on its own (or found in a plain folder): its sidecar
/// beside it names it when there is one, else its file name, else nothing.
fn loose_trace(input: &str, path: &Path) -> RankInput {
    let name = file_name(path);
    let stem = trace_stem(&name).to_string();
    let dir = path.parent().unwrap_or(Path::new("."));
    let sidecar_path = dir.join(format!("{stem}{SIDECAR_SUFFIX}"));
    if sidecar_path.is_file() {
        match rank_from_sidecar(input, &sidecar_path, Some(path)) {
            Ok(rank) => return rank,
            Err(error) => debug!("ignoring the sidecar beside {}: {error}", path.display()),
        }
    }
    let xplane = dir.join(format!("{stem}{XPLANE_SUFFIX}"));
    let xplane = xplane.is_file().then_some(Location::Local(xplane));
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
        },
        named_by,
        trace: Location::Local(path.to_path_buf()),
        xplane,
        sidecar: None,
        from: input.to_string(),
    }
}

/// `plugins/profile/<run>/<host>.trace.json.gz`: one rank per host, from the
/// newest run that host wrote (hosts of one capture can get different run
/// folders, since each names its own at export time).
fn discover_jax_log_dir(
    input: &str,
    profile_dir: &Path,
    found: &mut Discovery,
) -> Result<(), InputError> {
    let mut by_host: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for trace in find_files(profile_dir, 2, is_trace_name) {
        let host = trace_stem(&file_name(&trace)).to_string();
        by_host.entry(host).or_default().push(trace);
    }
    if by_host.is_empty() {
        return Err(InputError::new(
            input,
            InputProblem::NoTraces(format!(
                "{} has no <host>.trace.json.gz: the profile may still be being written",
                profile_dir.display()
            )),
        ));
    }
    for (host, mut runs) in by_host {
        // Run folders are named YYYY_MM_DD_HH_MM_SS, so the last sorts newest.
        let newest = runs.pop().expect("at least one run per host");
        if !runs.is_empty() {
            found.warnings.push(format!(
                "{input}: host {host} has {} profile runs; merging the newest ({}) only",
                runs.len() + 1,
                newest.parent().map(file_name).unwrap_or_default()
            ));
        }
        found.ranks.push(loose_trace(input, &newest));
    }
    Ok(())
}

/// A rankline capture folder: `manifest.json` names every rank and where its
/// objects are; each rank's sidecar holds its time base and clock.
fn discover_capture(input: &str, dir: &Path, found: &mut Discovery) -> Result<(), InputError> {
    let manifest_path = dir.join(MANIFEST_NAME);
    let bytes = fs::read(&manifest_path).map_err(|e| io_problem(input, e))?;
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
        InputError::new(
            manifest_path.display().to_string(),
            InputProblem::Layout(format!("not a rankline capture manifest: {e}")),
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
        };
        if rank.status != "ok" {
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
        let Some(trace_key) = &rank.objects.trace else {
            found.missing.push(MissingRank {
                rank: name.label(),
                reason: "the manifest lists no trace object for it".into(),
            });
            continue;
        };
        let trace = resolve_key(dir, &manifest.profile_id, trace_key);
        if !trace.is_file() {
            found.missing.push(MissingRank {
                rank: name.label(),
                reason: format!("its trace {} is not in the capture folder", trace.display()),
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
        let xplane = rank
            .objects
            .xplane
            .as_ref()
            .map(|key| resolve_key(dir, &manifest.profile_id, key))
            .filter(|p| p.is_file())
            .map(Location::Local);
        found.ranks.push(RankInput {
            name,
            named_by: NamedBy::Capture,
            trace: Location::Local(trace),
            xplane,
            sidecar,
            from: input.to_string(),
        });
    }
    Ok(())
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
    serde_json::from_slice(&bytes).map_err(|e| {
        InputError::new(
            path.display().to_string(),
            InputProblem::Layout(format!("not a rankline sidecar: {e}")),
        )
    })
}

/// A rank described by its sidecar: identity, time base, clock, files.
/// `trace` overrides where the trace is (a loose file beside its sidecar).
fn rank_from_sidecar(
    input: &str,
    path: &Path,
    trace: Option<&Path>,
) -> Result<RankInput, InputError> {
    let sidecar = read_sidecar(path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let stem_path = |suffix: &str| {
        let name = file_name(path);
        dir.join(format!("{}{suffix}", name.trim_end_matches(SIDECAR_SUFFIX)))
    };
    // The sidecar's keys are relative to the storage root; the files sit
    // beside the sidecar with the same stem.
    let trace = match trace {
        Some(trace) => trace.to_path_buf(),
        None => {
            let beside = stem_path(".trace.json.gz");
            let by_key = sidecar
                .file(FileKind::Trace)
                .map(|f| dir.join(file_name(Path::new(&f.key))));
            match by_key.filter(|p| p.is_file()) {
                Some(p) => p,
                None if beside.is_file() => beside,
                None => {
                    return Err(InputError::new(
                        path.display().to_string(),
                        InputProblem::NoTraces("no trace file beside this sidecar".into()),
                    ))
                }
            }
        }
    };
    let xplane = sidecar
        .file(FileKind::Xplane)
        .map(|f| dir.join(file_name(Path::new(&f.key))))
        .filter(|p| p.is_file())
        .or_else(|| Some(stem_path(XPLANE_SUFFIX)).filter(|p| p.is_file()))
        .map(Location::Local);
    Ok(RankInput {
        name: RankName {
            coords: sidecar.identity.coords.clone(),
            stage: None,
            host: Some(sidecar.identity.host.clone()),
        },
        named_by: NamedBy::Capture,
        trace: Location::Local(trace),
        xplane,
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

/// Two inputs that are the same rank cannot both be merged.
fn reject_duplicates(found: &mut Discovery) {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut kept = Vec::with_capacity(found.ranks.len());
    for rank in std::mem::take(&mut found.ranks) {
        let label = rank.name.label();
        let trace = rank.trace.display();
        match seen.get(&label) {
            Some(first) if *first == trace => {
                found
                    .warnings
                    .push(format!("{trace} was given twice; merging it once"));
            }
            Some(first) => found.unusable.push(InputError::new(
                trace,
                InputProblem::Layout(format!(
                    "it is rank {label} again (already from {first}): merge the two \
                     captures separately, or rename one file"
                )),
            )),
            None => {
                seen.insert(label, trace);
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
        assert_eq!(trace_stem("vm.trace.json.gz"), "vm");
        assert_eq!(trace_stem("a.json"), "a");
    }

    #[test]
    fn unnamed_ranks_skip_taken_numbers() {
        let rank = |tp, named_by| RankInput {
            name: RankName {
                coords: RankCoords::unified(tp, 0),
                stage: None,
                host: None,
            },
            named_by,
            trace: Location::Local(PathBuf::from(format!("/t{tp}{named_by:?}"))),
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
