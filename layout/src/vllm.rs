//! vLLM's per-worker torch profiler files. vLLM writes them into its fixed
//! profiler dir (`VLLM_TORCH_PROFILER_DIR`, or `torch_profiler_dir` of
//! `--profiler-config`) through torch's `tensorboard_trace_handler`:
//! `<worker_name>.<unix ms>.pt.trace.json.gz`, where the worker name is
//! `[<prefix>_]dp<d>_pp<p>_tp<t>_dcp<c>_ep<e>_rank<r>` (vLLM's
//! `get_worker_rank_suffix`). The content is Kineto JSON.

/// What a vLLM trace file name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VllmTraceName {
    pub dp_rank: u32,
    pub pp_rank: u32,
    pub tp_rank: u32,
    pub ep_rank: u32,
    /// The global rank.
    pub rank: u32,
    /// When torch exported the file (at the stop), epoch ms.
    pub unix_ms: i64,
}

const SUFFIXES: [&str; 2] = [".pt.trace.json.gz", ".pt.trace.json"];

impl VllmTraceName {
    /// The gzipped file name vLLM writes for this worker.
    pub fn file_name(&self) -> String {
        format!(
            "dp{}_pp{}_tp{}_dcp0_ep{}_rank{}.{}.pt.trace.json.gz",
            self.dp_rank, self.pp_rank, self.tp_rank, self.ep_rank, self.rank, self.unix_ms
        )
    }

    /// Parses `[prefix_]dp0_pp0_tp1_dcp0_ep1_rank1.1733150000123.pt.trace.json[.gz]`.
    pub fn parse(name: &str) -> Option<VllmTraceName> {
        let stem = SUFFIXES.iter().find_map(|s| name.strip_suffix(s))?;
        let (worker, millis) = stem.rsplit_once('.')?;
        let unix_ms = millis.parse().ok()?;
        let mut found = VllmTraceName {
            dp_rank: 0,
            pp_rank: 0,
            tp_rank: 0,
            ep_rank: 0,
            rank: 0,
            unix_ms,
        };
        let (mut has_tp, mut has_rank) = (false, false);
        for part in worker.split('_') {
            let number = |key: &str| part.strip_prefix(key).and_then(|n| n.parse::<u32>().ok());
            if let Some(n) = number("rank") {
                (found.rank, has_rank) = (n, true);
            } else if let Some(n) = number("dp") {
                found.dp_rank = n;
            } else if let Some(n) = number("pp") {
                found.pp_rank = n;
            } else if let Some(n) = number("tp") {
                (found.tp_rank, has_tp) = (n, true);
            } else if let Some(n) = number("ep") {
                found.ep_rank = n;
            }
        }
        (has_tp && has_rank).then_some(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let name = VllmTraceName {
            dp_rank: 0,
            pp_rank: 0,
            tp_rank: 1,
            ep_rank: 1,
            rank: 1,
            unix_ms: 1_733_150_000_123,
        };
        assert_eq!(
            name.file_name(),
            "dp0_pp0_tp1_dcp0_ep1_rank1.1733150000123.pt.trace.json.gz"
        );
        assert_eq!(VllmTraceName::parse(&name.file_name()), Some(name));
        let prefixed =
            VllmTraceName::parse("run7_dp1_pp0_tp3_dcp0_ep0_rank7.5.pt.trace.json").unwrap();
        assert_eq!(
            (prefixed.dp_rank, prefixed.tp_rank, prefixed.rank),
            (1, 3, 7)
        );
        assert_eq!(VllmTraceName::parse("host_123.5.pt.trace.json.gz"), None);
        assert_eq!(VllmTraceName::parse("x-TP-0.trace.json.gz"), None);
    }
}
