//! `restore` as one request: select the snapshot, plan the restore its kind
//! needs, then carry the plan out.
//!
//! [`plan`] decides everything and writes nothing, so `restore --dry-run`
//! prints exactly what [`execute`] then does: SQLite databases and stream
//! files go through [`restore::plan_restore`], base backups through
//! [`pg_restore::plan_postgres`], and `--stdout` names the one file it
//! streams.

use std::io::Write;
use std::path::PathBuf;

use crate::commands::pg_restore::{self, ArchiveMode, PgRestoreOptions, PgRestorePlan, PgRestored};
use crate::commands::pitr::RecoveryTarget;
use crate::commands::restore::{self, RestoreOptions, RestorePlan, RestoredFile, Verify};
use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::repo::snapshot::{FileEntry, Snapshot};
use crate::repo::{Repository, SnapshotList};
use crate::selection::{Selector, kind_name, select};
use crate::timeline::TimelineChoice;

/// Everything `restore` was asked, parsed.
#[derive(Clone, Debug)]
pub struct RestoreRequest {
    pub selector: Selector,
    pub to: Option<PathBuf>,
    pub in_place: bool,
    pub verify: Verify,
    pub stdout: bool,
    /// PostgreSQL: where recovery stops. `None`: the end of the WAL, or
    /// `at_exact`.
    pub target: Option<RecoveryTarget>,
    /// `--at` as written, to the instant: the recovery target time.
    /// `selector.at` runs to the end of a second written without a
    /// fraction, which chooses the snapshot listed at that second; recovery
    /// stops at the instant written, so "14:05:00" does not replay a
    /// statement at 14:05:00.3.
    pub at_exact: Option<jiff::Timestamp>,
    pub timeline: TimelineChoice,
    pub target_action: String,
    pub rewindb_path: PathBuf,
    pub archive_mode: ArchiveMode,
}

/// What a restore will do.
pub enum Plan<'a> {
    /// SQLite databases, or a stream's file, written to paths.
    Files {
        snapshot: &'a Snapshot,
        plan: RestorePlan,
    },
    /// A stream's file (or one database) to standard output.
    Stdout {
        id: SnapshotId,
        snapshot: &'a Snapshot,
        file: &'a FileEntry,
    },
    /// A base backup into a new directory, set up to recover.
    Postgres {
        snapshot: &'a Snapshot,
        plan: Box<PgRestorePlan>,
    },
}

/// What a restore did.
pub enum Restored {
    Files(Vec<RestoredFile>),
    Stdout { bytes: u64 },
    Postgres(PgRestored),
}

/// Chooses the snapshot and plans its restore; writes nothing.
pub fn plan<'a>(
    repo: &Repository,
    list: &'a SnapshotList,
    req: &RestoreRequest,
) -> Result<Plan<'a>> {
    let picked = select(list, &req.selector)?;
    let (id, snap) = (picked.id, picked.snapshot);
    if let Some(pg) = &snap.postgres {
        let to = req.to.clone().ok_or_else(|| {
            Error::Usage("a PostgreSQL restore needs --to DIR (a new or empty directory)".into())
        })?;
        if req.in_place || picked.file.is_some() || req.stdout {
            return Err(Error::Usage(
                "--in-place, --file and --stdout are for SQLite and streams; a base backup is \
                 restored whole into --to DIR"
                    .into(),
            ));
        }
        let target = match (&req.target, req.at_exact.or(req.selector.at)) {
            (Some(t), _) => t.clone(),
            // A backup chosen because it finished within the written second
            // recovers to its end at the earliest.
            (None, Some(at)) => RecoveryTarget::Time(at.max(pg.stop_time)),
            (None, None) => RecoveryTarget::EndOfWal,
        };
        let plan = pg_restore::plan_postgres(
            repo,
            id,
            snap,
            &PgRestoreOptions {
                to,
                target,
                timeline: req.timeline,
                target_action: req.target_action.clone(),
                rewindb_path: req.rewindb_path.clone(),
                repo_location: repo.location(),
                archive_mode: req.archive_mode,
                password_from: match repo.crypto().is_encrypted() {
                    true => {
                        Some(crate::crypto::password::for_restore_command().map_err(Error::Usage)?)
                    }
                    false => None,
                },
            },
        )?;
        return Ok(Plan::Postgres {
            snapshot: snap,
            plan: Box::new(plan),
        });
    }
    if req.target.is_some() {
        return Err(Error::Usage(format!(
            "--immediate, --lsn and --target-name are for PostgreSQL base backups; snapshot \
             {} is {}",
            id.short(),
            kind_name(snap)
        )));
    }
    if req.stdout {
        let file = match (snap.files.as_slice(), &picked.file) {
            ([only], None) => only,
            (files, Some(name)) => files.iter().find(|f| &f.name == name).ok_or_else(|| {
                Error::Usage(format!("snapshot {} has no file {name:?}", id.short()))
            })?,
            _ => {
                return Err(Error::Usage(format!(
                    "snapshot {} holds several files: name one with --file or --source",
                    id.short()
                )));
            }
        };
        return Ok(Plan::Stdout {
            id,
            snapshot: snap,
            file,
        });
    }
    // A command's output is not a SQLite database: only its hash applies.
    let verify = match snap.stream {
        Some(_) => Verify::Hash,
        None => req.verify,
    };
    let plan = restore::plan_restore(
        id,
        snap,
        &RestoreOptions {
            into_dir: false,
            to: req.to.clone(),
            in_place: req.in_place,
            file: picked.file.clone(),
            verify,
        },
    )?;
    Ok(Plan::Files {
        snapshot: snap,
        plan,
    })
}

/// Carries out a plan; `stdout` receives a `--stdout` restore.
pub fn execute(repo: &Repository, plan: &Plan<'_>, stdout: &mut impl Write) -> Result<Restored> {
    match plan {
        Plan::Files { plan, .. } => Ok(Restored::Files(restore::restore(repo, plan)?)),
        Plan::Stdout { file, .. } => {
            let bytes = crate::commands::stream::restore_to_writer(repo, file, stdout)?;
            Ok(Restored::Stdout { bytes })
        }
        Plan::Postgres { snapshot, plan } => Ok(Restored::Postgres(pg_restore::restore_postgres(
            repo, snapshot, plan,
        )?)),
    }
}
