//! How every subcommand prints its answer on stdout: JSON for scripts
//! (`--json`), text for people. Write errors keep their `io::Error`, so a
//! closed stdout ends the process quietly (`signals::is_broken_pipe`).

use std::io::Write as _;

use anyhow::Context as _;

/// Writes a command's answer: pretty JSON with `--json`, else its text.
pub fn print_summary<T: serde::Serialize>(
    json: bool,
    summary: &T,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut stdout, summary)
            .map_err(std::io::Error::from)
            .context("cannot write the summary")?;
        writeln!(stdout)?;
    } else {
        write!(stdout, "{}", text())?;
    }
    Ok(())
}

/// One JSON line (a followed capture's events, for scripts).
pub fn print_json_line<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, value)
        .map_err(std::io::Error::from)
        .context("cannot write the event")?;
    writeln!(stdout)?;
    Ok(())
}

/// A list the coordinator answered: a JSON array with `--json`, else its
/// `table`, or the `empty` text (which says what to do next) when there is
/// nothing to list.
pub fn print_list<T>(
    json: bool,
    items: &[T],
    item_json: impl Fn(&T) -> serde_json::Value,
    empty: impl FnOnce() -> String,
    table: impl FnOnce(&[T]) -> String,
) -> anyhow::Result<()> {
    if json {
        let values: Vec<_> = items.iter().map(item_json).collect();
        return print_summary(true, &values, String::new);
    }
    print_summary(false, &(), || {
        if items.is_empty() {
            empty() + "\n"
        } else {
            table(items)
        }
    })
}
