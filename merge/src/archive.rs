//! The `.zip` output: a Perfetto (v58+) multi-trace archive. Each rank is its
//! own `.pftrace` with timestamps relative to its own time zero, and
//! `perfetto_manifest.json` tells Perfetto each file's machine and clock
//! offset, so Perfetto does the placement.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// The manifest's name inside the archive.
pub const MANIFEST_NAME: &str = "perfetto_manifest.json";

/// One rank's file in the archive.
pub struct Member<'a> {
    /// Path inside the archive.
    pub path: String,
    pub machine: &'a str,
    /// Merged-clock ns of the file's timestamp 0.
    pub offset_ns: i64,
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
    /// Trace time = file time + offset_ns.
    clocks: Clocks,
}

#[derive(Serialize)]
struct Machine<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct Clocks {
    offset_ns: i64,
}

/// The manifest text for `members`.
pub fn manifest_json(members: &[Member<'_>]) -> String {
    let manifest = Manifest {
        perfetto_manifest: ManifestBody {
            version: 1,
            files: members
                .iter()
                .map(|m| ManifestFile {
                    path: &m.path,
                    machine: Machine { name: m.machine },
                    clocks: Clocks {
                        offset_ns: m.offset_ns,
                    },
                })
                .collect(),
        },
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
    fn manifest_has_machines_and_offsets() {
        let members = [Member {
            path: member_path("prefill-0/TP-1-EP-0"),
            machine: "host-a",
            offset_ns: 1_795_384_060_465_391_136,
            file: Path::new("unused"),
        }];
        let text = manifest_json(&members);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let file = &value["perfetto_manifest"]["files"][0];
        assert_eq!(value["perfetto_manifest"]["version"], 1);
        assert_eq!(file["path"], "prefill-0_TP-1-EP-0.pftrace");
        assert_eq!(file["machine"]["name"], "host-a");
        assert_eq!(file["clocks"]["offset_ns"], 1_795_384_060_465_391_136i64);
    }
}
