//! One rank read in one pass: its events are gathered per track (a process
//! and thread of the trace) and only classified at the end, because Kineto
//! writes its `process_name` / `thread_name` records after the events.
//!
//! What a rank keeps while it is read: per track, the intervals of its
//! slices (16 bytes each), its op totals by name, its step candidates and its
//! collective instances. Afterwards only the summary figures, the steps and
//! the collectives remain.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use rankline_layout::Role;
use rankline_merge::{
    CollectiveId, IdKey, InputError, PreparedRank, Span, TraceItem, REQUESTS_TRACK,
};
use rustc_hash::FxHashMap;

use crate::intervals::{covered, shared, union};
use crate::{category, Step};

/// Kineto categories of work that runs on the GPU.
const KINETO_DEVICE_CATEGORIES: [&str; 3] = ["kernel", "gpu_memcpy", "gpu_memset"];

/// What one rank's trace says, in figures.
#[derive(Debug, Clone)]
pub struct RankFacts {
    pub label: String,
    pub display_name: String,
    /// `None` for a capture's requests track, which belongs to no server.
    pub role: Option<Role>,
    pub worker: u32,
    pub host: Option<String>,
    pub source: &'static str,
    pub file: String,
    /// First slice start and last slice end, merged-clock ns.
    pub window: Option<(i64, i64)>,
    /// `None`: device slices; else the host thread whose slices stand in.
    pub host_thread: Option<String>,
    pub busy_ns: i64,
    /// Idle time of the busy track inside steps (waiting for the host).
    pub idle_in_steps_ns: i64,
    /// Device time in compute, in collectives, and in both at once.
    pub compute_ns: Option<i64>,
    pub comm_ns: Option<i64>,
    pub overlap_ns: Option<i64>,
    pub step_source: Option<String>,
    pub steps: Vec<Step>,
    pub ops: FxHashMap<Box<str>, OpTotal>,
    /// Per collective, each occurrence's (start, end), in time order.
    pub collectives: BTreeMap<CollectiveId, Vec<(i64, i64)>>,
}

impl RankFacts {
    /// The role as reports name it: its word, or `requests` for the
    /// requests track.
    pub fn role_word(&self) -> &'static str {
        self.role.map_or(REQUESTS_TRACK, Role::word)
    }
}

/// Time and count of one op name.
#[derive(Debug, Clone, Copy)]
pub struct OpTotal {
    pub total_ns: i64,
    pub count: u64,
    pub category: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TrackKey {
    pid: IdKey,
    tid: IdKey,
    /// Kineto GPU work, told apart by category on shared ids.
    kernel: bool,
}

/// A step-like event as read.
struct Candidate {
    name: Box<str>,
    step_num: Option<u64>,
    start: i64,
    end: i64,
}

#[derive(Default)]
struct Track {
    compute: Vec<(i64, i64)>,
    comm: Vec<(i64, i64)>,
    ops: FxHashMap<Box<str>, OpTotal>,
    /// `step[...]` events (SGLang).
    marked: Vec<Candidate>,
    /// Events with a `step_num` argument (JAX StepTraceAnnotation).
    annotated: Vec<Candidate>,
    collectives: FxHashMap<CollectiveId, Vec<(i64, i64)>>,
}

impl Track {
    fn span(&mut self, span: &Span<'_>) {
        let duration = span.end_ns - span.start_ns;
        let total = match self.ops.get_mut(span.name.as_ref()) {
            Some(total) => total,
            None => self
                .ops
                .entry(span.name.as_ref().into())
                .or_insert(OpTotal {
                    total_ns: 0,
                    count: 0,
                    category: category::of(&span.name),
                }),
        };
        total.total_ns += duration;
        total.count += 1;
        let is_collective = total.category == "collective";
        let interval = (span.start_ns, span.end_ns);
        if is_collective {
            self.comm.push(interval);
        } else {
            self.compute.push(interval);
        }
        if span.name.starts_with("step[") {
            self.marked.push(candidate(span, None));
        } else if let Some(step) = span.arg("step_num") {
            let step_num = step.trim().parse().ok();
            self.annotated.push(candidate(span, step_num));
        }
        // Only names of the collective families can be one: most device
        // ops carry a run_id too, and parsing their args would cost.
        if is_collective {
            if let Some(id) = span.collective() {
                self.collectives.entry(id).or_default().push(interval);
            }
        }
    }

    fn busy(&self) -> Vec<(i64, i64)> {
        let mut all: Vec<(i64, i64)> = self.compute.iter().chain(&self.comm).copied().collect();
        union(&mut all);
        all
    }
}

fn candidate(span: &Span<'_>, step_num: Option<u64>) -> Candidate {
    Candidate {
        name: span.name.as_ref().into(),
        step_num,
        start: span.start_ns,
        end: span.end_ns,
    }
}

/// Reads `rank` and works out its figures.
pub fn read(rank: &PreparedRank) -> Result<RankFacts, InputError> {
    let mut tracks: FxHashMap<TrackKey, Track> = FxHashMap::default();
    let mut processes: FxHashMap<IdKey, String> = FxHashMap::default();
    let mut threads: FxHashMap<(IdKey, IdKey), String> = FxHashMap::default();
    let mut window: Option<(i64, i64)> = None;
    let mut current: Option<(TrackKey, Track)> = None;
    rank.read(|item| {
        match item {
            TraceItem::ProcessName { pid, name } => {
                processes.insert(pid, name.into_owned());
            }
            TraceItem::ThreadName { pid, tid, name } => {
                threads.insert((pid, tid), name.into_owned());
            }
            TraceItem::Span(span) => {
                window = Some(match window {
                    Some((lo, hi)) => (lo.min(span.start_ns), hi.max(span.end_ns)),
                    None => (span.start_ns, span.end_ns),
                });
                let kernel = span
                    .category
                    .as_deref()
                    .is_some_and(|c| KINETO_DEVICE_CATEGORIES.contains(&c));
                // A line's events come one after another: the track being
                // filled stays out of the map until another track's event.
                let same = current.as_ref().is_some_and(|(k, _)| {
                    k.pid == span.pid && k.tid == span.tid && k.kernel == kernel
                });
                if !same {
                    if let Some((key, track)) = current.take() {
                        tracks.insert(key, track);
                    }
                    let key = TrackKey {
                        pid: span.pid.clone(),
                        tid: span.tid.clone(),
                        kernel,
                    };
                    let track = tracks.remove(&key).unwrap_or_default();
                    current = Some((key, track));
                }
                if let Some((_, track)) = current.as_mut() {
                    track.span(&span);
                }
            }
        }
        ControlFlow::Continue(())
    })?;
    if let Some((key, track)) = current {
        tracks.insert(key, track);
    }

    let name = rank.name();
    let process_of = |key: &TrackKey| processes.get(&key.pid).map(String::as_str).unwrap_or("");
    let thread_of = |key: &TrackKey| {
        threads
            .get(&(key.pid.clone(), key.tid.clone()))
            .cloned()
            .unwrap_or_else(|| format!("thread {}", key.tid.describe()))
    };
    let on_device = |key: &TrackKey| process_of(key).starts_with("/device:");
    let is_device_ops = |key: &TrackKey| {
        key.kernel || {
            let thread = thread_of(key);
            on_device(key) && (thread == "XLA Ops" || thread.starts_with("Stream"))
        }
    };

    let mut keys: Vec<&TrackKey> = tracks.keys().collect();
    // Deterministic choices among equals: by ids.
    keys.sort_by(|a, b| (&a.pid, &a.tid, a.kernel).cmp(&(&b.pid, &b.tid, b.kernel)));
    let device: Vec<&TrackKey> = keys.iter().copied().filter(|k| is_device_ops(k)).collect();

    let mut facts = RankFacts {
        label: rank.label(),
        display_name: name.display_name(),
        role: name.server().map(|(role, _)| role),
        worker: name.coords.worker,
        host: name.host.clone(),
        source: match rank.source() {
            rankline_merge::SourceKind::Json => "json",
            rankline_merge::SourceKind::Xplane => "xplane",
        },
        file: rank.file(),
        window,
        host_thread: None,
        busy_ns: 0,
        idle_in_steps_ns: 0,
        compute_ns: None,
        comm_ns: None,
        overlap_ns: None,
        step_source: None,
        steps: Vec::new(),
        ops: FxHashMap::default(),
        collectives: BTreeMap::new(),
    };

    let busy = if device.is_empty() {
        // Host only: the busiest thread stands in for the device.
        let busiest = keys
            .iter()
            .map(|k| (k, tracks[*k].busy()))
            .max_by_key(|(_, busy)| covered(busy));
        match busiest {
            Some((key, busy)) => {
                facts.host_thread = Some(thread_of(key));
                facts.ops = tracks[*key].ops.clone();
                busy
            }
            None => Vec::new(),
        }
    } else {
        let gather = |pick: fn(&Track) -> &Vec<(i64, i64)>| {
            let mut all: Vec<(i64, i64)> = device
                .iter()
                .flat_map(|k| pick(&tracks[*k]).iter().copied())
                .collect();
            union(&mut all);
            all
        };
        let compute = gather(|t| &t.compute);
        let comm = gather(|t| &t.comm);
        facts.compute_ns = Some(covered(&compute));
        facts.comm_ns = Some(covered(&comm));
        facts.overlap_ns = Some(shared(&compute, &comm));
        for key in &device {
            for (op, total) in &tracks[*key].ops {
                let sum = facts.ops.entry(op.clone()).or_insert(OpTotal {
                    total_ns: 0,
                    count: 0,
                    ..*total
                });
                sum.total_ns += total.total_ns;
                sum.count += total.count;
            }
        }
        let mut all: Vec<(i64, i64)> = compute.into_iter().chain(comm).collect();
        union(&mut all);
        all
    };
    facts.busy_ns = covered(&busy);

    // Steps: SGLang's step[...] events, else JAX step annotations on the
    // host, else a device's Steps line.
    let host_keys: Vec<&TrackKey> = keys.iter().copied().filter(|k| !on_device(k)).collect();
    let device_keys: Vec<&TrackKey> = keys.iter().copied().filter(|k| on_device(k)).collect();
    let chosen = if let Some(key) = most(&tracks, &keys, |t| &t.marked) {
        Some((
            &tracks[key].marked,
            format!("step[...] events on {}", thread_of(key)),
        ))
    } else if let Some(key) = most(&tracks, &host_keys, |t| &t.annotated) {
        Some((
            &tracks[key].annotated,
            format!("step_num annotations on {}", thread_of(key)),
        ))
    } else {
        most(&tracks, &device_keys, |t| &t.annotated).map(|key| {
            (
                &tracks[key].annotated,
                format!("{} {}", process_of(key), thread_of(key)),
            )
        })
    };
    if let Some((candidates, source)) = chosen {
        facts.steps = steps_of(candidates, facts.role, name.stage.as_deref());
        facts.step_source = Some(source);
        let mut spans: Vec<(i64, i64)> =
            facts.steps.iter().map(|s| (s.start_ns, s.end_ns)).collect();
        union(&mut spans);
        facts.idle_in_steps_ns = covered(&spans) - shared(&spans, &busy);
    }

    facts.collectives = collectives_of(&tracks);
    Ok(facts)
}

/// The track among `keys` with the most candidates of the kind `pick`
/// takes (the first of equals).
fn most<'k>(
    tracks: &FxHashMap<TrackKey, Track>,
    keys: &[&'k TrackKey],
    pick: fn(&Track) -> &Vec<Candidate>,
) -> Option<&'k TrackKey> {
    keys.iter()
        .copied()
        .filter(|k| !pick(&tracks[*k]).is_empty())
        .min_by_key(|k| std::cmp::Reverse(pick(&tracks[*k]).len()))
}

/// Outermost step events in time order, numbered and staged.
fn steps_of(candidates: &[Candidate], role: Option<Role>, file_stage: Option<&str>) -> Vec<Step> {
    let mut order: Vec<&Candidate> = candidates.iter().collect();
    order.sort_by_key(|c| (c.start, std::cmp::Reverse(c.end)));
    let mut steps: Vec<Step> = Vec::new();
    for c in order {
        if steps.last().is_some_and(|last| c.start < last.end_ns) {
            continue;
        }
        steps.push(Step {
            index: c.step_num.unwrap_or(steps.len() as u64),
            name: c.name.to_string(),
            stage: stage_of(&c.name, role, file_stage).to_string(),
            start_ns: c.start,
            end_ns: c.end,
        });
    }
    steps
}

/// prefill / decode / mixed / idle from the step's name, else from the
/// server's role, else from SGLang's per-stage file, else `step`.
pub fn stage_of(name: &str, role: Option<Role>, file_stage: Option<&str>) -> &'static str {
    let from_text = |text: &str| {
        let upper = text.to_ascii_uppercase();
        if upper.contains("EXTEND") || upper.contains("PREFILL") {
            Some("prefill")
        } else if upper.contains("DECODE") {
            Some("decode")
        } else if upper.contains("MIXED") {
            Some("mixed")
        } else if upper.contains("IDLE") {
            Some("idle")
        } else {
            None
        }
    };
    from_text(name)
        .or_else(|| match role? {
            Role::Prefill => Some("prefill"),
            Role::Decode => Some("decode"),
            Role::Unified => None,
        })
        .or_else(|| file_stage.and_then(from_text))
        .unwrap_or("step")
}

/// One (start, end) per occurrence of each collective: the median over the
/// tracks (devices) that ran it, as `--align collectives` takes it; a
/// collective whose tracks saw different counts is left out.
fn collectives_of(tracks: &FxHashMap<TrackKey, Track>) -> BTreeMap<CollectiveId, Vec<(i64, i64)>> {
    let mut by_op: BTreeMap<&CollectiveId, Vec<Vec<(i64, i64)>>> = BTreeMap::new();
    for track in tracks.values() {
        for (id, spans) in &track.collectives {
            let mut spans = spans.clone();
            spans.sort_unstable();
            by_op.entry(id).or_default().push(spans);
        }
    }
    by_op
        .into_iter()
        .filter_map(|(id, per_track)| {
            let count = per_track[0].len();
            if per_track.iter().any(|t| t.len() != count) {
                return None;
            }
            let occurrences = (0..count)
                .map(|i| {
                    let mut starts: Vec<i64> = per_track.iter().map(|t| t[i].0).collect();
                    let mut ends: Vec<i64> = per_track.iter().map(|t| t[i].1).collect();
                    (median(&mut starts), median(&mut ends))
                })
                .collect();
            Some((id.clone(), occurrences))
        })
        .collect()
}

/// The lower median (a value that occurred).
pub fn median(values: &mut [i64]) -> i64 {
    values.sort_unstable();
    values
        .get(values.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(0)
}
