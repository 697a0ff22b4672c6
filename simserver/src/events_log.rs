//! `--events-log`: one JSON line per profiling call received, stamped the
//! moment the request reached the server, for the start-skew benchmark:
//! `{"event":"start_profile","received_unix_ns":..,"node_rank":..,...}`.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use crate::SimError;

pub(crate) struct EventsLog {
    file: Mutex<File>,
    hostname: String,
    node_rank: u32,
    group_rank: Option<u32>,
}

impl EventsLog {
    pub(crate) fn open(
        path: &Path,
        hostname: &str,
        node_rank: u32,
        group_rank: Option<u32>,
    ) -> Result<EventsLog, SimError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| SimError::Io {
                context: format!("opening the events log {}", path.display()),
                source,
            })?;
        Ok(EventsLog {
            file: Mutex::new(file),
            hostname: hostname.to_string(),
            node_rank,
            group_rank,
        })
    }

    /// Appends one line; a failed write is logged, never fatal to the request.
    pub(crate) fn record(&self, event: &str, received_unix_ns: i64, port: u16) {
        let line = serde_json::json!({
            "event": event,
            "received_unix_ns": received_unix_ns,
            "node_rank": self.node_rank,
            "group_rank": self.group_rank,
            "hostname": self.hostname,
            "port": port,
        });
        let mut text = line.to_string();
        text.push('\n');
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Err(error) = file.write_all(text.as_bytes()) {
            tracing::warn!(%error, "could not append to the events log");
        }
    }
}
