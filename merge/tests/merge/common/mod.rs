//! Test helpers: a `.pftrace` decoder written independently of the merge's
//! hand encoder (prost messages from the field numbers in FORMATS.md) that
//! checks what trace_processor relies on, and small trace-file builders.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use prost::Message;
use rankline_layout::{
    CaptureStatus, ClockFit, FileKind, FileRecord, Manifest, ManifestRank, RankCoords,
    RankIdentity, RankKey, RankObjects, RankStatus, ServerKind, Sidecar, TimeBase, TimeBaseSource,
    MANIFEST_FORMAT, SIDECAR_FORMAT,
};

#[derive(Clone, PartialEq, Message)]
pub struct Trace {
    #[prost(message, repeated, tag = "1")]
    pub packet: Vec<TracePacket>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TracePacket {
    #[prost(uint64, optional, tag = "8")]
    pub timestamp: Option<u64>,
    #[prost(message, optional, tag = "6")]
    pub clock_snapshot: Option<ClockSnapshot>,
    #[prost(uint32, optional, tag = "58")]
    pub timestamp_clock_id: Option<u32>,
    #[prost(message, optional, tag = "59")]
    pub trace_packet_defaults: Option<TracePacketDefaults>,
    #[prost(uint32, optional, tag = "10")]
    pub trusted_packet_sequence_id: Option<u32>,
    #[prost(message, optional, tag = "11")]
    pub track_event: Option<TrackEvent>,
    #[prost(message, optional, tag = "12")]
    pub interned_data: Option<InternedData>,
    #[prost(uint32, optional, tag = "13")]
    pub sequence_flags: Option<u32>,
    #[prost(message, optional, tag = "60")]
    pub track_descriptor: Option<TrackDescriptor>,
    #[prost(bool, optional, tag = "87")]
    pub first_packet_on_sequence: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ClockSnapshot {
    #[prost(message, repeated, tag = "1")]
    pub clocks: Vec<Clock>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Clock {
    #[prost(uint32, optional, tag = "1")]
    pub clock_id: Option<u32>,
    #[prost(uint64, optional, tag = "2")]
    pub timestamp: Option<u64>,
    #[prost(bool, optional, tag = "3")]
    pub is_incremental: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TracePacketDefaults {
    #[prost(uint32, optional, tag = "58")]
    pub timestamp_clock_id: Option<u32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TrackEvent {
    #[prost(uint64, repeated, packed = "false", tag = "3")]
    pub category_iids: Vec<u64>,
    #[prost(message, repeated, tag = "4")]
    pub debug_annotations: Vec<DebugAnnotation>,
    #[prost(int32, optional, tag = "9")]
    pub r#type: Option<i32>,
    #[prost(uint64, optional, tag = "10")]
    pub name_iid: Option<u64>,
    #[prost(uint64, optional, tag = "11")]
    pub track_uuid: Option<u64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct DebugAnnotation {
    #[prost(uint64, optional, tag = "1")]
    pub name_iid: Option<u64>,
    #[prost(bool, optional, tag = "2")]
    pub bool_value: Option<bool>,
    #[prost(uint64, optional, tag = "3")]
    pub uint_value: Option<u64>,
    #[prost(int64, optional, tag = "4")]
    pub int_value: Option<i64>,
    #[prost(double, optional, tag = "5")]
    pub double_value: Option<f64>,
    #[prost(string, optional, tag = "6")]
    pub string_value: Option<String>,
    #[prost(uint64, optional, tag = "17")]
    pub string_value_iid: Option<u64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct InternedData {
    #[prost(message, repeated, tag = "1")]
    pub event_categories: Vec<Interned>,
    #[prost(message, repeated, tag = "2")]
    pub event_names: Vec<Interned>,
    #[prost(message, repeated, tag = "3")]
    pub debug_annotation_names: Vec<Interned>,
    #[prost(message, repeated, tag = "29")]
    pub debug_annotation_string_values: Vec<InternedBytes>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Interned {
    #[prost(uint64, optional, tag = "1")]
    pub iid: Option<u64>,
    #[prost(string, optional, tag = "2")]
    pub name: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct InternedBytes {
    #[prost(uint64, optional, tag = "1")]
    pub iid: Option<u64>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub str: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TrackDescriptor {
    #[prost(uint64, optional, tag = "1")]
    pub uuid: Option<u64>,
    #[prost(string, optional, tag = "2")]
    pub name: Option<String>,
    #[prost(message, optional, tag = "3")]
    pub process: Option<ProcessDescriptor>,
    #[prost(message, optional, tag = "4")]
    pub thread: Option<ThreadDescriptor>,
    #[prost(uint64, optional, tag = "5")]
    pub parent_uuid: Option<u64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ProcessDescriptor {
    #[prost(int32, optional, tag = "1")]
    pub pid: Option<i32>,
    #[prost(string, optional, tag = "6")]
    pub process_name: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ThreadDescriptor {
    #[prost(int32, optional, tag = "1")]
    pub pid: Option<i32>,
    #[prost(int32, optional, tag = "2")]
    pub tid: Option<i32>,
    #[prost(string, optional, tag = "5")]
    pub thread_name: Option<String>,
}

/// One slice (BEGIN..END) or instant as the decoder saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Slice {
    /// The name of the process track the slice's track is under.
    pub process: String,
    pub track: String,
    /// The track between the process and `track`, if any (a device plane).
    pub group: Option<String>,
    pub track_uuid: u64,
    pub name: String,
    pub category: Option<String>,
    pub start: i64,
    /// Equal to `start` for instants.
    pub end: i64,
    pub instant: bool,
    pub depth: usize,
    pub args: BTreeMap<String, String>,
}

/// A decoded and checked trace.
#[derive(Debug, Default)]
pub struct Decoded {
    pub slices: Vec<Slice>,
    /// Process track names by uuid.
    pub processes: BTreeMap<u64, String>,
    /// pid of each process track.
    pub pids: BTreeMap<u64, i32>,
    /// Every track's name (thread, lane, device, ...) by uuid, with its
    /// parent uuid.
    pub tracks: BTreeMap<u64, (String, u64)>,
    pub sequences: usize,
}

impl Decoded {
    pub fn names(&self, process: &str) -> Vec<&Slice> {
        self.slices
            .iter()
            .filter(|s| s.process == process)
            .collect()
    }
}

/// BOOTTIME: the merged clock, what packets that name no clock are on.
const BOOTTIME: u32 = 6;

#[derive(Default)]
struct SequenceState {
    cleared: bool,
    /// The clock of packets that name none (from the sequence's defaults).
    default_clock: Option<u32>,
    /// Sequence-scoped clocks: (is incremental, offset to BOOTTIME, last
    /// value), from the sequence's clock snapshots.
    clocks: HashMap<u32, (bool, i128, u64)>,
    names: HashMap<u64, String>,
    categories: HashMap<u64, String>,
    arg_names: HashMap<u64, String>,
    arg_values: HashMap<u64, String>,
}

struct Open {
    start: i64,
    name: String,
    category: Option<String>,
    args: BTreeMap<String, String>,
}

/// Each `Trace.packet` of `bytes`, decoded one at a time (so a big trace is
/// never held decoded).
fn for_each_packet(bytes: &[u8], mut on_packet: impl FnMut(TracePacket)) {
    let mut rest = bytes;
    while !rest.is_empty() {
        let key = prost::encoding::decode_varint(&mut rest).expect("a packet key");
        assert_eq!(key, 1 << 3 | 2, "only Trace.packet fields");
        let len = prost::encoding::decode_varint(&mut rest).expect("a packet length") as usize;
        assert!(len <= rest.len(), "a packet runs past the end");
        let packet = TracePacket::decode(&rest[..len]).expect("a valid TracePacket");
        rest = &rest[len..];
        on_packet(packet);
    }
}

impl SequenceState {
    /// A packet's timestamp on the merged clock, as trace_processor reads
    /// it: on its own clock, else its sequence's default one, else BOOTTIME;
    /// an incremental clock's timestamps are deltas from its last value.
    fn merged_time(&mut self, packet: &TracePacket) -> Option<u64> {
        let ts = packet.timestamp?;
        let clock = packet
            .timestamp_clock_id
            .or(self.default_clock)
            .unwrap_or(BOOTTIME);
        if clock == BOOTTIME {
            return Some(ts);
        }
        let (incremental, offset, last) = self
            .clocks
            .get_mut(&clock)
            .unwrap_or_else(|| panic!("clock {clock} is used before a snapshot defines it"));
        let value = if *incremental {
            *last += ts;
            *last
        } else {
            ts
        };
        Some(u64::try_from(i128::from(value) + *offset).expect("a time after the epoch"))
    }

    /// Learns the sequence-scoped clocks of a snapshot (each against BOOTTIME).
    fn snapshot(&mut self, snapshot: &ClockSnapshot) {
        let boottime = snapshot
            .clocks
            .iter()
            .find(|c| c.clock_id == Some(BOOTTIME))
            .and_then(|c| c.timestamp)
            .expect("snapshots relate their clocks to BOOTTIME");
        for clock in &snapshot.clocks {
            let id = clock.clock_id.expect("clock id");
            if id == BOOTTIME {
                continue;
            }
            assert!((64..128).contains(&id), "only sequence-scoped clocks");
            let at = clock.timestamp.unwrap_or(0);
            self.clocks.insert(
                id,
                (
                    clock.is_incremental.unwrap_or(false),
                    i128::from(boottime) - i128::from(at),
                    at,
                ),
            );
        }
    }
}

/// Decodes `bytes` and checks: every packet has a sequence; interned ids are
/// defined before use in their sequence, after a packet that cleared the
/// state; timestamps never go backwards on a track (packets of one
/// sequence need not be in time order: trace_processor sorts them); every
/// event's track has a descriptor under a process track (directly, or
/// through other tracks); BEGIN/END balance per track with strict nesting;
/// uuids are unique. Panics on a violation.
pub fn decode(bytes: &[u8]) -> Decoded {
    let mut slices = Vec::new();
    let mut decoded = decode_with(bytes, true, |slice| slices.push(slice));
    decoded.slices = slices;
    decoded
}

/// [`decode`], handing each slice to `on_slice` instead of keeping it;
/// without `args`, slices come without their annotations (faster).
pub fn decode_with(bytes: &[u8], args: bool, mut on_slice: impl FnMut(Slice)) -> Decoded {
    let mut descriptors: HashMap<u64, TrackDescriptor> = HashMap::new();
    // Descriptors first (trace_processor reads them as it tokenizes).
    for_each_packet(bytes, |packet| {
        if let Some(d) = packet.track_descriptor {
            let uuid = d.uuid.expect("descriptor uuid");
            assert!(
                descriptors.insert(uuid, d).is_none(),
                "duplicate track uuid {uuid}"
            );
        }
    });
    let mut decoded = Decoded::default();
    for (uuid, d) in &descriptors {
        if let Some(p) = &d.process {
            decoded
                .processes
                .insert(*uuid, p.process_name.clone().unwrap_or_default());
            decoded.pids.insert(*uuid, p.pid.expect("process pid"));
        }
    }
    // Each track's process, and the track between them, if any.
    let mut placement: HashMap<u64, (u64, Option<String>)> = HashMap::new();
    for (uuid, d) in &descriptors {
        if d.process.is_some() {
            continue;
        }
        let parent = d.parent_uuid.expect("a thread or lane track has a parent");
        let mut root = parent;
        let mut group = None;
        for _ in 0..8 {
            if decoded.processes.contains_key(&root) {
                break;
            }
            let up = descriptors
                .get(&root)
                .unwrap_or_else(|| panic!("track {uuid}'s parent {root} has no descriptor"));
            group.get_or_insert_with(|| up.name.clone().expect("group tracks are named"));
            root = up.parent_uuid.expect("a group track has a parent");
        }
        assert!(
            decoded.processes.contains_key(&root),
            "track {uuid} is under a process track"
        );
        if let Some(thread) = &d.thread {
            assert_eq!(
                parent, root,
                "thread tracks are directly under their process"
            );
            assert_eq!(
                thread.pid,
                Some(decoded.pids[&parent]),
                "thread pid is its process's"
            );
        }
        let name = d
            .name
            .clone()
            .or_else(|| d.thread.as_ref().and_then(|t| t.thread_name.clone()))
            .expect("tracks are named");
        decoded.tracks.insert(*uuid, (name, parent));
        placement.insert(*uuid, (root, group));
    }
    let mut sequences: HashMap<u32, SequenceState> = HashMap::new();
    let mut open: HashMap<u64, Vec<Open>> = HashMap::new();
    let mut last_ts: HashMap<u64, u64> = HashMap::new();
    for_each_packet(bytes, |packet| {
        let sequence_id = packet
            .trusted_packet_sequence_id
            .expect("every packet has a sequence");
        let state = sequences.entry(sequence_id).or_default();
        let flags = packet.sequence_flags.unwrap_or(0);
        if flags & 1 != 0 {
            *state = SequenceState {
                cleared: true,
                clocks: std::mem::take(&mut state.clocks),
                ..SequenceState::default()
            };
        }
        if let Some(defaults) = &packet.trace_packet_defaults {
            assert!(state.cleared, "defaults before the state was cleared");
            state.default_clock = defaults.timestamp_clock_id;
        }
        if let Some(snapshot) = &packet.clock_snapshot {
            state.snapshot(snapshot);
            return;
        }
        let merged_time = state.merged_time(&packet);
        if let Some(data) = &packet.interned_data {
            assert!(state.cleared, "interned data before the state was cleared");
            for (table, entries) in [
                (&mut state.names, &data.event_names),
                (&mut state.categories, &data.event_categories),
                (&mut state.arg_names, &data.debug_annotation_names),
            ] {
                for entry in entries {
                    table.insert(entry.iid.unwrap(), entry.name.clone().unwrap());
                }
            }
            for entry in &data.debug_annotation_string_values {
                state.arg_values.insert(
                    entry.iid.unwrap(),
                    String::from_utf8(entry.str.clone().unwrap()).unwrap(),
                );
            }
        }
        let Some(event) = &packet.track_event else {
            return;
        };
        assert!(
            state.cleared && flags & 2 != 0,
            "events need the sequence's interned state"
        );
        let ts = merged_time.expect("events have timestamps");
        let uuid = event.track_uuid.expect("events name their track");
        let last = last_ts.entry(uuid).or_default();
        assert!(ts >= *last, "timestamps go backwards on track {uuid}");
        *last = ts;
        let ts = ts as i64;
        let (track_name, _) = decoded
            .tracks
            .get(&uuid)
            .cloned()
            .unwrap_or_else(|| panic!("track {uuid} has no descriptor"));
        let (process_uuid, group) = placement[&uuid].clone();
        let stack = open.entry(uuid).or_default();
        match event.r#type {
            Some(1) | Some(3) => {
                let name = state.names[&event.name_iid.expect("name iid")].clone();
                let category = event
                    .category_iids
                    .first()
                    .map(|c| state.categories[c].clone());
                let args = event
                    .debug_annotations
                    .iter()
                    .filter(|_| args)
                    .map(|a| {
                        let key = state.arg_names[&a.name_iid.expect("annotation name")].clone();
                        let value = if let Some(iid) = a.string_value_iid {
                            state.arg_values[&iid].clone()
                        } else if let Some(s) = &a.string_value {
                            s.clone()
                        } else if let Some(i) = a.int_value {
                            i.to_string()
                        } else if let Some(u) = a.uint_value {
                            u.to_string()
                        } else if let Some(d) = a.double_value {
                            d.to_string()
                        } else if let Some(b) = a.bool_value {
                            b.to_string()
                        } else {
                            panic!("annotation {key} without a value")
                        };
                        (key, value)
                    })
                    .fold(BTreeMap::new(), |mut args, (key, value)| {
                        assert!(
                            !args.contains_key(&key),
                            "{name}: two annotations named {key}"
                        );
                        args.insert(key, value);
                        args
                    });
                if let Some(parent) = stack.last() {
                    assert!(ts >= parent.start, "a child starts before its parent");
                }
                if event.r#type == Some(3) {
                    on_slice(Slice {
                        process: decoded.processes[&process_uuid].clone(),
                        track: track_name,
                        group,
                        track_uuid: uuid,
                        name,
                        category,
                        start: ts,
                        end: ts,
                        instant: true,
                        depth: stack.len(),
                        args,
                    });
                } else {
                    stack.push(Open {
                        start: ts,
                        name,
                        category,
                        args,
                    });
                }
            }
            Some(2) => {
                let begin = stack
                    .pop()
                    .unwrap_or_else(|| panic!("END without BEGIN on {track_name}"));
                assert!(ts >= begin.start);
                on_slice(Slice {
                    process: decoded.processes[&process_uuid].clone(),
                    track: track_name,
                    group,
                    track_uuid: uuid,
                    name: begin.name,
                    category: begin.category,
                    start: begin.start,
                    end: ts,
                    instant: false,
                    depth: stack.len(),
                    args: begin.args,
                });
            }
            other => panic!("unexpected event type {other:?}"),
        }
    });
    for (uuid, stack) in &open {
        assert!(
            stack.is_empty(),
            "track {uuid} has {} unclosed slices",
            stack.len()
        );
    }
    decoded.sequences = sequences.len();
    decoded
}

/// The real fixtures shared with the other crates.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/real-jax")
}

/// The only `plugins/profile/<run>/` folder under a JAX log dir.
pub fn jax_run_dir(log_dir: &Path) -> PathBuf {
    let profile = log_dir.join("plugins/profile");
    let mut runs: Vec<PathBuf> = std::fs::read_dir(&profile)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    runs.sort();
    runs.pop().unwrap()
}

/// Writes `text` gzipped to `path`.
pub fn write_gz(path: &Path, text: &str) {
    let file = std::fs::File::create(path).unwrap();
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    gz.write_all(text.as_bytes()).unwrap();
    gz.finish().unwrap();
}

/// Reads a whole gzipped file as text.
pub fn read_gz(path: &Path) -> String {
    use std::io::Read;
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    text
}

/// One rank of a hand-built capture.
pub struct TestRank {
    pub coords: RankCoords,
    pub host: String,
    pub trigger: bool,
    /// The rank's `trace.json.gz` text; `None` for a rank that failed.
    pub trace: Option<String>,
    /// What `ts = 0` is on the host's clock (the sidecar's time base).
    pub time_base_ns: i64,
    pub clock: Option<ClockFit>,
}

/// Writes `<root>/<id>/` as `rankline capture` would: each rank's trace and
/// sidecar, then `manifest.json` (`complete`, or `partial` when a rank
/// failed). Returns the capture folder.
pub fn write_capture(root: &Path, id: &str, start_at_unix_ns: i64, ranks: &[TestRank]) -> PathBuf {
    let capture = root.join(id);
    std::fs::create_dir_all(&capture).unwrap();
    let mut manifest_ranks = Vec::new();
    for rank in ranks {
        let key = RankKey::new(id, &rank.coords);
        let identity = RankIdentity {
            agent_id: format!("{}/{}", rank.host, rank.coords.display_name()),
            host: rank.host.clone(),
            coords: rank.coords.clone(),
            server_url: "http://127.0.0.1:1".into(),
            server_kind: ServerKind::SglangJax,
            trigger: rank.trigger,
            node_rank: None,
            labels: Default::default(),
        };
        let Some(trace) = &rank.trace else {
            manifest_ranks.push(ManifestRank {
                identity,
                status: RankStatus::Failed,
                reason: Some("timed out in collecting".into()),
                objects: RankObjects::default(),
            });
            continue;
        };
        let trace_path = root.join(key.trace());
        std::fs::create_dir_all(trace_path.parent().unwrap()).unwrap();
        write_gz(&trace_path, trace);
        let sidecar = Sidecar {
            format: SIDECAR_FORMAT.into(),
            profile_id: id.parse().unwrap(),
            identity: identity.clone(),
            start_requested_unix_ns: rank.time_base_ns - 20_000_000,
            stop_requested_unix_ns: None,
            stop_observed_unix_ns: None,
            time_base: TimeBase {
                source: TimeBaseSource::XplaneProfileStartTime,
                unix_ns: rank.time_base_ns,
            },
            profile_stop_unix_ns: None,
            clock: rank.clock.clone(),
            files: vec![FileRecord {
                kind: FileKind::Trace,
                key: key.trace(),
                size: 0,
                sha256: String::new(),
                source_name: format!("{}.trace.json.gz", rank.host),
            }],
            agent_version: "test".into(),
        };
        std::fs::write(
            root.join(key.sidecar()),
            serde_json::to_vec(&sidecar).unwrap(),
        )
        .unwrap();
        manifest_ranks.push(ManifestRank::ok(identity, RankObjects::stored(&key, false)));
    }
    let all_ok = manifest_ranks.iter().all(|r| r.status == RankStatus::Ok);
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        profile_id: id.parse().unwrap(),
        status: if all_ok {
            CaptureStatus::Complete
        } else {
            CaptureStatus::Partial
        },
        reason: None,
        storage_url: root.display().to_string(),
        created_unix_ns: start_at_unix_ns - 1_000_000_000,
        start_at_unix_ns,
        finished_unix_ns: start_at_unix_ns + 2_000_000_000,
        settings: None,
        ranks: manifest_ranks,
        audit: Vec::new(),
    };
    std::fs::write(
        capture.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    capture
}
