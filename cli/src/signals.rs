//! The signals the CLI listens to: a daemon's shutdown (SIGINT or SIGTERM),
//! the Ctrl-C presses a followed capture turns into a stop, and a closed
//! stdout for the interactive commands.

use tokio::sync::mpsc;

/// Resolves on SIGINT (Ctrl-C), or on SIGTERM where there is one (systemd,
/// Kubernetes): when a daemon (coordinator, agent, sim-server) should stop.
pub async fn shutdown_requested() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Ctrl-C presses, as a channel a loop can select on without missing one
/// between polls. From the first call on, Ctrl-C no longer ends the process.
pub fn interrupts() -> mpsc::UnboundedReceiver<()> {
    let (presses, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if presses.send(()).is_err() {
                return;
            }
        }
    });
    receiver
}

/// `rankline capture show ID --json | head`: once the reader is gone, the
/// next print to stdout ends the process quietly with
/// [`crate::exit::BROKEN_PIPE`], as a Unix tool killed by SIGPIPE would,
/// instead of a panic message. SIGPIPE itself stays ignored (Rust's
/// default): the CLI's own sockets (gRPC, a workload's HTTP, the embedded
/// coordinator and agents of `rankline demo`) must get EPIPE as an error on
/// a closed peer, never a silent kill (vectored socket writes raise SIGPIPE).
pub fn end_quietly_when_stdout_closes() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if is_closed_stdout(info.payload()) {
            std::process::exit(i32::from(crate::exit::BROKEN_PIPE));
        }
        default_hook(info);
    }));
}

/// Whether a panic is `print!`'s on a closed stdout ("failed printing to
/// stdout: Broken pipe (os error 32)").
fn is_closed_stdout(payload: &(dyn std::any::Any + Send)) -> bool {
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or_default();
    message.starts_with("failed printing to stdout") && message.contains("Broken pipe")
}

/// Whether a command failed because its stdout was closed: an
/// `io::Error` of kind `BrokenPipe` anywhere in the error's chain.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_closed_stdout_ends_quietly() {
        let closed: Box<dyn std::any::Any + Send> =
            Box::new("failed printing to stdout: Broken pipe (os error 32)".to_string());
        assert!(is_closed_stdout(closed.as_ref()));
        let other: Box<dyn std::any::Any + Send> = Box::new("index out of bounds");
        assert!(!is_closed_stdout(other.as_ref()));
        let stderr: Box<dyn std::any::Any + Send> =
            Box::new("failed printing to stderr: Broken pipe (os error 32)".to_string());
        assert!(!is_closed_stdout(stderr.as_ref()));
    }

    #[test]
    fn a_broken_pipe_is_found_behind_context() {
        let closed = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("cannot write the summary");
        assert!(is_broken_pipe(&closed));
        let refused =
            anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
                .context("cannot reach the coordinator");
        assert!(!is_broken_pipe(&refused));
    }
}
