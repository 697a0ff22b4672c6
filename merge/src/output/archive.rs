//! The `.zip` output: a Perfetto (v58+) multi-trace archive. Each rank is its
//! own `.pftrace`, exactly the packet sequence the `.pftrace` output holds
//! for it (timestamps already on the merged clock), attributed to its host
//! as a machine by `perfetto_manifest.json`.
//!
//! Perfetto keeps every machine's clocks apart, so the manifest also says
//! that they agree: each machine's BOOTTIME (the clock of packets that name
//! none) is related, once, to the first member's at offset 0. trace_processor v58.2
//! requires a `sync_to` in any `clocks` block, and we found it applies no
//! manifest offset to traces without clock snapshots, which is why the
//! members carry merged-clock times rather than offsets.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// The manifest's name inside the archive.
pub const MANIFEST_NAME: &str = "perfetto_manifest.json";
/// The clock of packets without a `timestamp_clock_id`.
const DEFAULT_CLOCK: &str = "BOOTTIME";

/// One rank's file in the archive.
pub struct Member<'a> {
    /// Path inside the archive.
    pub path: String,
    pub machine: &'a str,
    pub file: &'a Path,
}

#[derive(Serialize)]
struct Manifest<'a> {
    perfetto_manifest: ManifestBody<'a>,
}

#[derive(Serialize)]
struct ManifestBody<'a> {
    version: u32,
    files: Vec<ManifestFile<'a>>,
}

#[derive(Serialize)]
struct ManifestFile<'a> {
    path: &'a str,
    machine: Machine<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    clocks: Option<Clocks<'a>>,
}

#[derive(Serialize)]
struct Machine<'a> {
    name: &'a str,
}

/// This file's `clock` reads what `sync_to`'s does, plus `offset_ns`.
#[derive(Serialize)]
struct Clocks<'a> {
    clock: &'a str,
    sync_to: SyncTo<'a>,
    offset_ns: i64,
}

#[derive(Serialize)]
struct SyncTo<'a> {
    file: &'a str,
    clock: &'a str,
}

/// The manifest text for `members`.
pub fn manifest_json(members: &[Member<'_>]) -> String {
    let reference = members.first();
    let mut related = HashSet::new();
    let files = members
        .iter()
        .map(|m| ManifestFile {
            path: &m.path,
            machine: Machine { name: m.machine },
            // Once per machine: a machine's clock is one clock, and relating
            // it twice (or to itself) is a duplicate clock domain.
            clocks: reference
                .filter(|first| related.insert(m.machine) && first.machine != m.machine)
                .map(|first| Clocks {
                    clock: DEFAULT_CLOCK,
                    sync_to: SyncTo {
                        file: &first.path,
                        clock: DEFAULT_CLOCK,
                    },
                    offset_ns: 0,
                }),
        })
        .collect();
    let manifest = Manifest {
        perfetto_manifest: ManifestBody { version: 1, files },
    };
    serde_json::to_string_pretty(&manifest).unwrap_or_default()
}

/// Writes the archive (manifest first) to `out`.
pub fn write_archive(out: &mut File, members: &[Member<'_>]) -> io::Result<()> {
    let mut zip = ZipWriter::new(out);
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .compression_level(Some(1))
        .large_file(true);
    zip.start_file(MANIFEST_NAME, options)
        .map_err(io::Error::other)?;
    zip.write_all(manifest_json(members).as_bytes())?;
    for member in members {
        zip.start_file(member.path.as_str(), options)
            .map_err(io::Error::other)?;
        io::copy(&mut File::open(member.file)?, &mut zip)?;
    }
    zip.finish().map_err(io::Error::other)?;
    Ok(())
}

/// A file name for a rank label (`prefill-0/TP-1-EP-0` → `prefill-0_TP-1-EP-0`).
pub fn member_path(label: &str) -> String {
    let safe: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.pftrace")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_machine_has_its_clock_related_once_to_the_first() {
        let members = [
            Member {
                path: member_path("prefill-0/TP-1-EP-0"),
                machine: "host-a",
                file: Path::new("unused"),
            },
            Member {
                path: member_path("decode-0/TP-0-EP-0"),
                machine: "host-b",
                file: Path::new("unused"),
            },
            Member {
                path: member_path("decode-0/TP-1-EP-0"),
                machine: "host-b",
                file: Path::new("unused"),
            },
            Member {
                path: member_path("prefill-0/TP-0-EP-0"),
                machine: "host-a",
                file: Path::new("unused"),
            },
        ];
        let text = manifest_json(&members);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let files = &value["perfetto_manifest"]["files"];
        assert_eq!(value["perfetto_manifest"]["version"], 1);
        assert_eq!(files[0]["path"], "prefill-0_TP-1-EP-0.pftrace");
        assert_eq!(files[0]["machine"]["name"], "host-a");
        assert!(files[0].get("clocks").is_none(), "the reference: {text}");
        assert_eq!(files[1]["machine"]["name"], "host-b");
        let clocks = &files[1]["clocks"];
        assert_eq!(clocks["clock"], "BOOTTIME");
        assert_eq!(clocks["sync_to"]["file"], "prefill-0_TP-1-EP-0.pftrace");
        assert_eq!(clocks["sync_to"]["clock"], "BOOTTIME");
        assert_eq!(clocks["offset_ns"], 0);
        assert!(
            files[2].get("clocks").is_none() && files[3].get("clocks").is_none(),
            "a machine's clock is related once: {text}"
        );
    }
}
