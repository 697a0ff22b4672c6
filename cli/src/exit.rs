//! The exit codes of every subcommand, named in one place (`rankline
//! capture --help` explains them to users).

use std::process::ExitCode;

/// Everything asked for was done.
pub const OK: u8 = 0;
/// The command ran, but what it produced failed: a capture with failed or
/// lost ranks, a merge or an export that left ranks out.
pub const FAILED: u8 = 1;
/// The command could not do its work at all: bad input, a refused request,
/// an unreachable coordinator (clap's own usage errors exit 2 too).
pub const REFUSED: u8 = 2;
/// Interrupted twice while following a capture: the CLI stopped waiting,
/// the capture goes on (128 + SIGINT, as shells report it).
pub const STOPPED_WAITING: u8 = 130;
/// Stdout was closed by its reader (`| head`): 128 + SIGPIPE, what a shell
/// reports for a tool SIGPIPE ended.
pub const BROKEN_PIPE: u8 = 141;

/// [`OK`] when `ok`, else [`FAILED`].
pub fn ok_or_failed(ok: bool) -> ExitCode {
    ExitCode::from(if ok { OK } else { FAILED })
}
