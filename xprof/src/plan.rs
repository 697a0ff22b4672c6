//! What to export: the capture's ranks from its manifest (or, when it has
//! none, from a listing of its sidecars and xplanes), each xplane with the
//! host name it gets in the XProf run and what its file must look like.

use std::collections::{BTreeSet, HashMap};

use futures::stream::{self, StreamExt, TryStreamExt};
use rankline_layout::{
    parse_rank_file_name, read_manifest, ClockFit, FileKind, Manifest, ManifestRank, RankCoords,
    RankStatus, Role, ServerKind, Sidecar, MANIFEST_NAME, SIDECAR_SUFFIX, XPLANE_SUFFIX,
};

use rankline_storage::StorageError;

use crate::summary::{FailedHost, SkippedRank};
use crate::{CaptureLocation, ExportError};

/// Small objects (sidecars, sizes) fetched at once.
const FETCH_IN_PARALLEL: usize = 8;

/// The capture as far as the export is concerned.
pub(crate) struct Plan {
    pub capture_id: String,
    /// The capture's start (coordinator clock), for the run name.
    pub start_unix_ns: Option<i64>,
    pub hosts: Vec<PlannedHost>,
    pub skipped: Vec<SkippedRank>,
    /// Ranks whose xplane should exist but does not.
    pub failed: Vec<FailedHost>,
    pub warnings: Vec<String>,
}

/// One xplane to place.
pub(crate) struct PlannedHost {
    /// The file name stem in the run folder: `prefill-0.TP-1-EP-0.vm-3`.
    pub host: String,
    /// `prefill-0 TP-1-EP-0`.
    pub rank: String,
    pub coords: Option<RankCoords>,
    /// The machine's host name, when the sidecar or manifest says.
    pub hostname: Option<String>,
    /// The storage key.
    pub key: String,
    /// The object's size in storage.
    pub stored_size: u64,
    /// What the agent recorded when it stored the file.
    pub recorded_size: Option<u64>,
    pub recorded_sha256: Option<String>,
    pub clock: Option<ClockFit>,
}

impl Plan {
    /// `YYYY_MM_DD_HH_MM_SS` (UTC) of the capture's start, as JAX names its
    /// runs; the capture id when no start is known.
    pub fn run_name(&self) -> String {
        let stamp = self.start_unix_ns.and_then(|ns| {
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
                .ok()?
                .format(time::macros::format_description!(
                    "[year]_[month]_[day]_[hour]_[minute]_[second]"
                ))
                .ok()
        });
        stamp.unwrap_or_else(|| name_safe(&self.capture_id))
    }

    /// Why no rank had an xplane, for the error.
    pub fn why_no_xplanes(&self) -> String {
        if self.skipped.is_empty() {
            return "no ranks found".into();
        }
        let reasons: BTreeSet<&str> = self.skipped.iter().map(|s| s.reason.as_str()).collect();
        format!(
            "{} rank(s): {}",
            self.skipped.len(),
            reasons.into_iter().collect::<Vec<_>>().join("; ")
        )
    }
}

/// Reads the capture's manifest, or lists its folder when it has none.
pub(crate) async fn read(location: &CaptureLocation) -> Result<Plan, ExportError> {
    let storage = location.storage();
    match storage.get_bytes(&location.key(MANIFEST_NAME)).await {
        Ok(bytes) => {
            let manifest = read_manifest(&bytes).map_err(|source| ExportError::BadManifest {
                url: location.url(),
                source,
            })?;
            from_manifest(location, &manifest).await
        }
        Err(e) if e.is_not_found() => from_listing(location).await,
        Err(e) => Err(e.into()),
    }
}

async fn from_manifest(
    location: &CaptureLocation,
    manifest: &Manifest,
) -> Result<Plan, ExportError> {
    let mut plan = Plan {
        capture_id: manifest.profile_id.to_string(),
        start_unix_ns: Some(manifest.start_at_unix_ns),
        hosts: Vec::new(),
        skipped: Vec::new(),
        failed: Vec::new(),
        warnings: Vec::new(),
    };
    let mut ranks: Vec<&ManifestRank> = manifest.ranks.iter().collect();
    ranks.sort_by_key(|r| r.identity.coords.sort_key());
    let mut wanted = Vec::new();
    for rank in ranks {
        let label = rank.identity.coords.display_name();
        if rank.status != RankStatus::Ok {
            let why = rank.reason.as_deref().map(|r| format!(": {r}"));
            plan.skipped.push(SkippedRank {
                rank: label,
                reason: format!("the rank is {}{}", rank.status, why.unwrap_or_default()),
            });
        } else if let Some(xplane) = &rank.objects.xplane {
            wanted.push((rank, location.stored_key(&manifest.profile_id, xplane)));
        } else {
            plan.skipped.push(SkippedRank {
                rank: label,
                reason: no_xplane_reason(rank.identity.server_kind),
            });
        }
    }
    let found: Vec<(SidecarRead, Option<u64>)> = stream::iter(&wanted)
        .map(|(rank, key)| async move {
            let sidecar = match &rank.objects.meta {
                Some(meta) => {
                    read_sidecar(location, &location.stored_key(&manifest.profile_id, meta)).await
                }
                None => Ok(None),
            };
            Ok::<_, ExportError>((sidecar, location.storage().head(key).await?))
        })
        .buffered(FETCH_IN_PARALLEL)
        .try_collect()
        .await?;
    let mut names = HostNames::default();
    for ((rank, key), (sidecar, size)) in wanted.into_iter().zip(found) {
        let sidecar = sidecar.unwrap_or_else(|warning| {
            plan.warnings.push(warning);
            None
        });
        let identity = &rank.identity;
        let host = names.assign(Some(&identity.coords), Some(&identity.host), key.as_str());
        add_host(
            &mut plan,
            host,
            Some(identity.coords.clone()),
            Some(identity.host.clone()),
            key,
            size,
            sidecar.as_ref(),
        );
    }
    Ok(plan)
}

/// No manifest (a capture still running, or copied without it): every
/// sidecar under the folder, and xplanes no sidecar claims.
async fn from_listing(location: &CaptureLocation) -> Result<Plan, ExportError> {
    let listed = location.storage().list(location.prefix()).await?;
    let sizes: HashMap<&str, u64> = listed.iter().map(|o| (o.key.as_str(), o.size)).collect();
    let sidecar_keys: Vec<&str> = listed
        .iter()
        .map(|o| o.key.as_str())
        .filter(|k| k.ends_with(SIDECAR_SUFFIX))
        .collect();
    let xplane_keys: Vec<&str> = listed
        .iter()
        .map(|o| o.key.as_str())
        .filter(|k| k.ends_with(XPLANE_SUFFIX))
        .collect();
    if sidecar_keys.is_empty() && xplane_keys.is_empty() {
        return Err(ExportError::NotFound {
            capture: location.url(),
            why: "no manifest.json, no *.meta.json sidecars and no *.xplane.pb under it".into(),
        });
    }
    let mut plan = Plan {
        capture_id: location.folder_name(),
        start_unix_ns: None,
        hosts: Vec::new(),
        skipped: Vec::new(),
        failed: Vec::new(),
        warnings: vec![format!(
            "{} has no manifest.json (a capture still running, or copied without it): ranks come \
             from {} sidecar(s) and {} xplane(s) found by listing",
            location.url(),
            sidecar_keys.len(),
            xplane_keys.len()
        )],
    };
    let sidecars: Vec<(&str, SidecarRead)> = stream::iter(&sidecar_keys)
        .map(|key| async move { (*key, read_sidecar(location, key).await) })
        .buffered(FETCH_IN_PARALLEL)
        .collect()
        .await;
    let mut sidecars: Vec<(&str, Sidecar)> = sidecars
        .into_iter()
        .filter_map(|(key, sidecar)| match sidecar {
            Ok(sidecar) => sidecar.map(|s| (key, s)),
            Err(warning) => {
                plan.warnings.push(warning);
                None
            }
        })
        .collect();
    sidecars.sort_by_key(|(_, s)| s.identity.coords.sort_key());
    if let Some((_, first)) = sidecars.first() {
        plan.capture_id = first.profile_id.to_string();
    }
    plan.start_unix_ns = sidecars
        .iter()
        .map(|(_, s)| s.start_requested_unix_ns)
        .min();

    let mut names = HostNames::default();
    let mut claimed = BTreeSet::new();
    for (sidecar_key, sidecar) in &sidecars {
        let identity = &sidecar.identity;
        let beside = format!(
            "{}{XPLANE_SUFFIX}",
            sidecar_key.trim_end_matches(SIDECAR_SUFFIX)
        );
        let recorded = sidecar
            .file(FileKind::Xplane)
            .map(|f| location.stored_key(&sidecar.profile_id, &f.key));
        let key = recorded
            .iter()
            .chain([&beside])
            .find(|k| sizes.contains_key(k.as_str()))
            .cloned();
        let Some(key) = key.or(recorded) else {
            plan.skipped.push(SkippedRank {
                rank: identity.coords.display_name(),
                reason: no_xplane_reason(identity.server_kind),
            });
            continue;
        };
        claimed.insert(key.clone());
        let host = names.assign(Some(&identity.coords), Some(&identity.host), &key);
        let size = sizes.get(key.as_str()).copied();
        add_host(
            &mut plan,
            host,
            Some(identity.coords.clone()),
            Some(identity.host.clone()),
            key,
            size,
            Some(sidecar),
        );
    }
    for key in xplane_keys.into_iter().filter(|k| !claimed.contains(*k)) {
        let coords = coords_from_key(location.inside(key));
        let host = names.assign(coords.as_ref(), None, key);
        plan.warnings.push(format!(
            "{key} has no sidecar: named {host} from its file name, not checked by sha256, \
             no clock offset"
        ));
        add_host(
            &mut plan,
            host,
            coords,
            None,
            key.to_string(),
            sizes.get(key).copied(),
            None,
        );
    }
    Ok(plan)
}

/// Adds a rank whose xplane is `key` (of `size` bytes in storage, `None`
/// when it is not there).
fn add_host(
    plan: &mut Plan,
    host: String,
    coords: Option<RankCoords>,
    hostname: Option<String>,
    key: String,
    size: Option<u64>,
    sidecar: Option<&Sidecar>,
) {
    let rank = coords
        .as_ref()
        .map(RankCoords::display_name)
        .unwrap_or_else(|| host.clone());
    let Some(stored_size) = size else {
        plan.failed.push(FailedHost {
            host,
            rank,
            key: key.clone(),
            reason: format!("{key} is not in storage"),
        });
        return;
    };
    let record = sidecar.and_then(|s| s.file(FileKind::Xplane));
    plan.hosts.push(PlannedHost {
        host,
        rank,
        coords,
        hostname,
        key,
        stored_size,
        recorded_size: record.map(|r| r.size),
        recorded_sha256: record.map(|r| r.sha256.clone()).filter(|s| !s.is_empty()),
        clock: sidecar.and_then(|s| s.clock.clone()),
    });
}

/// A sidecar (`None` when there is none), or a warning saying why it is
/// not usable.
type SidecarRead = Result<Option<Sidecar>, String>;

/// A sidecar, or a warning saying why it is not usable (the export goes
/// on without it: no sha256 check, no clock offset for that rank).
async fn read_sidecar(location: &CaptureLocation, key: &str) -> SidecarRead {
    match location.storage().read_sidecar(key).await {
        Ok(sidecar) => Ok(Some(sidecar)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e @ StorageError::Document { .. }) => {
            Err(format!("{e}; its rank is exported unchecked"))
        }
        Err(e) => Err(format!("cannot read the sidecar: {e}")),
    }
}

fn no_xplane_reason(server_kind: ServerKind) -> String {
    if server_kind == ServerKind::Sglang {
        "an SGLang (PyTorch/Kineto) rank: it writes a trace.json.gz only, which XProf cannot open"
            .into()
    } else {
        "no .xplane.pb was stored for this rank".into()
    }
}

/// What an xplane's key says about its rank: `[<role>-<worker>/]<id>-TP-n-EP-m`
/// (a folder that names no role and worker counts as none: unified worker 0).
fn coords_from_key(inside: &str) -> Option<RankCoords> {
    let (folder, name) = match inside.rsplit_once('/') {
        Some((folder, name)) => (folder.rsplit('/').next(), name),
        None => (None, inside),
    };
    let parsed = parse_rank_file_name(name)?;
    let (role, worker) = folder
        .and_then(|f| f.rsplit_once('-'))
        .and_then(|(role, worker)| Some((role.parse().ok()?, worker.parse().ok()?)))
        .unwrap_or((Role::Unified, 0));
    Some(RankCoords {
        role,
        worker,
        tp_rank: parsed.tp_rank,
        ep_rank: parsed.ep_rank.unwrap_or(0),
        dp_rank: parsed.dp_rank,
        pp_rank: parsed.pp_rank,
    })
}

/// Hands out host names, unique within the run.
#[derive(Default)]
struct HostNames {
    taken: BTreeSet<String>,
}

impl HostNames {
    /// `<role>-<worker>.<TP-n-EP-m>[.<short hostname>]`, or the file's stem
    /// when the rank is unknown; `-2`, `-3`, ... if the name is taken.
    fn assign(&mut self, coords: Option<&RankCoords>, hostname: Option<&str>, key: &str) -> String {
        let mut name = match coords {
            Some(c) => format!("{}-{}.{}", c.role, c.worker, c.rank_label()),
            None => {
                let file = key.rsplit('/').next().unwrap_or(key);
                file_safe(file.trim_end_matches(XPLANE_SUFFIX))
            }
        };
        let short = hostname.map(|h| file_safe(h.split('.').next().unwrap_or(h)));
        if let Some(short) = short.filter(|s| !s.is_empty()) {
            name = format!("{name}.{short}");
        }
        let name = name_safe(&name);
        let mut unique = name.clone();
        let mut n = 2;
        while !self.taken.insert(unique.clone()) {
            unique = format!("{name}-{n}");
            n += 1;
        }
        unique
    }
}

/// Keeps letters, digits, '.', '_' and '-'; anything else (commas break
/// XProf's host lists, slashes and colons break paths) becomes '-'.
fn file_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// `text` as one folder or file name that stays where it is put: only
/// [`file_safe`] characters, no leading `.` (no `..`, no hidden file).
/// Manifests and sidecars are input: a hostile one must not place files
/// outside the output folder.
pub(crate) fn name_safe(text: &str) -> String {
    let safe = file_safe(text);
    let kept = safe.trim_start_matches('.');
    if kept.is_empty() {
        "unnamed".to_string()
    } else {
        kept.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_carry_server_rank_and_short_host() {
        let mut names = HostNames::default();
        let coords = RankCoords {
            role: Role::Prefill,
            worker: 0,
            ..RankCoords::unified(1, 0)
        };
        assert_eq!(
            names.assign(Some(&coords), Some("tpu-vm-3.us-central1-a.internal"), "k"),
            "prefill-0.TP-1-EP-0.tpu-vm-3"
        );
        assert_eq!(
            names.assign(Some(&coords), Some("tpu-vm-3"), "k"),
            "prefill-0.TP-1-EP-0.tpu-vm-3-2"
        );
        assert_eq!(
            names.assign(None, None, "cap/odd,name.xplane.pb"),
            "odd-name"
        );
    }

    #[test]
    fn names_from_input_cannot_leave_their_folder() {
        assert_eq!(name_safe("../escape"), "-escape");
        assert_eq!(name_safe("/etc/x"), "-etc-x");
        assert_eq!(name_safe(".."), "unnamed");
        assert_eq!(name_safe(".hidden"), "hidden");
        assert_eq!(
            name_safe("rl-20261123-021555-39ab"),
            "rl-20261123-021555-39ab"
        );
        let mut names = HostNames::default();
        // A role cannot be hostile (it is a `Role`); a host name can.
        let name = names.assign(Some(&RankCoords::unified(0, 0)), Some("../h,ost"), "k");
        assert!(
            !name.starts_with('.') && !name.contains(['/', ',']),
            "{name}"
        );
    }

    #[test]
    fn keys_give_coords_when_there_is_no_sidecar() {
        let coords = coords_from_key("decode-1/cap-TP-2-EP-1.xplane.pb").unwrap();
        assert_eq!(
            (
                coords.role.word(),
                coords.worker,
                coords.tp_rank,
                coords.ep_rank
            ),
            ("decode", 1, 2, 1)
        );
        assert_eq!(
            coords_from_key("cap-TP-3-EP-0.xplane.pb").unwrap().role,
            "unified"
        );
        assert_eq!(coords_from_key("vm.xplane.pb"), None);
    }

    #[test]
    fn run_name_is_the_start_in_jax_format() {
        let plan = Plan {
            capture_id: "cap".into(),
            // 2026-11-22T21:47:17.5Z
            start_unix_ns: Some(1_795_384_037_500_000_000),
            hosts: vec![],
            skipped: vec![],
            failed: vec![],
            warnings: vec![],
        };
        assert_eq!(plan.run_name(), "2026_11_22_21_47_17");
        let unknown = Plan {
            start_unix_ns: None,
            ..plan
        };
        assert_eq!(unknown.run_name(), "cap");
    }
}
