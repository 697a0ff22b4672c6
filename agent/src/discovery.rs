//! What the local server tells about itself (`GET /get_server_info`), and
//! how that and the flags make the agent's identity. Flags always win.

use std::fmt;

use rankline_layout::RankCoords;
use rankline_proto::{AgentIdentity, Role, ServerKind};
use serde_json::Value;

use crate::config::{AgentConfig, ModeChoice};

/// Keys only sglang-jax's server arguments have.
const JAX_ONLY_KEYS: &[&str] = &[
    "xla_backend",
    "jax_proc_id",
    "jax_num_procs",
    "disable_jax_precompile",
    "precompile_token_paddings",
];
/// Keys only SGLang's (PyTorch) server arguments have.
const TORCH_ONLY_KEYS: &[&str] = &[
    "cuda_graph_max_bs",
    "disable_cuda_graph",
    "enable_torch_compile",
    "torch_compile_max_bs",
];

/// What the server said about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovered {
    /// `/get_server_info` answered: this host serves the API.
    ApiNode(ServerFacts),
    /// `/get_server_info` is 404 while `/health` is 200: a node with rank
    /// >= 1 of a multi-host server, which only serves a dummy health check.
    SecondaryNode,
}

/// The parts of `/get_server_info` the agent uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerFacts {
    /// From `disaggregation_mode` (`null` / `"null"` mean unified).
    pub role: Option<Role>,
    pub node_rank: Option<u32>,
    pub nnodes: Option<u32>,
    pub tp_size: Option<u32>,
    pub ep_size: Option<u32>,
    /// The kind and the hint it was read from.
    pub kind: Option<(ServerKind, String)>,
}

impl ServerFacts {
    /// Reads the facts out of a `/get_server_info` JSON answer. Unknown or
    /// odd values are left `None` rather than guessed.
    pub fn from_server_info(info: &Value) -> ServerFacts {
        let role = match info.get("disaggregation_mode") {
            Some(Value::Null) => Some(Role::Unified),
            Some(Value::String(mode)) if mode == "null" || mode.is_empty() => Some(Role::Unified),
            Some(Value::String(mode)) => Role::from_word(mode),
            _ => None,
        };
        let number = |key: &str| {
            info.get(key)
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
        };
        ServerFacts {
            role,
            node_rank: number("node_rank"),
            nnodes: number("nnodes"),
            tp_size: number("tp_size"),
            ep_size: number("ep_size"),
            kind: kind_hint(info),
        }
    }
}

fn kind_hint(info: &Value) -> Option<(ServerKind, String)> {
    let device = info.get("device").and_then(Value::as_str).unwrap_or("");
    if device.eq_ignore_ascii_case("tpu") {
        return Some((ServerKind::SglangJax, "device=tpu".to_string()));
    }
    if let Some(key) = JAX_ONLY_KEYS.iter().find(|k| info.get(**k).is_some()) {
        return Some((ServerKind::SglangJax, format!("has `{key}`")));
    }
    if ["cuda", "rocm", "xpu", "hpu", "npu", "musa"]
        .iter()
        .any(|d| device.eq_ignore_ascii_case(d))
    {
        return Some((ServerKind::Sglang, format!("device={device}")));
    }
    TORCH_ONLY_KEYS
        .iter()
        .find(|k| info.get(**k).is_some())
        .map(|key| (ServerKind::Sglang, format!("has `{key}`")))
}

impl fmt::Display for Discovered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Discovered::SecondaryNode => f.write_str(
                "/get_server_info is 404 and /health is 200: a node >= 1 of a multi-host server",
            ),
            Discovered::ApiNode(facts) => {
                let mut parts = Vec::new();
                if let Some(role) = facts.role {
                    parts.push(format!("role={} (disaggregation_mode)", role.word()));
                }
                if let Some(rank) = facts.node_rank {
                    parts.push(format!("node_rank={rank}"));
                }
                if let Some(n) = facts.nnodes {
                    parts.push(format!("nnodes={n}"));
                }
                if let Some(n) = facts.tp_size {
                    parts.push(format!("tp_size={n}"));
                }
                match &facts.kind {
                    Some((kind, hint)) => parts.push(format!("kind={} ({hint})", kind.word())),
                    None => parts.push("kind unknown".to_string()),
                }
                f.write_str(&parts.join(", "))
            }
        }
    }
}

/// The identity the agent announces, from its flags and what the server
/// said (`None` while the server has not answered yet).
pub fn resolve_identity(
    config: &AgentConfig,
    host: &str,
    discovered: Option<&Discovered>,
) -> AgentIdentity {
    let facts = match discovered {
        Some(Discovered::ApiNode(facts)) => Some(facts),
        _ => None,
    };
    let role = config
        .role
        .or_else(|| facts.and_then(|f| f.role))
        .unwrap_or(Role::Unified);
    let server_kind = config
        .kind
        .fixed()
        .or_else(|| facts.and_then(|f| f.kind.as_ref().map(|(kind, _)| *kind)))
        .unwrap_or(ServerKind::SglangJax);
    let coords = RankCoords {
        role: role.into(),
        worker: config.worker,
        tp_rank: config.tp_rank,
        ep_rank: config.ep_rank,
        dp_rank: config.dp_rank,
        pp_rank: config.pp_rank,
    };
    let trigger = match config.mode {
        ModeChoice::Trigger => true,
        ModeChoice::Collect => false,
        // Until the server answers, assume this agent triggers: a start then
        // fails with "server down", which is what the user needs to hear.
        ModeChoice::Auto => match discovered {
            None => true,
            // vLLM has no /get_server_info: its 404 says nothing about nodes.
            Some(Discovered::SecondaryNode) => {
                server_kind == ServerKind::Vllm && first_rank_of_server(server_kind, &coords)
            }
            Some(Discovered::ApiNode(facts)) => {
                facts.node_rank.unwrap_or(0) == 0 && first_rank_of_server(server_kind, &coords)
            }
        },
    };
    let agent_id = config.agent_id.clone().unwrap_or_else(|| {
        format!(
            "{host}/{}-{}/{}",
            coords.role,
            coords.worker,
            coords.rank_label()
        )
    });
    AgentIdentity {
        agent_id,
        host: host.to_string(),
        role: role as i32,
        worker: config.worker,
        tp_rank: config.tp_rank,
        ep_rank: config.ep_rank,
        dp_rank: config.dp_rank,
        pp_rank: config.pp_rank,
        server_url: config.server_url.clone(),
        labels: config.labels.clone().into_iter().collect(),
        trigger,
        server_kind: server_kind as i32,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        node_rank: facts.and_then(|f| f.node_rank),
    }
}

impl ServerFacts {
    /// The (TP, EP) ranks whose files this host's server writes: every TP
    /// rank of this node for SGLang (one file each), the host itself for
    /// sglang-jax (one pair of files for all its chips, the rank being the
    /// node's).
    pub fn ranks_on_host(&self, kind: ServerKind) -> Vec<(u32, u32)> {
        let node = self.node_rank.unwrap_or(0);
        if kind != ServerKind::Sglang {
            return vec![(node, 0)];
        }
        let tp_size = self.tp_size.unwrap_or(1).max(1);
        let per_node = (tp_size / self.nnodes.unwrap_or(1).max(1)).max(1);
        let ep_size = self.ep_size.unwrap_or(1);
        (node * per_node..(node + 1) * per_node)
            .map(|tp| (tp, rankline_layout::sglang_ep_rank(tp, tp_size, ep_size)))
            .collect()
    }
}

/// An SGLang server has one agent per rank process but one HTTP API: only
/// the agent of its first rank (TP 0 of pipeline stage 0) triggers it. A JAX
/// host has one agent, which triggers when the host serves the API.
fn first_rank_of_server(kind: ServerKind, coords: &RankCoords) -> bool {
    kind == ServerKind::SglangJax || (coords.tp_rank == 0 && coords.pp_rank.unwrap_or(0) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jax_info() -> Value {
        json!({"tp_size": 4, "nnodes": 2, "node_rank": 0, "device": "cpu",
               "disaggregation_mode": null, "xla_backend": "tpu", "port": 30000})
    }

    #[test]
    fn reads_role_node_and_kind() {
        let facts = ServerFacts::from_server_info(&jax_info());
        assert_eq!(facts.role, Some(Role::Unified));
        assert_eq!(facts.node_rank, Some(0));
        assert_eq!(facts.nnodes, Some(2));
        assert_eq!(facts.kind.unwrap().0, ServerKind::SglangJax);

        let sglang = json!({"disaggregation_mode": "prefill", "device": "cuda", "node_rank": 1});
        let facts = ServerFacts::from_server_info(&sglang);
        assert_eq!(facts.role, Some(Role::Prefill));
        assert_eq!(facts.kind.unwrap().0, ServerKind::Sglang);

        let string_null = json!({"disaggregation_mode": "null"});
        let facts = ServerFacts::from_server_info(&string_null);
        assert_eq!(facts.role, Some(Role::Unified));
        assert_eq!(facts.kind, None);
    }

    #[test]
    fn an_sglang_host_has_its_nodes_tp_ranks_and_a_jax_host_one() {
        let facts = ServerFacts::from_server_info(&json!({
            "tp_size": 8, "ep_size": 2, "nnodes": 2, "node_rank": 1, "device": "cuda"
        }));
        assert_eq!(
            facts.ranks_on_host(ServerKind::Sglang),
            [(4, 1), (5, 1), (6, 1), (7, 1)]
        );
        assert_eq!(facts.ranks_on_host(ServerKind::SglangJax), [(1, 0)]);
        let single = ServerFacts::from_server_info(&json!({"tp_size": 2}));
        assert_eq!(single.ranks_on_host(ServerKind::Sglang), [(0, 0), (1, 0)]);
    }

    #[test]
    fn flags_win_over_discovery() {
        let discovered = Discovered::ApiNode(ServerFacts::from_server_info(&json!({
            "disaggregation_mode": "decode", "node_rank": 0, "device": "cuda"
        })));
        let config = AgentConfig {
            role: Some(Role::Prefill),
            kind: crate::config::KindChoice::SglangJax,
            mode: ModeChoice::Collect,
            ..AgentConfig::default()
        };
        let id = resolve_identity(&config, "vm", Some(&discovered));
        assert_eq!(id.role(), Role::Prefill);
        assert_eq!(id.server_kind(), ServerKind::SglangJax);
        assert!(!id.trigger);
        assert_eq!(id.agent_id, "vm/prefill-0/TP-0-EP-0");

        let id = resolve_identity(&AgentConfig::default(), "vm", Some(&discovered));
        assert_eq!(id.role(), Role::Decode);
        assert_eq!(id.server_kind(), ServerKind::Sglang);
        assert!(id.trigger);
    }

    #[test]
    fn auto_mode_triggers_only_on_the_api_node_and_first_rank() {
        let config = AgentConfig::default();
        let secondary = resolve_identity(&config, "h1", Some(&Discovered::SecondaryNode));
        assert!(!secondary.trigger);
        assert!(resolve_identity(&config, "h0", None).trigger);

        let node1 = Discovered::ApiNode(ServerFacts {
            node_rank: Some(1),
            ..ServerFacts::default()
        });
        assert!(!resolve_identity(&config, "h", Some(&node1)).trigger);

        let sglang = Discovered::ApiNode(ServerFacts {
            kind: Some((ServerKind::Sglang, "device=cuda".into())),
            node_rank: Some(0),
            ..ServerFacts::default()
        });
        let rank2 = AgentConfig {
            tp_rank: 2,
            ..AgentConfig::default()
        };
        assert!(!resolve_identity(&rank2, "h", Some(&sglang)).trigger);
        assert!(resolve_identity(&config, "h", Some(&sglang)).trigger);
    }
}
