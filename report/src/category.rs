//! Op categories as the seed analyses group device time: matmul, attention,
//! collective, copy, fusion, other (and python, for host-only ranks'
//! Python-tracer slices).

use rankline_merge::jax_collective_family;

/// What an op does, from its name (and its Kineto category).
pub fn of(name: &str) -> &'static str {
    if name.starts_with('$') {
        return "python";
    }
    let lower = name.to_ascii_lowercase();
    let base = lower.rsplit('/').next().unwrap_or(&lower);
    if jax_collective_family(base).is_some()
        || base.starts_with("all-gather-start")
        || base.starts_with("all-reduce-start")
        || base.starts_with("collective-permute-start")
        || lower.contains("nccl")
    {
        return "collective";
    }
    const ATTENTION: [&str; 5] = ["attention", "flash", "fmha", "paged", "rpa-"];
    if ATTENTION.iter().any(|w| lower.contains(w)) {
        return "attention";
    }
    const MATMUL: [&str; 7] = [
        "dot",
        "gemm",
        "matmul",
        "convolution",
        "cublas",
        "cutlass",
        "xmma",
    ];
    if MATMUL.iter().any(|w| base.contains(w)) {
        return "matmul";
    }
    const COPY: [&str; 5] = [
        "copy",
        "memcpy",
        "memset",
        "dynamic-update-slice",
        "transpose",
    ];
    if COPY.iter().any(|w| base.contains(w)) || base.starts_with("gather") {
        return "copy";
    }
    if base.contains("fusion") {
        return "fusion";
    }
    "other"
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_fall_into_the_seed_reports_groups() {
        for (name, category) in [
            ("all-reduce.3", "collective"),
            ("all-gather-done.1", "collective"),
            ("all-gather-start.1", "collective"),
            ("ncclDevKernel_AllReduce_Sum_bf16_RING_LL", "collective"),
            (
                "jit(jitted_run_model)/QWen3Attention/FlashAttention/jit(ragged_paged_attention)/RPA-bq_32-",
                "attention",
            ),
            ("jit(jitted_run_model)/Qwen3MLP/down_proj/dot_general", "matmul"),
            ("convolution.5", "matmul"),
            ("sm90_xmma_gemm_bf16bf16_bf16f32", "matmul"),
            ("copy.80", "copy"),
            ("Memcpy DtoH (Device -> Pinned)", "copy"),
            ("dynamic-update-slice.0", "copy"),
            ("fusion.12", "fusion"),
            ("custom-call.2", "other"),
            ("$multihost_utils.py:138 process_allgather", "python"),
        ] {
            assert_eq!(super::of(name), category, "{name}");
        }
    }
}
