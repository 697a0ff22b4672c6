//! Perfetto's own importer on a trace we wrote: `trace_processor_shell`
//! (the engine ui.perfetto.dev runs) imports it and says, through its
//! `stats` table, what it refused, lost or skipped.
//!
//! The binary is `$RANKLINE_TRACE_PROCESSOR`, else
//! `../shared/tools/trace_processor_shell` beside the workspace (where CI
//! has it). [`TraceProcessor::find`] prints why and returns `None` only
//! when neither exists, so a test can skip with a reason.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::workspace_root;

/// Stats that are not counts of what happened to the import.
const HEALTH_SQL: &str = "select name, idx, severity, value from stats \
     where value > 0 and severity in ('error', 'data_loss', 'notice') order by name;\n\
     select count(*) as slices from slice;\n";

/// A `trace_processor_shell` binary.
pub struct TraceProcessor {
    bin: PathBuf,
}

/// One query's result: column names and rows of text values (`[NULL]` for
/// SQL null, as the shell prints it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// The value of `column` in `row`.
    pub fn get(&self, row: usize, column: &str) -> Option<&str> {
        let at = self.columns.iter().position(|c| c == column)?;
        self.rows.get(row)?.get(at).map(String::as_str)
    }
}

/// A `stats` row that says the import refused, lost or silently skipped
/// something (severity `error`, `data_loss` or `notice`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub name: String,
    pub idx: String,
    pub severity: String,
    pub value: u64,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}) = {}", self.name, self.severity, self.value)?;
        if self.idx != "[NULL]" {
            write!(f, " [idx {}]", self.idx)?;
        }
        Ok(())
    }
}

/// What importing a trace gave.
#[derive(Debug, Clone)]
pub struct Import {
    pub problems: Vec<Problem>,
    /// Rows of the `slice` table.
    pub slices: u64,
}

impl Import {
    /// Fails unless the import has no problem stat and exactly
    /// `expected_slices` slices (an unmatched END leaves no stat at all:
    /// only the count shows it).
    pub fn ensure_clean(&self, trace: &Path, expected_slices: u64) -> Result<()> {
        if !self.problems.is_empty() {
            let listed: Vec<String> = self.problems.iter().map(Problem::to_string).collect();
            bail!(
                "trace_processor reports problems importing {}: {}",
                trace.display(),
                listed.join("; ")
            );
        }
        if self.slices != expected_slices {
            bail!(
                "trace_processor imported {} slices from {}, expected {expected_slices}",
                self.slices,
                trace.display()
            );
        }
        Ok(())
    }
}

impl TraceProcessor {
    /// The binary, or `None` (with the reason printed) when there is none.
    pub fn find() -> Option<TraceProcessor> {
        let candidates: Vec<PathBuf> = std::env::var_os("RANKLINE_TRACE_PROCESSOR")
            .map(PathBuf::from)
            .into_iter()
            .chain([workspace_root().join("../shared/tools/trace_processor_shell")])
            .collect();
        match candidates.iter().find(|path| path.is_file()) {
            Some(bin) => Some(TraceProcessor { bin: bin.clone() }),
            None => {
                eprintln!(
                    "SKIPPED: no trace_processor_shell (looked at {}); set \
                     RANKLINE_TRACE_PROCESSOR to Perfetto's trace_processor_shell to run this check",
                    candidates
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                None
            }
        }
    }

    /// Imports `trace` and runs `sql` (one or more statements) on it; one
    /// table per statement that returns rows. A trace the importer refuses
    /// is an error carrying its message.
    pub fn query(&self, trace: &Path, sql: &str) -> Result<Vec<Table>> {
        let dir = tempfile::tempdir()?;
        let query = dir.path().join("query.sql");
        std::fs::write(&query, sql)?;
        let output = Command::new(&self.bin)
            .arg("-q")
            .arg(&query)
            .arg(trace)
            .output()
            .with_context(|| format!("run {}", self.bin.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("error while loading shared libraries") {
            bail!(
                "{} cannot start: {}; it needs Debian's libprotobuf32 and zlib1g \
                 (`apt-get install -y libprotobuf32 zlib1g`; `.ci/run` installs them)",
                self.bin.display(),
                stderr.trim()
            );
        }
        if !output.status.success() {
            bail!(
                "trace_processor_shell failed ({}) on {}: {}{}",
                output.status,
                trace.display(),
                stderr,
                stdout
            );
        }
        parse_tables(&stdout)
    }

    /// Imports `trace` and reads its health: problem stats and slice count.
    pub fn import(&self, trace: &Path) -> Result<Import> {
        let tables = self.query(trace, HEALTH_SQL)?;
        let [problems, slices] = tables.as_slice() else {
            bail!("expected 2 results from the health query, got {tables:?}");
        };
        let problems = (0..problems.rows.len())
            .map(|row| {
                let field = |name: &str| problems.get(row, name).unwrap_or_default().to_string();
                Problem {
                    value: field("value").parse().unwrap_or(u64::MAX),
                    name: field("name"),
                    idx: field("idx"),
                    severity: field("severity"),
                }
            })
            .collect();
        let slices = slices
            .get(0, "slices")
            .and_then(|n| n.parse().ok())
            .context("no slice count")?;
        Ok(Import { problems, slices })
    }

    /// Imports `trace` and fails unless it is clean with `expected_slices`
    /// slices (see [`Import::ensure_clean`]).
    pub fn ensure_clean(&self, trace: &Path, expected_slices: u64) -> Result<Import> {
        let import = self.import(trace)?;
        import.ensure_clean(trace, expected_slices)?;
        Ok(import)
    }
}

/// The shell's `-q` output: per statement, a CSV header and rows, results
/// apart by blank lines.
fn parse_tables(text: &str) -> Result<Vec<Table>> {
    let mut tables = Vec::new();
    let mut current: Option<Table> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            tables.extend(current.take());
            continue;
        }
        let fields = parse_csv_line(line).with_context(|| format!("unreadable line {line:?}"))?;
        match &mut current {
            None => {
                current = Some(Table {
                    columns: fields,
                    rows: Vec::new(),
                })
            }
            Some(table) => table.rows.push(fields),
        }
    }
    tables.extend(current);
    Ok(tables)
}

/// One CSV line as the shell writes it: quoted text (`""` inside for a
/// quote) or bare numbers, comma-separated.
fn parse_csv_line(line: &str) -> Option<Vec<String>> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    '"' => break,
                    c => field.push(c),
                }
            }
        }
        while let Some(&c) = chars.peek() {
            if c == ',' {
                break;
            }
            field.push(c);
            chars.next();
        }
        fields.push(field);
        match chars.next() {
            Some(',') => continue,
            None => return Some(fields),
            Some(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shell_without_its_libraries_says_what_to_install() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("trace_processor_shell");
        std::fs::write(
            &bin,
            "#!/bin/sh\necho 'trace_processor_shell: error while loading shared libraries: \
             libprotobuf.so.32: cannot open shared object file' >&2\nexit 127\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let error = TraceProcessor { bin }
            .import(&dir.path().join("any.pftrace"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("libprotobuf.so.32"), "{error}");
        assert!(
            error.contains("apt-get install -y libprotobuf32 zlib1g"),
            "{error}"
        );
    }

    #[test]
    fn shell_output_becomes_tables() {
        let text = "\"name\",\"idx\",\"severity\",\"value\"\n\"a \"\"b\"\", c\",\"[NULL]\",\"error\",3\n\n\"slices\"\n42\n";
        let tables = parse_tables(text).unwrap();
        assert_eq!(tables.len(), 2);
        assert_eq!(tables[0].get(0, "name"), Some("a \"b\", c"));
        assert_eq!(tables[0].get(0, "value"), Some("3"));
        assert_eq!(tables[1].get(0, "slices"), Some("42"));
        assert_eq!(
            parse_tables("\"n\"\n").unwrap()[0].rows.len(),
            0,
            "a header alone is an empty result"
        );
    }
}
