//! Which server files a rank collects, held as a lock in the spool, so two
//! agents (or two ranks of one agent) on a machine never take the same file.
//!
//! A JAX server names its files after the host only, so one claim per
//! server folder and host; an SGLang server names them after the rank, so
//! one claim per server folder and rank. The lock is an `flock` on
//! `<spool>/claims/<role>-<worker>/<what>.lock`: the kernel drops it when
//! the agent exits, however it exits, so a killed agent never blocks its
//! successor.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rankline_proto::{AgentIdentity, ServerKind};
use rustix::fs::{flock, FlockOperation};

/// A held claim; dropping it releases the files.
#[derive(Debug)]
pub struct FileClaim {
    path: PathBuf,
    _lock: File,
}

impl FileClaim {
    /// The lock file, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The files this identity collects, in words and as the lock's name.
fn what_is_claimed(identity: &AgentIdentity) -> (String, String) {
    let coords = identity.rank_coords();
    let folder = format!("{}-{}", coords.role, coords.worker);
    match identity.server_kind() {
        ServerKind::Sglang | ServerKind::Vllm => (
            format!("{folder}/sglang-{}", coords.rank_label()),
            format!(
                "the *-{}.trace.json.gz files in <spool>/captures/<id>/{folder}",
                coords.rank_label()
            ),
        ),
        ServerKind::SglangJax | ServerKind::Unspecified => (
            format!("{folder}/jax-{}", identity.host),
            format!(
                "the files host '{}' writes into <spool>/captures/<id>/{folder}",
                identity.host
            ),
        ),
    }
}

/// The lock file of `identity`'s files in `spool`.
pub fn claim_path(spool: &Path, identity: &AgentIdentity) -> PathBuf {
    spool
        .join("claims")
        .join(format!("{}.lock", what_is_claimed(identity).0))
}

/// Takes the claim of `identity`'s files in `spool`. `Err` says who holds
/// it and what to change.
pub fn claim(spool: &Path, identity: &AgentIdentity) -> Result<FileClaim, String> {
    let words = what_is_claimed(identity).1;
    let path = claim_path(spool, identity);
    let io_error = |error: io::Error| format!("cannot take the claim {}: {error}", path.display());
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_error)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_error)?;
    if let Err(error) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
        if error != rustix::io::Errno::WOULDBLOCK {
            return Err(io_error(error.into()));
        }
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        let holder = holder.trim();
        let holder = if holder.is_empty() {
            "another agent".to_string()
        } else {
            holder.to_string()
        };
        return Err(format!(
            "{holder} already collects {words} (spool {}): two servers or ranks named alike on one machine would write, and two agents upload, the same files. Give each server's agent its own --spool, or tell them apart (--worker for another server of the same role, --host for the name each server writes under, the rank flags or --ranks for SGLang)",
            spool.display()
        ));
    }
    file.set_len(0).map_err(io_error)?;
    write!(
        file,
        "agent {} (pid {})",
        identity.agent_id,
        std::process::id()
    )
    .map_err(io_error)?;
    Ok(FileClaim { path, _lock: file })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rankline_proto::Role;

    fn identity(host: &str, tp: u32, kind: ServerKind) -> AgentIdentity {
        let mut identity = AgentIdentity {
            agent_id: format!("{host}/TP-{tp}"),
            host: host.into(),
            tp_rank: tp,
            ..AgentIdentity::default()
        };
        identity.set_role(Role::Unified);
        identity.set_server_kind(kind);
        identity
    }

    #[test]
    fn one_claim_per_jax_host_and_per_sglang_rank() {
        let spool = tempfile::tempdir().unwrap();
        let spool = spool.path();
        let first = claim(spool, &identity("h", 0, ServerKind::SglangJax)).unwrap();
        let refused = claim(spool, &identity("h", 1, ServerKind::SglangJax)).unwrap_err();
        assert!(
            refused.contains("agent h/TP-0") && refused.contains("--spool"),
            "{refused}"
        );
        claim(spool, &identity("other", 1, ServerKind::SglangJax)).expect("another host");
        let _tp0 = claim(spool, &identity("h", 0, ServerKind::Sglang)).unwrap();
        let _tp1 = claim(spool, &identity("h", 1, ServerKind::Sglang)).expect("another rank");
        assert!(claim(spool, &identity("h2", 1, ServerKind::Sglang)).is_err());
        drop(first);
        claim(spool, &identity("h", 1, ServerKind::SglangJax)).expect("released on drop");
    }
}
