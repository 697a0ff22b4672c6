//! One rank to merge: who it is, where its files are, how it is named.

use std::fs::File;
use std::io;
use std::path::PathBuf;

use rankline_layout::{RankCoords, Role, Sidecar};
use serde::Serialize;

/// The name of a capture's `workload.json` input: not a rank but the
/// requests sent during the window, drawn as one `requests` track.
pub const REQUESTS_TRACK: &str = "requests";

/// Who a rank is, as far as its inputs tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RankName {
    #[serde(flatten)]
    pub coords: RankCoords,
    /// SGLang's per-stage files (`EXTEND`, `DECODE`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The capture's requests track ([`REQUESTS_TRACK`]), which belongs to
    /// no server; its `coords` are unified worker 0's.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub requests: bool,
}

impl RankName {
    /// Short and unique within a merge: `prefill-0/TP-1-EP-0`, `TP-3-EP-0`
    /// for the unified worker 0, `TP-0-EP-0/EXTEND` for a stage file.
    pub fn label(&self) -> String {
        if self.is_requests() {
            return REQUESTS_TRACK.to_string();
        }
        let mut label = match self.coords.server_folder() {
            Some(folder) => format!("{folder}/{}", self.coords.rank_label()),
            None => self.coords.rank_label(),
        };
        if let Some(stage) = &self.stage {
            label.push('/');
            label.push_str(stage);
        }
        label
    }

    /// The process track's name: `prefill-0 TP-1 EP-0 (host)`.
    pub fn display_name(&self) -> String {
        if self.is_requests() {
            return REQUESTS_TRACK.to_string();
        }
        let c = &self.coords;
        let mut name = format!("{}-{} TP-{}", c.role, c.worker, c.tp_rank);
        if let Some(dp) = c.dp_rank {
            name.push_str(&format!(" DP-{dp}"));
        }
        if let Some(pp) = c.pp_rank {
            name.push_str(&format!(" PP-{pp}"));
        }
        name.push_str(&format!(" EP-{}", c.ep_rank));
        if let Some(stage) = &self.stage {
            name.push_str(&format!(" {stage}"));
        }
        if let Some(host) = &self.host {
            name.push_str(&format!(" ({host})"));
        }
        name
    }

    /// Whether this is a capture's workload rather than a rank.
    pub fn is_requests(&self) -> bool {
        self.requests
    }

    /// The server (role, worker) whose ranks are matched with each other;
    /// `None` for the requests track.
    pub fn server(&self) -> Option<(Role, u32)> {
        (!self.requests).then_some((self.coords.role, self.coords.worker))
    }

    /// Timeline order: role, worker, dp, pp, ep, tp, then stage and host;
    /// the requests track last.
    pub fn sort_key(&self) -> impl Ord + '_ {
        (
            self.requests,
            self.coords.sort_key(),
            self.stage.as_deref(),
            self.host.as_deref(),
        )
    }
}

/// Where one of a rank's files is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    /// A local copy of an object fetched from `url`.
    Fetched {
        path: PathBuf,
        url: String,
    },
}

impl Location {
    /// The path or URL as the user would recognise it.
    pub fn display(&self) -> String {
        match self {
            Location::Local(path) => path.display().to_string(),
            Location::Fetched { url, .. } => url.clone(),
        }
    }

    pub fn open(&self) -> io::Result<File> {
        match self {
            Location::Local(path) | Location::Fetched { path, .. } => File::open(path),
        }
    }

    /// This location, named by its URL when it is a copy in `fetched`.
    pub(crate) fn fetched_from(&self, fetched: &crate::input::remote::Fetched) -> Location {
        match self {
            Location::Local(path) => match fetched.url_of(path) {
                Some(url) => Location::Fetched {
                    path: path.clone(),
                    url,
                },
                None => self.clone(),
            },
            Location::Fetched { .. } => self.clone(),
        }
    }
}

/// How a rank's name was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NamedBy {
    /// The capture's manifest or the rank's sidecar.
    Capture,
    /// The trace file's name (`<id>-TP-n-EP-m`, SGLang's pattern).
    FileName,
    /// Nothing named it: `TP-n` in argument order.
    ArgumentOrder,
}

/// Everything known about a rank before reading its trace. It has a
/// Chrome JSON trace, an `.xplane.pb`, or both.
#[derive(Debug, Clone)]
pub struct RankInput {
    pub name: RankName,
    pub named_by: NamedBy,
    /// The Chrome JSON trace (`trace.json.gz`, Kineto).
    pub trace: Option<Location>,
    pub xplane: Option<Location>,
    pub sidecar: Option<Sidecar>,
    /// The command-line input it came from.
    pub from: String,
}

impl RankInput {
    /// Its files, the trace first.
    pub fn files(&self) -> impl Iterator<Item = &Location> {
        self.trace.iter().chain(&self.xplane)
    }

    /// The file that stands for the rank in messages: its trace, else its
    /// xplane.
    pub fn describe(&self) -> String {
        self.files()
            .next()
            .map(Location::display)
            .unwrap_or_else(|| self.name.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_well() {
        let name = RankName {
            coords: RankCoords {
                role: Role::Prefill,
                worker: 0,
                dp_rank: Some(2),
                ..RankCoords::unified(1, 0)
            },
            stage: None,
            host: Some("tpu-vm-3".into()),
            requests: false,
        };
        assert_eq!(name.display_name(), "prefill-0 TP-1 DP-2 EP-0 (tpu-vm-3)");
        assert_eq!(name.label(), "prefill-0/TP-1-DP-2-EP-0");
        let flat = RankName {
            coords: RankCoords::unified(3, 1),
            stage: Some("EXTEND".into()),
            host: None,
            requests: false,
        };
        assert_eq!(flat.label(), "TP-3-EP-1/EXTEND");
        assert_eq!(flat.display_name(), "unified-0 TP-3 EP-1 EXTEND");
    }
}
