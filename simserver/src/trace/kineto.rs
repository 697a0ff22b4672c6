//! Kineto (PyTorch profiler) output of a session, as SGLang on GPU writes it:
//! `[<prefix>-]<profile_id>-TP-<t>[-DP-<d>][-PP-<p>][-EP-<e>].trace.json.gz`,
//! first as `<file>.tmp`, renamed when complete.
//!
//! Top-level `baseTimeNanoseconds` (what `ts = 0` means), `distributedInfo`
//! and `deviceProperties`; `ts`/`dur` in µs relative to the base. The CPU
//! thread shows Python functions, `cpu_op`s and `cudaLaunchKernel`s; the GPU
//! stream shows the kernels, linked by `ac2g` flows. NCCL kernels carry
//! `Process Group Name`, `Collective name`, `In msg nelems`, `dtype`,
//! `Group size`, `Rank` and `Seq`, the process group's sequence number,
//! which is the same on every rank for the same collective.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::chrome::JsonOut;
use super::plan::{
    device_ops, leaf_name, plan_steps, split_by, spread, DeviceOp, Jitter, OpCounts, OpKind,
    Program, StepPlan, EDGE_NS, PYTHON_SHARES,
};
use super::{write_file, Session, TraceFileKind, WriteOptions};
use crate::SimError;

/// The CUDA stream kernels run on.
const STREAM: i64 = 7;
/// Events per kernel: the kernel, its `cpu_op`, `cudaLaunchKernel`, two flow ends.
const EVENTS_PER_KERNEL: usize = 5;
/// Events per step besides kernels and Python leaves.
const FIXED_EVENTS: usize = 10;
/// Elements each collective moves.
const MESSAGE_ELEMENTS: i64 = 4096 * 1024;

const PHASE_FRAMES: [&str; 4] = [
    "sglang/srt/managers/tp_worker.py(201): forward_batch_generation",
    "sglang/srt/managers/scheduler.py(1012): process_batch_result",
    "sglang/srt/layers/sampler.py(88): forward",
    "sglang/srt/managers/scheduler.py(1130): set_next_batch_sampling_info_done",
];
const PYTHON_LEAVES: [&str; 10] = [
    "<built-in function isinstance>",
    "<built-in function len>",
    "<built-in function getattr>",
    "torch/nn/modules/module.py(1750): _call_impl",
    "torch/nn/modules/module.py(1739): _wrapped_call_impl",
    "sglang/srt/managers/schedule_batch.py(1188): batch_size",
    "sglang/srt/mem_cache/radix_cache.py(310): evictable_size",
    "<built-in method recv_pyobj of Socket object at 0x7f3a5c1d2e80>",
    "threading.py(1138): is_alive",
    "sglang/srt/layers/linear.py(1290): forward",
];
/// (`cpu_op`, kernel) of the model's compute ops.
const MODEL_KERNELS: [(&str, &str); 5] = [
    ("aten::mm", "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off_kernel__5x_cublas"),
    ("sgl_kernel::rmsnorm", "void flashinfer::norm::RMSNormKernel<8u, __nv_bfloat16>(__nv_bfloat16*, __nv_bfloat16*, __nv_bfloat16*, unsigned int, unsigned int, unsigned int, float)"),
    ("flashinfer::batch_decode", "void flashinfer::BatchDecodeWithPagedKVCacheKernel<(flashinfer::PosEncodingMode)0, 2u, 2u, 8u, 16u, 1u, 8u, flashinfer::PageStorage::kIndices, __nv_bfloat16, __nv_bfloat16, __nv_bfloat16, int>(...)"),
    ("aten::add", "void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<c10::BFloat16>, at::detail::Array<char*, 3> >(int, at::native::CUDAFunctor_add<c10::BFloat16>, at::detail::Array<char*, 3>)"),
    ("sgl_kernel::silu_and_mul", "void flashinfer::activation::act_and_mul_kernel<__nv_bfloat16, &silu>(__nv_bfloat16*, __nv_bfloat16 const*, int)"),
];
const SAMPLER_KERNEL: (&str, &str) = ("aten::argmax", "void at::native::reduce_kernel<512, 1, at::native::ReduceOp<c10::BFloat16, at::native::ArgMaxOps<c10::BFloat16>, unsigned int, long, 4> >(at::native::ReduceOp<c10::BFloat16, at::native::ArgMaxOps<c10::BFloat16>, unsigned int, long, 4>)");
const SET_FUTURE_KERNEL: (&str, &str) = ("aten::index_put_", "void at::native::index_elementwise_kernel<128, 4, at::native::gpu_index_kernel<at::native::index_put_kernel_impl<at::native::OpaqueType<8> >(at::TensorIterator&, c10::ArrayRef<long>, c10::ArrayRef<long>)::{lambda(char*, char const*, long)#1}>(at::TensorIteratorBase&, c10::ArrayRef<long>, c10::ArrayRef<long>, at::native::index_put_kernel_impl<at::native::OpaqueType<8> >(at::TensorIterator&, c10::ArrayRef<long>, c10::ArrayRef<long>)::{lambda(char*, char const*, long)#1} const&)::{lambda(int)#1}>(long, at::native::gpu_index_kernel<at::native::index_put_kernel_impl<at::native::OpaqueType<8> >(at::TensorIterator&, c10::ArrayRef<long>, c10::ArrayRef<long>)::{lambda(char*, char const*, long)#1}>(at::TensorIteratorBase&, c10::ArrayRef<long>, c10::ArrayRef<long>, at::native::index_put_kernel_impl<at::native::OpaqueType<8> >(at::TensorIterator&, c10::ArrayRef<long>, c10::ArrayRef<long>)::{lambda(char*, char const*, long)#1} const&)::{lambda(int)#1})");
/// (`Collective name`, kernel, output elements per input element) by kind,
/// in the order of [`super::jax::COLLECTIVES`].
const NCCL_KERNELS: [(&str, &str, bool); 5] = [
    (
        "allreduce",
        "ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevComm*, unsigned long, ncclWork*)",
        false,
    ),
    (
        "_allgather_base",
        "ncclDevKernel_AllGather_RING_LL(ncclDevComm*, unsigned long, ncclWork*)",
        true,
    ),
    (
        "_reduce_scatter_base",
        "ncclDevKernel_ReduceScatter_Sum_bf16_RING_LL(ncclDevComm*, unsigned long, ncclWork*)",
        false,
    ),
    (
        "all_to_allv",
        "ncclDevKernel_SendRecv(ncclDevComm*, unsigned long, ncclWork*)",
        false,
    ),
    (
        "coalesced",
        "ncclDevKernel_SendRecv(ncclDevComm*, unsigned long, ncclWork*)",
        false,
    ),
];

/// Where an SGLang rank sits, and the process that writes its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KinetoRank {
    pub tp_rank: u32,
    pub tp_size: u32,
    pub dp_rank: u32,
    pub dp_size: u32,
    pub pp_rank: u32,
    pub pp_size: u32,
    pub ep_rank: u32,
    pub ep_size: u32,
    /// The local GPU index (the kernels' `pid`).
    pub gpu: u32,
    /// The writing process's pid (the CPU events' `pid`).
    pub os_pid: u32,
}

impl KinetoRank {
    /// A rank of a plain TP group.
    pub fn tp(tp_rank: u32, tp_size: u32) -> KinetoRank {
        KinetoRank {
            tp_rank,
            tp_size,
            dp_rank: 0,
            dp_size: 1,
            pp_rank: 0,
            pp_size: 1,
            ep_rank: 0,
            ep_size: 1,
            gpu: tp_rank % 8,
            os_pid: std::process::id(),
        }
    }

    /// SGLang's file name: `[<prefix>-]<profile_id>-TP-<t>[-DP-<d>][-PP-<p>][-EP-<e>].trace.json.gz`.
    pub fn file_name(&self, profile_id: &str, prefix: Option<&str>) -> String {
        let mut name = String::new();
        if let Some(prefix) = prefix.filter(|p| !p.is_empty()) {
            name.push_str(prefix);
            name.push('-');
        }
        name.push_str(&format!("{profile_id}-TP-{}", self.tp_rank));
        for (part, rank, size) in [
            ("DP", self.dp_rank, self.dp_size),
            ("PP", self.pp_rank, self.pp_size),
            ("EP", self.ep_rank, self.ep_size),
        ] {
            if size > 1 {
                name.push_str(&format!("-{part}-{rank}"));
            }
        }
        name.push_str(".trace.json.gz");
        name
    }

    /// What vLLM's torch profiler names this worker's file, exported at `unix_ms`.
    pub fn vllm_file_name(&self, unix_ms: i64) -> String {
        rankline_layout::VllmTraceName {
            dp_rank: self.dp_rank,
            pp_rank: self.pp_rank,
            tp_rank: self.tp_rank,
            ep_rank: self.ep_rank,
            rank: self.global_rank(),
            unix_ms,
        }
        .file_name()
    }

    fn global_rank(&self) -> u32 {
        (self.dp_rank * self.pp_size + self.pp_rank) * self.tp_size + self.tp_rank
    }

    fn world_size(&self) -> u32 {
        self.dp_size * self.pp_size * self.tp_size
    }
}

/// `str(time.time())` as Python prints it: `1795384333.2165678`.
pub fn python_time_string(unix_ns: i64) -> String {
    let seconds =
        unix_ns.div_euclid(1_000_000_000) as f64 + unix_ns.rem_euclid(1_000_000_000) as f64 / 1e9;
    let text = format!("{seconds}");
    if text.contains('.') {
        text
    } else {
        format!("{text}.0")
    }
}

/// Writes `<output_dir>/<file_name>.tmp`, then renames it to `<file_name>`.
pub fn write_kineto_session(
    output_dir: &Path,
    file_name: &str,
    rank: &KinetoRank,
    session: &Session,
    options: &WriteOptions,
) -> Result<PathBuf, SimError> {
    write_kineto_files(
        output_dir,
        rank,
        &[(file_name.to_string(), session.clone())],
        options,
    )?;
    Ok(output_dir.join(file_name))
}

/// Several Kineto files of one rank (SGLang's per-stage files), each
/// `(file name, session)`: every `.tmp` is written before any is renamed,
/// so a reader never sees one stage complete while the next is unstarted.
pub fn write_kineto_files(
    output_dir: &Path,
    rank: &KinetoRank,
    files: &[(String, Session)],
    options: &WriteOptions,
) -> Result<(), SimError> {
    let mut written = Vec::with_capacity(files.len());
    for (file_name, session) in files {
        let path = output_dir.join(file_name);
        let bytes = render(rank, session).map_err(|source| SimError::Io {
            context: format!("compressing {}", path.display()),
            source,
        })?;
        if options.skip == Some(TraceFileKind::TraceJson) {
            continue;
        }
        let temporary = output_dir.join(format!("{file_name}.tmp"));
        write_file(&temporary, &bytes, options.pace)?;
        written.push((temporary, path));
    }
    for (temporary, path) in written {
        std::fs::rename(&temporary, &path).map_err(|source| SimError::Io {
            context: format!("renaming {} to {}", temporary.display(), path.display()),
            source,
        })?;
    }
    Ok(())
}

fn render(rank: &KinetoRank, session: &Session) -> std::io::Result<Vec<u8>> {
    let shape = &session.shape;
    let budget = shape.events_per_step.saturating_sub(FIXED_EVENTS);
    let kernel_share = if shape.python_tracer {
        budget * 15 / 100
    } else {
        budget
    };
    let counts = OpCounts::with_total(kernel_share / EVENTS_PER_KERNEL, shape.collectives_per_step);
    let python_per_step = if shape.python_tracer {
        budget.saturating_sub(counts.per_step() * EVENTS_PER_KERNEL)
    } else {
        0
    };
    let mut writer = KinetoWriter {
        out: JsonOut::new(shape.gzip_level),
        base: session.profile_start_unix_ns,
        cpu_pid: i64::from(rank.os_pid),
        gpu: i64::from(rank.gpu),
        rank,
        group_ranks: group_ranks(rank),
        counts,
        correlation: 0,
    };
    writer.header(session);
    writer.metadata();
    let leaves_per_phase = split_by(python_per_step, PYTHON_SHARES);
    let mut ops = Vec::with_capacity(counts.per_step());
    for plan in plan_steps(session) {
        ops.clear();
        device_ops(&plan, &counts, 0, shape.jitter_seed, |op| ops.push(op));
        let first_correlation = writer.correlation;
        if shape.python_tracer {
            writer.python(
                "sglang/srt/managers/scheduler.py(870): run_batch",
                plan.host_start,
                plan.host_end,
            );
        }
        writer.step_annotation(&plan);
        let mut jitter = Jitter::new(shape.jitter_seed, plan.step_num, 0xC0DE);
        for (phase, layout) in plan.phase_layout().into_iter().enumerate() {
            if shape.python_tracer {
                writer.python(PHASE_FRAMES[phase], layout.frame.0, layout.frame.1);
                let (start, end) = layout.leaves;
                for (i, (s, e)) in spread(start, end, leaves_per_phase[phase], &mut jitter) {
                    writer.python(leaf_name(&PYTHON_LEAVES, i, plan.step_num), s, e);
                }
            }
            let (start, end) = layout.work;
            match Program::ALL
                .into_iter()
                .find(|p| p.dispatch_phase() == phase)
            {
                Some(program) => {
                    let launched: Vec<&DeviceOp> =
                        ops.iter().filter(|op| op.program == program).collect();
                    for (op, (_, (s, e))) in
                        launched
                            .iter()
                            .zip(spread(start, end, launched.len(), &mut jitter))
                    {
                        writer.launch(op, plan.round, s, e)?;
                    }
                }
                None => {
                    let at = |percent: i64| start + (end - start) * percent / 100;
                    writer.cpu("cpu_op", "aten::item", start, end);
                    writer.cpu(
                        "cuda_runtime",
                        "cudaStreamSynchronize",
                        at(20),
                        end - EDGE_NS,
                    );
                }
            }
        }
        writer.correlation = first_correlation;
        for op in &ops {
            writer.kernel(op, plan.round)?;
        }
    }
    writer.finish(session)
}

/// The global ranks of this rank's TP group, as PyTorch prints them.
fn group_ranks(rank: &KinetoRank) -> String {
    let first = rank.global_rank() - rank.tp_rank;
    let ranks: Vec<String> = (first..first + rank.tp_size)
        .map(|r| r.to_string())
        .collect();
    format!("[{}]", ranks.join(", "))
}

struct KinetoWriter<'r> {
    out: JsonOut,
    base: i64,
    cpu_pid: i64,
    gpu: i64,
    rank: &'r KinetoRank,
    group_ranks: String,
    counts: OpCounts,
    /// Correlation ids pair each launch with its kernel; launches and
    /// kernels of a step are written in the same op order.
    correlation: i64,
}

impl KinetoWriter<'_> {
    fn header(&mut self, session: &Session) {
        let rank = self.rank;
        let device_properties = json!([{
            "id": rank.gpu, "name": "NVIDIA H100 80GB HBM3", "totalGlobalMem": 85_045_149_696_u64,
            "computeMajor": 9, "computeMinor": 0, "maxThreadsPerBlock": 1024,
            "maxThreadsPerMultiprocessor": 2048, "regsPerBlock": 65536, "warpSize": 32,
            "sharedMemPerBlock": 49152, "numSms": 132,
        }]);
        let all_ranks: Vec<u32> = (0..rank.world_size()).collect();
        let distributed = json!({
            "backend": "nccl", "rank": rank.global_rank(), "world_size": rank.world_size(),
            "pg_count": 2,
            "pg_config": [
                {"pg_name": "0", "pg_desc": "default_pg", "backend_config": "cuda:nccl", "pg_size": rank.world_size(), "ranks": all_ranks},
                {"pg_name": "1", "pg_desc": "tp", "backend_config": "cuda:nccl", "pg_size": rank.tp_size, "ranks": self.group_ranks},
            ],
            "nccl_version": "2.21.5",
        });
        self.out.raw(r#"{"schemaVersion":1,"deviceProperties":"#);
        self.out.raw(&device_properties.to_string());
        self.out.raw(r#","cupti_version":24,"cuda_runtime_version":12040,"cuda_driver_version":12040,"distributedInfo":"#);
        self.out.raw(&distributed.to_string());
        self.out.raw(r#","record_shapes":0,"with_stack":"#);
        self.out.int(i64::from(session.shape.python_tracer));
        self.out.raw(r#","profile_memory":0,"trace_id":"#);
        self.out.string(&format!(
            "{:016X}",
            session.profile_start_unix_ns as u64 ^ u64::from(rank.os_pid)
        ));
        self.out
            .raw(r#","displayTimeUnit":"ms","baseTimeNanoseconds":"#);
        self.out.int(self.base);
        self.out.raw(r#","traceEvents":["#);
    }

    fn metadata(&mut self) {
        let cpu_tid = self.cpu_pid;
        let items: [(i64, i64, &str, String); 7] = [
            (
                self.cpu_pid,
                0,
                "process_name",
                r#"{"name":"python3"}"#.into(),
            ),
            (
                self.cpu_pid,
                0,
                "process_labels",
                r#"{"labels":"CPU"}"#.into(),
            ),
            (
                self.cpu_pid,
                0,
                "process_sort_index",
                format!(r#"{{"sort_index":{}}}"#, self.cpu_pid),
            ),
            (
                self.cpu_pid,
                cpu_tid,
                "thread_name",
                format!(r#"{{"name":"thread {cpu_tid} (python3)"}}"#),
            ),
            (self.gpu, 0, "process_name", r#"{"name":"python3"}"#.into()),
            (
                self.gpu,
                0,
                "process_labels",
                format!(r#"{{"labels":"GPU {}"}}"#, self.gpu),
            ),
            (
                self.gpu,
                STREAM,
                "thread_name",
                format!(r#"{{"name":"stream {STREAM} "}}"#),
            ),
        ];
        for (pid, tid, name, args) in items {
            self.out.raw(r#"{"name":""#);
            self.out.raw(name);
            self.out.raw(r#"","ph":"M","ts":0,"pid":"#);
            self.out.int(pid);
            self.out.raw(r#","tid":"#);
            self.out.int(tid);
            self.out.raw(r#","args":"#);
            self.out.raw(&args);
            self.out.raw("},");
        }
    }

    /// The start of an `X` event up to its args.
    fn begin(&mut self, category: &str, name: &str, pid: i64, tid: i64, start: i64, end: i64) {
        let out = &mut self.out;
        out.raw(r#"{"ph":"X","cat":""#);
        out.raw(category);
        out.raw(r#"","name":"#);
        out.string(name);
        out.raw(r#","pid":"#);
        out.int(pid);
        out.raw(r#","tid":"#);
        out.int(tid);
        out.raw(r#","ts":"#);
        out.micros(start - self.base);
        out.raw(r#","dur":"#);
        out.micros((end - start).max(0));
    }

    fn cpu(&mut self, category: &str, name: &str, start: i64, end: i64) {
        self.begin(category, name, self.cpu_pid, self.cpu_pid, start, end);
        self.out.raw("},");
    }

    /// The step as a `user_annotation` with the batch it ran (0: idle).
    fn step_annotation(&mut self, plan: &StepPlan) {
        let (start, end) = (plan.host_start + EDGE_NS, plan.host_end - EDGE_NS);
        self.begin(
            "user_annotation",
            "run_batch",
            self.cpu_pid,
            self.cpu_pid,
            start,
            end,
        );
        self.out.raw(r#","args":{"step_num":"#);
        self.out.int(plan.step_num as i64);
        self.out.raw(r#","batch_size":"#);
        self.out.int(i64::from(plan.batch_size));
        self.out.raw("}},");
    }

    fn python(&mut self, name: &str, start: i64, end: i64) {
        self.cpu("python_function", name, start, end);
    }

    fn names(&self, op: &DeviceOp) -> (&'static str, &'static str) {
        match (op.program, op.kind) {
            (_, OpKind::Collective(j)) => {
                let (_, kernel, _) = NCCL_KERNELS[j % NCCL_KERNELS.len()];
                ("record_param_comms", kernel)
            }
            (Program::Model, OpKind::Compute(i)) => MODEL_KERNELS[i % MODEL_KERNELS.len()],
            (Program::Sampler, _) => SAMPLER_KERNEL,
            (Program::SetFuture, _) => SET_FUTURE_KERNEL,
        }
    }

    /// The collective args Kineto copies onto `record_param_comms` and the NCCL kernel.
    fn collective_args(&mut self, j: usize, round: u64) {
        let (name, _, gathers) = NCCL_KERNELS[j % NCCL_KERNELS.len()];
        let group = i64::from(self.rank.tp_size);
        let seq = round as i64 * self.counts.collectives as i64 + j as i64 + 1;
        let out_elements = if gathers {
            MESSAGE_ELEMENTS * group
        } else {
            MESSAGE_ELEMENTS
        };
        let out = &mut self.out;
        out.raw(r#","Collective name":"#);
        out.string(name);
        out.raw(r#","dtype":"BFloat16","In msg nelems":"#);
        out.int(MESSAGE_ELEMENTS);
        out.raw(r#","Out msg nelems":"#);
        out.int(out_elements);
        out.raw(r#","Group size":"#);
        out.int(group);
        out.raw(r#","Rank":"#);
        out.int(i64::from(self.rank.global_rank()));
        out.raw(
            r#","Process Group Name":"1","Process Group Description":"tp","Process Group Ranks":"#,
        );
        out.string(&self.group_ranks);
        out.raw(r#","In split size":"[]","Out split size":"[]","Seq":"#);
        out.int(seq);
    }

    /// A `cpu_op` launching `op`'s kernel through `cudaLaunchKernel`, with the flow's start.
    fn launch(&mut self, op: &DeviceOp, round: u64, start: i64, end: i64) -> std::io::Result<()> {
        self.correlation += 1;
        let correlation = self.correlation;
        let (cpu_op, _) = self.names(op);
        self.begin("cpu_op", cpu_op, self.cpu_pid, self.cpu_pid, start, end);
        self.out.raw(r#","args":{"External id":"#);
        self.out.int(correlation);
        if let OpKind::Collective(j) = op.kind {
            self.collective_args(j, round);
        }
        self.out.raw("}},");
        let launch_start = start + (end - start) / 4;
        let launch_end = end - (end - start) / 10;
        self.begin(
            "cuda_runtime",
            "cudaLaunchKernel",
            self.cpu_pid,
            self.cpu_pid,
            launch_start,
            launch_end,
        );
        self.out.raw(r#","args":{"External id":"#);
        self.out.int(correlation);
        self.out.raw(r#","cbid":211,"correlation":"#);
        self.out.int(correlation);
        self.out.raw("}},");
        self.flow("s", correlation, self.cpu_pid, self.cpu_pid, launch_start);
        self.out.end_item()
    }

    fn kernel(&mut self, op: &DeviceOp, round: u64) -> std::io::Result<()> {
        self.correlation += 1;
        let correlation = self.correlation;
        let (_, kernel) = self.names(op);
        self.begin("kernel", kernel, self.gpu, STREAM, op.start, op.end);
        self.out.raw(r#","args":{"External id":"#);
        self.out.int(correlation);
        self.out.raw(r#","queued":0,"device":"#);
        self.out.int(self.gpu);
        self.out.raw(r#","context":1,"stream":7,"correlation":"#);
        self.out.int(correlation);
        self.out.raw(r#","registers per thread":128,"shared memory":0,"grid":[132, 1, 1],"block":[128, 1, 1]"#);
        if let OpKind::Collective(j) = op.kind {
            self.collective_args(j, round);
        }
        self.out.raw("}},");
        self.flow("f", correlation, self.gpu, STREAM, op.start);
        self.out.end_item()
    }

    fn flow(&mut self, phase: &str, id: i64, pid: i64, tid: i64, at: i64) {
        let out = &mut self.out;
        out.raw(r#"{"ph":""#);
        out.raw(phase);
        out.raw(r#"","id":"#);
        out.int(id);
        out.raw(r#","pid":"#);
        out.int(pid);
        out.raw(r#","tid":"#);
        out.int(tid);
        out.raw(r#","ts":"#);
        out.micros(at - self.base);
        out.raw(r#","cat":"ac2g","name":"ac2g""#);
        if phase == "f" {
            out.raw(r#","bp":"e""#);
        }
        out.raw("},");
    }

    fn finish(mut self, session: &Session) -> std::io::Result<Vec<u8>> {
        self.out
            .raw(r#"{"name":"Record Window End","ph":"i","s":"g","pid":"","tid":"","ts":"#);
        self.out.micros(session.profile_stop_unix_ns - self.base);
        self.out.raw(r#"}],"traceName":"#);
        self.out.string(&format!("python3_{}", self.rank.os_pid));
        self.out.raw("}");
        self.out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_follow_sglang() {
        let mut rank = KinetoRank::tp(3, 4);
        assert_eq!(rank.file_name("17.5", None), "17.5-TP-3.trace.json.gz");
        rank.ep_size = 4;
        rank.ep_rank = 1;
        rank.dp_size = 2;
        assert_eq!(
            rank.file_name("17.5", Some("x")),
            "x-17.5-TP-3-DP-0-EP-1.trace.json.gz"
        );
    }

    #[test]
    fn profile_ids_look_like_python_floats() {
        assert_eq!(
            python_time_string(1_795_384_333_216_567_800),
            "1795384333.2165678"
        );
        assert_eq!(
            python_time_string(1_795_384_333_000_000_000),
            "1795384333.0"
        );
    }
}
