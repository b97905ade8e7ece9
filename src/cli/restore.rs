//! `restore` on the command line: the flags turned into one
//! [`RestoreRequest`], the plan (printed and left there with `--dry-run`),
//! then the result.

use std::io::{self, Write};

use serde_json::json;

use crate::commands::pg_backup::parse_lsn;
use crate::commands::pg_restore::{ArchiveMode, PgRestorePlan};
use crate::commands::pitr::RecoveryTarget;
use crate::commands::restore::Verify;
use crate::commands::restore_plan::{self, Plan, RestoreRequest, Restored};
use crate::error::Error;
use crate::selection::{Selector, kind_name};
use crate::time::show;

use super::show::human_bytes;
use super::{Cli, CliError, Command, open, out};

/// Runs `restore` as `cli` says; `w` is standard output.
pub fn restore(cli: &Cli, w: &mut impl Write) -> Result<(), CliError> {
    let Command::Restore {
        snapshot,
        at,
        source,
        file,
        to,
        in_place,
        verify,
        immediate,
        lsn,
        target_name,
        target_action,
        rewindb_path,
        timeline,
        archive_mode,
        stdout,
        dry_run,
        json,
    } = &cli.command
    else {
        unreachable!("called for restore only");
    };
    let tz = jiff::tz::TimeZone::system();
    let at_exact = at
        .as_deref()
        .map(|t| crate::time::parse_time(t, &tz))
        .transpose()
        .map_err(Error::Usage)?;
    let at = at
        .as_deref()
        .map(|t| crate::time::parse_through(t, &tz))
        .transpose()
        .map_err(Error::Usage)?;
    let lsn = lsn.as_deref().map(parse_lsn).transpose()?;
    let target = match (lsn, target_name, immediate) {
        (Some(l), _, _) => Some(RecoveryTarget::Lsn(l)),
        (_, Some(n), _) => Some(RecoveryTarget::Name(n.clone())),
        (_, _, true) => Some(RecoveryTarget::Immediate),
        _ => None,
    };
    let rewindb_path = match rewindb_path {
        Some(p) => std::path::absolute(p)
            .map_err(crate::error::io_err(format!("resolving {}", p.display())))?,
        None => {
            std::env::current_exe().map_err(crate::error::io_err("finding this program's path"))?
        }
    };
    // --immediate and --target-name without a snapshot: the newest
    // base backup (an LSN chooses its own).
    let snapshot = snapshot.clone().or_else(|| {
        (target.is_some() && at.is_none() && lsn.is_none()).then(|| "latest".to_string())
    });
    let req = RestoreRequest {
        selector: Selector {
            snapshot,
            at,
            lsn,
            source: source.clone(),
            file: file.clone(),
            base_backups_only: target.is_some(),
        },
        to: to.clone(),
        in_place: *in_place,
        verify: verify.parse().map_err(Error::Usage)?,
        stdout: *stdout,
        target,
        at_exact,
        timeline: timeline
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(Error::Usage)?
            .unwrap_or_default(),
        target_action: target_action.clone(),
        rewindb_path,
        archive_mode: archive_mode.parse().map_err(Error::Usage)?,
    };
    let repo = open(cli, crate::commands::Operation::Read.lock())?;
    let list = repo.snapshots()?;
    let plan = restore_plan::plan(&repo, &list, &req)?;
    if *dry_run {
        match *json {
            true => out(writeln!(w, "{}", plan_json(&plan)))?,
            false => out(print_plan(w, &plan))?,
        }
        // The real run would stop at a WAL gap: so does its rehearsal.
        if let restore_plan::Plan::Postgres { plan, .. } = &plan
            && let Some(missing) = &plan.wal.missing
        {
            return Err(
                Error::Usage(format!("{missing}; a restore now would write nothing")).into(),
            );
        }
        return Ok(());
    }
    let done = restore_plan::execute(&repo, &plan, &mut io::stdout().lock())?;
    match (*json, &done) {
        // The restored bytes went to stdout: nothing may follow them.
        (_, restore_plan::Restored::Stdout { .. }) => {}
        (true, _) => out(writeln!(w, "{}", restored_json(&plan, &done)))?,
        (false, _) if !cli.quiet => out(print_restored(w, &plan, &done))?,
        _ => {}
    }
    Ok(())
}

fn verify_words(v: Verify) -> &'static str {
    match v {
        Verify::Full => "every chunk's blake3 and the whole file's, then PRAGMA integrity_check",
        Verify::Quick => "every chunk's blake3 and the whole file's, then PRAGMA quick_check",
        Verify::Hash => "every chunk's blake3 and the whole file's",
    }
}

fn target_words(t: &RecoveryTarget) -> String {
    match t {
        RecoveryTarget::EndOfWal => "the end of the archived WAL".into(),
        RecoveryTarget::Immediate => "the end of the base backup (consistency)".into(),
        RecoveryTarget::Time(at) => format!(
            "time {} UTC",
            crate::commands::pg_restore::pg_timestamp(*at)
        ),
        RecoveryTarget::Lsn(l) => format!("LSN {l}"),
        RecoveryTarget::Name(n) => format!("restore point {n:?}"),
    }
}

/// `restore --dry-run`: what the restore would do.
pub fn print_plan(w: &mut impl Write, plan: &Plan<'_>) -> io::Result<()> {
    writeln!(w, "dry run: nothing was written")?;
    match plan {
        Plan::Files { snapshot, plan } => {
            writeln!(
                w,
                "would restore snapshot {} ({}, {} {}):",
                plan.snapshot.short(),
                show(snapshot.time),
                kind_name(snapshot),
                snapshot.sources().join(", ")
            )?;
            if let Some(dir) = &plan.create_dir {
                writeln!(w, "  creating directory {}", dir.display())?;
            }
            for item in &plan.items {
                writeln!(
                    w,
                    "  {} ({}) -> {}{}",
                    item.file.name,
                    human_bytes(item.file.size),
                    item.dest.display(),
                    if item.replace {
                        ", replacing what is there (kept as a safety copy until the restore \
                         verifies)"
                    } else {
                        ", a new file"
                    }
                )?;
            }
            writeln!(w, "  verified by: {}", verify_words(plan.verify))
        }
        Plan::Stdout { id, snapshot, file } => writeln!(
            w,
            "would write {} ({}) of snapshot {} ({}, {}) to standard output, every chunk \
             verified, then the whole file's blake3",
            file.name,
            human_bytes(file.size),
            id.short(),
            show(snapshot.time),
            kind_name(snapshot)
        ),
        Plan::Postgres { snapshot, plan } => {
            let pg = snapshot.postgres.as_ref().expect("a base backup");
            writeln!(
                w,
                "would restore base backup {} (cluster {}, {}, finished {}) to {} ({}): {} \
                 files, {}",
                plan.id.short(),
                pg.system_identifier,
                pg.pgdata.display(),
                show(pg.stop_time),
                plan.to.display(),
                if plan.to_is_new {
                    "a new directory"
                } else {
                    "an empty directory"
                },
                plan.file_count,
                human_bytes(plan.bytes)
            )?;
            writeln!(
                w,
                "recovery: to {}, on timeline {}",
                target_words(&plan.target),
                plan.wal.timeline
            )?;
            match &plan.wal.missing {
                None => writeln!(
                    w,
                    "WAL: {} to {}, all in the repository",
                    plan.wal.from, plan.wal.to
                )?,
                Some(why) => writeln!(w, "WAL: NOT all in the repository: {why}")?,
            }
            print_pg_settings(w, plan)
        }
    }
}

fn print_pg_settings(w: &mut impl Write, plan: &PgRestorePlan) -> io::Result<()> {
    writeln!(w, "recovery settings for postgresql.auto.conf:")?;
    for line in &plan.recovery_settings {
        writeln!(w, "  {line}")?;
    }
    match (&plan.archives_with, plan.archive_mode) {
        (Some(command), _) => writeln!(
            w,
            "archiving: ON. When it starts, the restored server archives WAL with \
             archive_command = {command:?}. If it runs beside the original cluster (a restore \
             drill), restore with --archive-mode off instead, or its promotion adds a second \
             history to the archive"
        ),
        (None, ArchiveMode::Off) => writeln!(
            w,
            "archiving: off (archive_mode = 'off'): the restored server archives nothing"
        ),
        (None, ArchiveMode::Preserve) => writeln!(
            w,
            "archiving: no archive_mode = on found in the backup's postgresql.conf or \
             postgresql.auto.conf (a configuration kept outside the data directory, or in an \
             included file, is not seen). If the restored server runs beside the original \
             cluster (a restore drill), restore with --archive-mode off"
        ),
    }
}

/// `restore --dry-run --json`.
pub fn plan_json(plan: &Plan<'_>) -> serde_json::Value {
    match plan {
        Plan::Files { snapshot, plan } => json!({
            "dry_run": true,
            "kind": "files",
            "snapshot": plan.snapshot.to_hex(),
            "time": snapshot.time.to_string(),
            "create_dir": plan.create_dir,
            "files": plan.items.iter().map(|i| json!({
                "name": i.file.name,
                "size": i.file.size,
                "to": i.dest,
                "replaces": i.replace,
            })).collect::<Vec<_>>(),
            "verify": plan.verify,
        }),
        Plan::Stdout { id, file, .. } => json!({
            "dry_run": true,
            "kind": "stdout",
            "snapshot": id.to_hex(),
            "file": file.name,
            "size": file.size,
        }),
        Plan::Postgres { plan, .. } => {
            let mut v = serde_json::to_value(plan).expect("serialises");
            v["dry_run"] = json!(true);
            v["kind"] = json!("postgres");
            v
        }
    }
}

/// What a restore did, as text.
pub fn print_restored(w: &mut impl Write, plan: &Plan<'_>, done: &Restored) -> io::Result<()> {
    match (plan, done) {
        (Plan::Files { snapshot, plan }, Restored::Files(files)) => {
            for f in files {
                writeln!(
                    w,
                    "restored {} from snapshot {} ({}) to {} ({}, verified)",
                    f.name,
                    plan.snapshot.short(),
                    show(snapshot.time),
                    f.dest.display(),
                    human_bytes(f.size)
                )?;
                if let Some(s) = &f.safety_copy {
                    writeln!(
                        w,
                        "the replaced file was kept as {}; delete it once you are satisfied",
                        s.display()
                    )?;
                }
            }
            Ok(())
        }
        (Plan::Postgres { plan, .. }, Restored::Postgres(done)) => {
            writeln!(
                w,
                "restored base backup {} ({} files, {}, verified) to {}; recovery follows \
                 timeline {}, and WAL {} to {} is in the repository.",
                plan.id.short(),
                done.files,
                human_bytes(done.bytes),
                done.to.display(),
                done.timeline,
                done.wal_from,
                done.wal_to
            )?;
            print_pg_settings(w, plan)?;
            writeln!(
                w,
                "start it with: pg_ctl -D {} start (as the cluster's owner)",
                done.to.display()
            )
        }
        _ => Ok(()),
    }
}

/// What a restore did, as JSON.
pub fn restored_json(plan: &Plan<'_>, done: &Restored) -> serde_json::Value {
    match (plan, done) {
        (Plan::Files { plan, .. }, Restored::Files(files)) => {
            json!({ "snapshot": plan.snapshot.to_hex(), "files": files })
        }
        (_, Restored::Postgres(done)) => serde_json::to_value(done).expect("serialises"),
        // The restored bytes went to stdout: nothing may follow them there.
        (_, Restored::Stdout { .. }) => serde_json::Value::Null,
        _ => serde_json::Value::Null,
    }
}
