//! The signals the CLI listens to: a daemon's shutdown (SIGINT or SIGTERM),
//! the Ctrl-C presses a followed capture turns into a stop, and SIGPIPE for
//! the interactive commands.

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
/// next write ends the process quietly, as with any Unix tool, instead of a
/// panic on the broken pipe (Rust ignores SIGPIPE by default). Daemons keep
/// ignoring it: their output goes to logs, and sockets report a closed
/// peer as an error anyway.
pub fn end_quietly_when_stdout_closes() {
    #[cfg(unix)]
    // SAFETY: restores the default action of one signal before any thread
    // is started; no handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
