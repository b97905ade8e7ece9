//! The CLI's side of the audit log: each command that changes the
//! repository or restores from it is logged once it ends, with its outcome,
//! as `local:<user>` from `cli@<host>`; and `rewindb audit` prints the log.

use std::io::{self, Write};
use std::sync::Mutex;

use super::args::{BackupSource, Command, KeyAction, RepairTarget};
use super::{Cli, CliError};
use crate::repo::Repository;
use crate::repo::audit::{AuditEntry, AuditWriter};

/// The repository the command opened, and what its result adds (a
/// snapshot id, a run's summary).
static OPENED: Mutex<Option<AuditWriter>> = Mutex::new(None);
static DETAIL: Mutex<Option<String>> = Mutex::new(None);

/// Called with each repository the command opens (the first one is logged to).
pub fn opened(repo: &Repository) {
    let mut slot = OPENED.lock().unwrap_or_else(|e| e.into_inner());
    if slot.is_none() {
        *slot = Some(repo.audit_writer());
    }
}

/// What a successful command's entry says (the new snapshot, say).
pub fn note(detail: String) {
    *DETAIL.lock().unwrap_or_else(|e| e.into_inner()) = Some(detail);
}

/// The action and target a command is logged as; `None`: not logged
/// (it changes nothing).
fn describe(command: &Command) -> Option<(&'static str, Option<String>)> {
    let paths = |p: &[std::path::PathBuf]| {
        p.iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    Some(match command {
        Command::Backup { source } => (
            "backup",
            Some(match source {
                BackupSource::Sqlite { dbs, .. } => paths(dbs),
                BackupSource::Postgres { pgdata, .. } => pgdata.display().to_string(),
                BackupSource::PgDump { name, .. } => name.clone().unwrap_or("pg_dump".into()),
                BackupSource::Command { name, .. } => name.clone(),
            }),
        ),
        Command::Restore { .. } => ("restore", None),
        Command::Forget { dry_run: true, .. } | Command::Gc { dry_run: true, .. } => return None,
        Command::Forget { ids, source, .. } => (
            "forget",
            Some(match ids.is_empty() {
                true => source.clone().unwrap_or_else(|| "every source".into()),
                false => ids.join(", "),
            }),
        ),
        Command::Protect { ids } => ("protect", Some(ids.join(", "))),
        Command::Unprotect { ids } => ("unprotect", Some(ids.join(", "))),
        Command::Gc { .. } => ("gc", None),
        Command::Copy { to, .. } => ("copy", Some(to.display().to_string())),
        Command::Run { config, .. } => ("run", Some(config.display().to_string())),
        Command::Repair { what } => (
            "repair",
            Some(match what {
                RepairTarget::Index => "index".into(),
                RepairTarget::CompactIndex => "compact-index".into(),
            }),
        ),
        Command::Key { action } => match action {
            KeyAction::List { .. } => return None,
            KeyAction::Add => ("key add", None),
            KeyAction::Remove { id } => ("key remove", Some(id.clone())),
            KeyAction::Passwd => ("key passwd", None),
        },
        _ => return None,
    })
}

/// Logs the command that just ended, if it is one that is logged and it
/// opened a repository. Bad input (exit 2) is not logged: nothing was
/// attempted, and the repository stays untouched. A failure to log is a
/// warning: the command's own outcome stands.
pub fn record(cli: &Cli, result: &Result<(), CliError>) {
    let Some((action, target)) = describe(&cli.command) else {
        return;
    };
    // A run reports its sources' worst exit code: it ran even when that is 2.
    let bad_input = !matches!(cli.command, Command::Run { .. })
        && match result {
            Err(CliError::Command(e)) => e.exit_code() == crate::error::exit::USAGE,
            Err(CliError::Quiet(code)) => *code == crate::error::exit::USAGE,
            _ => false,
        };
    if bad_input {
        return;
    }
    let Some(writer) = OPENED.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    let detail = DETAIL.lock().unwrap_or_else(|e| e.into_inner()).take();
    let outcome = match result {
        Ok(()) | Err(CliError::Output(_)) => Ok(detail),
        Err(CliError::Command(e)) => Err(e.to_string()),
        Err(CliError::Quiet(code)) => Err(match detail {
            Some(d) => format!("exit code {code}: {d}"),
            None => format!("exit code {code}"),
        }),
    };
    let entry = AuditEntry::local(action, target).finished(outcome);
    if let Err(e) = writer.append(&entry) {
        eprintln!("rewindb: warning: could not write the audit log: {e}");
    }
}

/// `rewindb audit`: the log as text, one entry a line.
pub fn print(w: &mut impl Write, entries: &[AuditEntry]) -> io::Result<()> {
    for e in entries {
        writeln!(
            w,
            "{}  {:<6} {:<12} {}{}  by {} from {}{}",
            crate::time::show(e.time),
            if e.ok { "ok" } else { "FAILED" },
            e.action,
            e.target.as_deref().unwrap_or(""),
            if e.target.is_some() { "" } else { "-" },
            e.who,
            e.from,
            e.detail
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        )?;
    }
    if entries.is_empty() {
        writeln!(w, "the audit log is empty")?;
    }
    Ok(())
}
