//! One agent process for every rank of a host: an SGLang server with tp=8
//! writes eight rank files on one machine, and one `rankline agent --ranks`
//! serves them all. Each rank runs as its own [`Agent`] (its own identity,
//! coordinator stream, claim, journal and sidecar), so the coordinator and
//! storage see exactly what one agent per rank would give; only the first
//! rank of the server triggers it.

use std::future::Future;
use std::time::Duration;

use rankline_proto::ServerKind;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::agent::{server_api, Agent, AgentError};
use crate::config::{AgentConfig, ModeChoice};
use crate::discovery::Discovered;

/// Longest wait between two attempts to learn the host's ranks.
const RANKS_RETRY_MAX: Duration = Duration::from_secs(5);

/// Which ranks an agent process serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RankChoice {
    /// The one rank of the config's `tp_rank` / `ep_rank`.
    One,
    /// These TP ranks (the config's `ep_rank` for each).
    List(Vec<u32>),
    /// Every rank this host's server writes, from `/get_server_info`.
    Auto,
}

impl RankChoice {
    /// Parses `auto` or a list of TP ranks and ranges: `0-7`, `0,2,4-5`.
    pub fn parse(text: &str) -> Result<RankChoice, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("auto") {
            return Ok(RankChoice::Auto);
        }
        let bad = || format!("{text:?} is not `auto` or a list of TP ranks (e.g. 0-7 or 0,2,4-5)");
        let mut ranks = Vec::new();
        for part in text.split(',') {
            let (first, last) = match part.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (part.trim(), part.trim()),
            };
            let first: u32 = first.parse().map_err(|_| bad())?;
            let last: u32 = last.parse().map_err(|_| bad())?;
            if last < first || last - first > 4096 {
                return Err(bad());
            }
            ranks.extend(first..=last);
        }
        ranks.sort_unstable();
        let before = ranks.len();
        ranks.dedup();
        if ranks.len() != before {
            return Err(format!("{text:?} names a rank twice"));
        }
        Ok(RankChoice::List(ranks))
    }
}

/// Runs one agent per chosen rank until `shutdown` resolves. An error of
/// any rank (a claim another agent holds, a bad flag) stops them all.
pub async fn run_ranks(
    config: AgentConfig,
    choice: RankChoice,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    tokio::pin!(shutdown);
    let ranks = match choice {
        RankChoice::One => return Agent::run(config, shutdown).await,
        RankChoice::List(ranks) => ranks.into_iter().map(|tp| (tp, config.ep_rank)).collect(),
        RankChoice::Auto => tokio::select! {
            ranks = ranks_from_server(&config) => ranks?,
            _ = &mut shutdown => return Ok(()),
        },
    };
    let configs = rank_configs(&config, ranks)?;
    let stop = CancellationToken::new();
    let mut agents = JoinSet::new();
    for rank_config in configs {
        let stop = stop.clone();
        agents.spawn(Agent::run(
            rank_config,
            async move { stop.cancelled().await },
        ));
    }
    let mut first_error = None;
    tokio::select! {
        _ = &mut shutdown => {}
        Some(ended) = agents.join_next() => {
            first_error = ended_with_error(ended);
        }
    }
    stop.cancel();
    while let Some(ended) = agents.join_next().await {
        first_error = first_error.or(ended_with_error(ended));
    }
    first_error.map_or(Ok(()), Err)
}

fn ended_with_error(
    ended: Result<Result<(), AgentError>, tokio::task::JoinError>,
) -> Option<AgentError> {
    match ended {
        Ok(result) => result.err(),
        Err(error) => Some(AgentError::Ranks(format!(
            "a rank's agent stopped: {error}"
        ))),
    }
}

/// One config per (TP, EP) rank. Only the first may trigger when the mode
/// is forced to `trigger`: a server has one profiling API.
fn rank_configs(
    config: &AgentConfig,
    ranks: Vec<(u32, u32)>,
) -> Result<Vec<AgentConfig>, AgentError> {
    if ranks.is_empty() {
        return Err(AgentError::Ranks("no rank to serve".to_string()));
    }
    if ranks.len() > 1 && config.kind.fixed() == Some(ServerKind::SglangJax) {
        return Err(AgentError::Ranks(
            "an sglang-jax host writes one pair of files for all its chips, so it is one rank: use --tp-rank, not several --ranks".to_string(),
        ));
    }
    let several = ranks.len() > 1;
    Ok(ranks
        .into_iter()
        .enumerate()
        .map(|(index, (tp_rank, ep_rank))| {
            let mode = match config.mode {
                ModeChoice::Trigger if index > 0 => ModeChoice::Collect,
                mode => mode,
            };
            let agent_id = config.agent_id.as_ref().map(|id| {
                if several {
                    format!("{id}/TP-{tp_rank}")
                } else {
                    id.clone()
                }
            });
            AgentConfig {
                tp_rank,
                ep_rank,
                mode,
                agent_id,
                ..config.clone()
            }
        })
        .collect())
}

/// Asks the server which ranks this host has until it answers.
async fn ranks_from_server(config: &AgentConfig) -> Result<Vec<(u32, u32)>, AgentError> {
    let server = server_api(config)?;
    let mut wait = Duration::from_millis(200);
    loop {
        match server.discover().await {
            Ok(Discovered::ApiNode(facts)) => {
                let kind = config
                    .kind
                    .fixed()
                    .or(facts.kind.as_ref().map(|(kind, _)| *kind))
                    .unwrap_or(ServerKind::SglangJax);
                let ranks = facts.ranks_on_host(kind);
                tracing::info!(?ranks, "this host's ranks, from /get_server_info: {}", Discovered::ApiNode(facts));
                return Ok(ranks);
            }
            Ok(Discovered::SecondaryNode) => {
                return Err(AgentError::Ranks(format!(
                    "{} only answers /health (a node >= 1 of a multi-host server), so it cannot tell this host's ranks: give them with --ranks (or --tp-rank) and --mode collect",
                    config.server_url
                )))
            }
            Err(error) => {
                tracing::warn!("waiting for the server to learn this host's ranks: {error}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RANKS_RETRY_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_lists_parse() {
        assert_eq!(RankChoice::parse("auto"), Ok(RankChoice::Auto));
        assert_eq!(
            RankChoice::parse("0-3"),
            Ok(RankChoice::List(vec![0, 1, 2, 3]))
        );
        assert_eq!(
            RankChoice::parse("4, 0-1"),
            Ok(RankChoice::List(vec![0, 1, 4]))
        );
        for bad in ["", "a", "3-1", "0,0", "1-"] {
            assert!(RankChoice::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_the_first_rank_triggers_when_forced() {
        let config = AgentConfig {
            mode: ModeChoice::Trigger,
            agent_id: Some("gpu0".into()),
            ..AgentConfig::default()
        };
        let configs = rank_configs(&config, vec![(0, 0), (1, 0)]).unwrap();
        assert_eq!(configs[0].mode, ModeChoice::Trigger);
        assert_eq!(configs[1].mode, ModeChoice::Collect);
        assert_eq!(configs[1].tp_rank, 1);
        assert_eq!(configs[1].agent_id.as_deref(), Some("gpu0/TP-1"));
        let jax = AgentConfig {
            kind: crate::config::KindChoice::SglangJax,
            ..AgentConfig::default()
        };
        assert!(rank_configs(&jax, vec![(0, 0), (1, 0)]).is_err());
    }
}
