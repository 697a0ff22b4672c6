//! JAX profiler output of a session, as sglang-jax's `jax.profiler.stop_trace`
//! writes it: `<output_dir>/plugins/profile/<YYYY_MM_DD_HH_MM_SS>/<host>.xplane.pb`
//! and `<host>.trace.json.gz`.
//!
//! The planes: `/host:metadata`, one `/device:TPU:<n>` per local chip
//! (`Steps`, `XLA Modules`, `XLA Ops`), `/host:CPU` (the scheduler thread
//! with step annotations, `PjitFunction`s and Python-tracer events, and a
//! launch thread), and `Task Environment` with `profile_start_time` /
//! `profile_stop_time`. The JSON holds the same events with `ts`/`dur` in µs
//! relative to `profile_start_time`, `pid` 701 for `/host:CPU` and `n + 1`
//! for `/device:TPU:<n>`, string args, and a trailing `{}`.

use std::path::{Path, PathBuf};

use rankline_xplane::encode::{self, put_hostname, PlaneEncoder};

use super::chrome::JsonOut;
use super::plan::{
    device_ops, leaf_name, plan_steps, split_by, spread, Jitter, OpCounts, OpKind, Program,
    StepPlan, EDGE_NS, PYTHON_SHARES,
};
use super::{
    collective_run_id, create_dir, write_file, EventSink, Session, Stat, StatValue, TraceFileKind,
    WriteOptions,
};
use crate::SimError;

/// XProf's trace-viewer pid of the `/host:CPU` plane.
const HOST_PID: u32 = 701;
/// Versions recorded in `/host:metadata` (sglang-jax 0.0.2 runs jax 0.8).
const JAX_VERSION: &str = "0.8.1";
/// Events per step on the host that do not depend on the size knob.
const HOST_FIXED_EVENTS: usize = 30;

const PROGRAM_NAMES: [&str; 3] = ["jitted_run_model", "jitted_sampler", "set_future_token_ids"];
const PROGRAM_IDS: [i64; 3] = [11, 12, 13];
const PHASE_FRAMES: [&str; 4] = [
    "$tp_worker.py:201 forward_batch_generation",
    "$scheduler.py:1012 process_batch_result",
    "$model_runner.py:455 sample",
    "$scheduler.py:1130 set_next_batch_sampling_info_done",
];
const PYTHON_LEAVES: [&str; 16] = [
    "$builtins isinstance",
    "$sys _getframe",
    "$builtins hasattr",
    "$builtins len",
    "$<frozen importlib._bootstrap>:1390 _handle_fromlist",
    "$socket.py:961 recv_pyobj",
    "$allocator.py:103 available_size",
    "$schedule_batch.py:1188 batch_size",
    "$<unknown> append",
    "$enum.py:1230 __hash__",
    "$functools.py:35 update_wrapper",
    "$tree_util.py:96 tree_flatten",
    "$radix_cache.py:310 evictable_size",
    "$dataclasses.py:1545 replace",
    "$_zmq.py:1213 zmq.backend.cython._zmq.Socket.recv",
    "$error.py:45 __init__",
];
const COMPUTE_OPS: [&str; 6] = [
    "fusion",
    "fusion",
    "copy",
    "custom-call",
    "fusion",
    "convolution",
];
/// Collective kinds in the order a step uses them.
pub(crate) const COLLECTIVES: [&str; 5] = [
    "all-reduce",
    "all-gather",
    "reduce-scatter",
    "all-to-all",
    "collective-permute",
];

/// The files a JAX session wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JaxFiles {
    pub trace_json_gz: PathBuf,
    pub xplane_pb: PathBuf,
}

/// `<output_dir>/plugins/profile/<YYYY_MM_DD_HH_MM_SS>` for an export at
/// `unix_ns` (UTC).
pub fn jax_run_dir(output_dir: &Path, unix_ns: i64) -> PathBuf {
    output_dir
        .join("plugins")
        .join("profile")
        .join(utc_folder_name(unix_ns))
}

fn utc_folder_name(unix_ns: i64) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000);
    let (days, day_secs) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}_{month:02}_{day:02}_{:02}_{:02}_{:02}",
        day_secs / 3600,
        day_secs / 60 % 60,
        day_secs % 60
    )
}

/// Writes `<run_dir>/<hostname>.xplane.pb`, then `<hostname>.trace.json.gz`
/// (both are rendered first, in parallel).
pub fn write_jax_session(
    run_dir: &Path,
    hostname: &str,
    session: &Session,
    options: &WriteOptions,
) -> Result<JaxFiles, SimError> {
    create_dir(run_dir)?;
    let files = JaxFiles {
        trace_json_gz: run_dir.join(format!("{hostname}.trace.json.gz")),
        xplane_pb: run_dir.join(format!("{hostname}.xplane.pb")),
    };
    let render = Render::new(session);
    let (xplane, json) = std::thread::scope(|scope| {
        let xplane = scope.spawn(|| render.xplane(hostname));
        let json = render.json();
        (xplane.join(), json)
    });
    let xplane = xplane.map_err(|_| SimError::Render("the xplane encoder panicked".into()))?;
    let json = json.map_err(|source| SimError::Io {
        context: "compressing trace.json.gz".into(),
        source,
    })?;
    if options.skip != Some(TraceFileKind::Xplane) {
        write_file(&files.xplane_pb, &xplane, options.pace)?;
    }
    if options.skip != Some(TraceFileKind::TraceJson) {
        write_file(&files.trace_json_gz, &json, options.pace)?;
    }
    Ok(files)
}

/// Which events a line shows.
#[derive(Debug, Clone, Copy)]
enum LineKind {
    Scheduler,
    Launcher,
    Steps(u32),
    Modules(u32),
    Ops(u32),
}

struct LineSpec {
    id: i64,
    name: &'static str,
    tid: u64,
    kind: LineKind,
}

struct PlaneSpec {
    id: i64,
    name: String,
    pid: u32,
    lines: Vec<LineSpec>,
}

/// A session laid out and ready to be rendered any number of times.
struct Render<'s> {
    session: &'s Session,
    plans: Vec<StepPlan>,
    counts: OpCounts,
    python_per_step: usize,
    compute_names: [Vec<String>; 3],
    collective_names: Vec<String>,
    /// `hlo_module` values (`jit_jitted_run_model`).
    module_names: [String; 3],
    /// `XLA Modules` event names (`jit_jitted_run_model(11)`).
    module_events: [String; 3],
    planes: Vec<PlaneSpec>,
}

impl<'s> Render<'s> {
    fn new(session: &'s Session) -> Render<'s> {
        let shape = &session.shape;
        let devices = shape.local_devices.max(1) as usize;
        let budget = shape.events_per_step.saturating_sub(HOST_FIXED_EVENTS);
        let device_share = if shape.python_tracer {
            budget * 15 / 100
        } else {
            budget
        };
        // Each device also shows its step and three program spans.
        let ops_per_device = (device_share / devices).saturating_sub(4);
        let counts = OpCounts::with_total(ops_per_device, shape.collectives_per_step);
        let python_per_step = if shape.python_tracer {
            budget.saturating_sub(devices * (counts.per_step() + 4))
        } else {
            0
        };
        let compute_names = [
            (0..counts.model_compute())
                .map(|i| format!("{}.{i}", COMPUTE_OPS[i % COMPUTE_OPS.len()]))
                .collect(),
            (0..counts.sampler)
                .map(|i| format!("fusion.{}", 100 + i))
                .collect(),
            (0..counts.set_future)
                .map(|i| format!("dynamic-update-slice.{i}"))
                .collect(),
        ];
        let collective_names = (0..counts.collectives)
            .map(|j| format!("{}.{}", COLLECTIVES[j % COLLECTIVES.len()], j + 1))
            .collect();
        Render {
            session,
            plans: plan_steps(session),
            counts,
            python_per_step,
            compute_names,
            collective_names,
            module_names: PROGRAM_NAMES.map(|name| format!("jit_{name}")),
            module_events: [0, 1, 2]
                .map(|i| format!("jit_{}({})", PROGRAM_NAMES[i], PROGRAM_IDS[i])),
            planes: plane_specs(shape.local_devices.max(1)),
        }
    }

    fn emit(&self, kind: LineKind, sink: &mut dyn EventSink) {
        match kind {
            LineKind::Scheduler => self.scheduler_line(sink),
            LineKind::Launcher => self.launcher_line(sink),
            LineKind::Steps(device) => self.steps_line(device, sink),
            LineKind::Modules(device) => self.modules_line(device, sink),
            LineKind::Ops(device) => self.ops_line(device, sink),
        }
    }

    fn level(&self) -> u32 {
        self.session.shape.host_tracer_level
    }

    fn scheduler_line(&self, sink: &mut dyn EventSink) {
        let python = self.session.shape.python_tracer;
        let leaves_per_phase = split_by(self.python_per_step, PYTHON_SHARES);
        for plan in &self.plans {
            if python {
                sink.event(
                    "$scheduler.py:870 run_batch",
                    plan.host_start,
                    plan.host_end,
                    &[],
                );
            }
            sink.event(
                "run_batch",
                plan.host_start + EDGE_NS,
                plan.host_end - EDGE_NS,
                &[
                    ("step_num", StatValue::Int(plan.step_num as i64)),
                    ("batch_size", StatValue::Int(i64::from(plan.batch_size))),
                    ("_r", StatValue::Int(1)),
                ],
            );
            let mut jitter = Jitter::new(self.session.shape.jitter_seed, plan.step_num, 0xC0DE);
            for (phase, layout) in plan.phase_layout().into_iter().enumerate() {
                if python {
                    sink.event(PHASE_FRAMES[phase], layout.frame.0, layout.frame.1, &[]);
                    let (start, end) = layout.leaves;
                    for (i, (s, e)) in spread(start, end, leaves_per_phase[phase], &mut jitter) {
                        sink.event(leaf_name(&PYTHON_LEAVES, i, plan.step_num), s, e, &[]);
                    }
                }
                let (start, end) = layout.work;
                match Program::ALL
                    .into_iter()
                    .find(|p| p.dispatch_phase() == phase)
                {
                    Some(program) => self.dispatch(sink, plan, program, start, end),
                    None if self.level() >= 2 => {
                        let at = |percent: i64| start + (end - start) * percent / 100;
                        sink.event("PythonRefManager::CollectGarbage", start, at(40), &[]);
                        sink.event("Wait for usage holds", at(50), end, &[]);
                    }
                    None => {}
                }
            }
        }
    }

    /// `PjitFunction(<program>)` and, from level 2, what it does inside.
    fn dispatch(
        &self,
        sink: &mut dyn EventSink,
        plan: &StepPlan,
        program: Program,
        start: i64,
        end: i64,
    ) {
        let name = match program {
            Program::Model => "PjitFunction(jitted_run_model)",
            Program::Sampler => "PjitFunction(jitted_sampler)",
            Program::SetFuture => "PjitFunction(set_future_token_ids)",
        };
        sink.event(name, start, end, &[]);
        if self.level() < 2 {
            return;
        }
        let at = |percent: i64| start + (end - start) * percent / 100;
        let run_id = collective_run_id(plan.round, program.index() as u32);
        sink.event("ParseArguments", at(2), at(8), &[]);
        sink.event("shard_args", at(10), at(30), &[]);
        sink.event("DevicePutWithSharding", at(12), at(28), &[]);
        sink.event(
            "PjRtCApiLoadedExecutable::Execute",
            at(32),
            at(90),
            &[
                ("run_id", StatValue::Int(run_id)),
                ("device_ordinal", StatValue::Int(0)),
            ],
        );
        sink.event("Wait for donation holds", at(34), at(36), &[]);
        if self.level() >= 3 {
            sink.event("PythonRefManager::CollectGarbage", at(92), at(97), &[]);
        }
    }

    /// The runtime thread that hands each program to the chips.
    fn launcher_line(&self, sink: &mut dyn EventSink) {
        for plan in &self.plans {
            let phases = plan.phases();
            for program in Program::ALL {
                let (start, end) = phases[program.dispatch_phase()];
                let launch = start + (end - start) * 6 / 10;
                let run_id = collective_run_id(plan.round, program.index() as u32);
                sink.event(
                    "TpuExecutable::LaunchProgram",
                    launch,
                    launch + (end - launch) / 3,
                    &[
                        ("run_id", StatValue::Int(run_id)),
                        ("program_id", StatValue::Int(PROGRAM_IDS[program.index()])),
                    ],
                );
            }
        }
    }

    fn steps_line(&self, _device: u32, sink: &mut dyn EventSink) {
        for plan in &self.plans {
            let name = plan.step_num.to_string();
            sink.event(
                &name,
                plan.device_start,
                plan.device_end,
                &[("step_num", StatValue::Int(plan.step_num as i64))],
            );
        }
    }

    fn modules_line(&self, device: u32, sink: &mut dyn EventSink) {
        let skew = i64::from(device) * 37;
        for plan in &self.plans {
            for (program, (start, end)) in Program::ALL.into_iter().zip(plan.program_spans()) {
                let i = program.index();
                sink.event(
                    &self.module_events[i],
                    start + skew,
                    end,
                    &[
                        (
                            "run_id",
                            StatValue::Int(collective_run_id(plan.round, i as u32)),
                        ),
                        ("program_id", StatValue::Int(PROGRAM_IDS[i])),
                    ],
                );
            }
        }
    }

    fn ops_line(&self, device: u32, sink: &mut dyn EventSink) {
        for plan in &self.plans {
            device_ops(
                plan,
                &self.counts,
                device,
                self.session.shape.jitter_seed,
                |op| {
                    let program = op.program.index();
                    let name = match op.kind {
                        OpKind::Compute(i) => &self.compute_names[program][i],
                        OpKind::Collective(j) => &self.collective_names[j],
                    };
                    let run_id = collective_run_id(plan.round, program as u32);
                    let stats: [Stat<'_>; 3] = [
                        ("hlo_op", StatValue::Ref(name)),
                        ("hlo_module", StatValue::Ref(&self.module_names[program])),
                        ("run_id", StatValue::Int(run_id)),
                    ];
                    sink.event(name, op.start, op.end, &stats);
                },
            );
        }
    }

    /// The whole `.xplane.pb`.
    fn xplane(&self, hostname: &str) -> Vec<u8> {
        let shape = &self.session.shape;
        let base = self.session.profile_start_unix_ns;
        let mut space = Vec::new();
        let mut metadata = PlaneEncoder::new(0, "/host:metadata");
        metadata.plane_stat("jaxlib_version", encode::StatValue::Str(JAX_VERSION));
        metadata.plane_stat("jax_version", encode::StatValue::Str(JAX_VERSION));
        metadata.finish_into(&mut space);
        for spec in &self.planes {
            let mut plane = PlaneEncoder::new(spec.id, &spec.name);
            for line in &spec.lines {
                let mut encoder = plane.line(line.id, line.name, base);
                self.emit(line.kind, &mut encoder);
                let encoded = encoder.finish();
                plane.add_line(encoded);
            }
            plane.finish_into(&mut space);
        }
        let mut task = PlaneEncoder::new(0, rankline_xplane::TASK_ENVIRONMENT_PLANE);
        let start = self.session.profile_start_unix_ns.max(0) as u64;
        let stop = self.session.profile_stop_unix_ns.max(0) as u64;
        task.plane_stat("profile_start_time", encode::StatValue::Uint(start));
        task.plane_stat("profile_stop_time", encode::StatValue::Uint(stop));
        let options = profile_options(shape.host_tracer_level, shape.python_tracer);
        task.plane_stat("profile_options", encode::StatValue::Bytes(&options));
        task.finish_into(&mut space);
        put_hostname(&mut space, hostname);
        space
    }

    /// The whole `trace.json.gz`.
    fn json(&self) -> std::io::Result<Vec<u8>> {
        let mut out = JsonOut::new(self.session.shape.gzip_level);
        out.raw(r#"{"displayTimeUnit":"ns","metadata":{"highres-ticks":true},"traceEvents":["#);
        for spec in &self.planes {
            write_plane_metadata(&mut out, spec);
            for line in &spec.lines {
                let mut sink = JsonLine {
                    out: &mut out,
                    pid: spec.pid,
                    tid: line.tid,
                    base: self.session.profile_start_unix_ns,
                    error: None,
                };
                self.emit(line.kind, &mut sink);
                if let Some(error) = sink.error {
                    return Err(error);
                }
            }
        }
        out.raw("{}]}");
        out.finish()
    }
}

/// The planes with timelines: devices first, then the host, as XProf orders them.
fn plane_specs(devices: u32) -> Vec<PlaneSpec> {
    let mut planes: Vec<PlaneSpec> = (0..devices)
        .map(|device| PlaneSpec {
            id: i64::from(device),
            name: format!("/device:TPU:{device}"),
            pid: device + 1,
            lines: vec![
                LineSpec {
                    id: 1,
                    name: "Steps",
                    tid: 1,
                    kind: LineKind::Steps(device),
                },
                LineSpec {
                    id: 2,
                    name: "XLA Modules",
                    tid: 2,
                    kind: LineKind::Modules(device),
                },
                LineSpec {
                    id: 3,
                    name: "XLA Ops",
                    tid: 3,
                    kind: LineKind::Ops(device),
                },
            ],
        })
        .collect();
    // Host line ids are thread ids hashed by the profiler; the JSON tid is a
    // 32-bit fingerprint of them.
    let host_line = |name: &'static str, id: u64, kind| LineSpec {
        id: id as i64,
        name,
        tid: u64::from((id ^ (id >> 32)) as u32),
        kind,
    };
    planes.push(PlaneSpec {
        id: 0,
        name: "/host:CPU".to_string(),
        pid: HOST_PID,
        lines: vec![
            host_line(
                "sglang::schedul",
                0x3a1f_92c4_d0b7_5e13,
                LineKind::Scheduler,
            ),
            host_line(
                "tf_pjrt_tpu_launch/0",
                0x1c0d_e5a7_44f2_9b61,
                LineKind::Launcher,
            ),
        ],
    });
    planes
}

/// `process_name`, `process_sort_index`, `thread_name`, `thread_sort_index`.
fn write_plane_metadata(out: &mut JsonOut, spec: &PlaneSpec) {
    let pid = i64::from(spec.pid);
    out.raw(r#"{"ph":"M","pid":"#);
    out.int(pid);
    out.raw(r#","name":"process_name","args":{"name":"#);
    out.string(&spec.name);
    out.raw(r#"}},{"ph":"M","pid":"#);
    out.int(pid);
    out.raw(r#","name":"process_sort_index","args":{"sort_index":"#);
    out.int(pid);
    out.raw("}},");
    for (sort, line) in spec.lines.iter().enumerate() {
        for (field, value) in [
            ("thread_name", None),
            ("thread_sort_index", Some(sort as i64 + 1)),
        ] {
            out.raw(r#"{"ph":"M","pid":"#);
            out.int(pid);
            out.raw(r#","tid":"#);
            out.int(line.tid as i64);
            out.raw(r#","name":""#);
            out.raw(field);
            match value {
                None => {
                    out.raw(r#"","args":{"name":"#);
                    out.string(line.name);
                }
                Some(index) => {
                    out.raw(r#"","args":{"sort_index":"#);
                    out.int(index);
                }
            }
            out.raw("}},");
        }
    }
}

/// Writes one line's events as `X` events with string args; the profiler's
/// internal stats (`_r`, ...) stay in the xplane only, as XProf does.
struct JsonLine<'o> {
    out: &'o mut JsonOut,
    pid: u32,
    tid: u64,
    base: i64,
    error: Option<std::io::Error>,
}

impl EventSink for JsonLine<'_> {
    fn event(&mut self, name: &str, start_ns: i64, end_ns: i64, stats: &[Stat<'_>]) {
        let out = &mut *self.out;
        out.raw(r#"{"ph":"X","pid":"#);
        out.int(i64::from(self.pid));
        out.raw(r#","tid":"#);
        out.int(self.tid as i64);
        out.raw(r#","ts":"#);
        out.micros(start_ns - self.base);
        out.raw(r#","dur":"#);
        out.micros((end_ns - start_ns).max(0));
        out.raw(r#","name":"#);
        out.string(name);
        let mut visible = stats
            .iter()
            .filter(|(key, _)| !key.starts_with('_'))
            .peekable();
        if visible.peek().is_some() {
            out.raw(r#","args":{"#);
            for (i, (key, value)) in visible.enumerate() {
                if i > 0 {
                    out.raw(",");
                }
                out.string(key);
                out.raw(":");
                match value {
                    StatValue::Int(v) => {
                        out.raw("\"");
                        out.int(*v);
                        out.raw("\"");
                    }
                    StatValue::Ref(s) => out.string(s),
                }
            }
            out.raw("}");
        }
        out.raw("},");
        if let Err(error) = out.end_item() {
            self.error.get_or_insert(error);
        }
    }
}

/// A `ProfileOptions` message as JAX records it in `Task Environment`
/// (include_dataset_ops, host/device/python tracer levels, version, enable_hlo_proto).
fn profile_options(host_tracer_level: u32, python_tracer: bool) -> Vec<u8> {
    vec![
        0x08,
        1,
        0x10,
        host_tracer_level as u8,
        0x18,
        1,
        0x20,
        u8::from(python_tracer),
        0x28,
        1,
        0x38,
        1,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_are_utc_timestamps() {
        assert_eq!(
            utc_folder_name(1_795_384_060_465_391_136),
            "2026_11_22_21_47_40"
        );
        assert_eq!(utc_folder_name(0), "1970_01_01_00_00_00");
        assert_eq!(
            utc_folder_name(951_782_400_000_000_000),
            "2000_02_29_00_00_00"
        );
    }
}
