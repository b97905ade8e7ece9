//! `run --config FILE`: back up every source, apply each one's retention, and
//! run gc when it is due, under one hold of the repository lock.
//!
//! A source that fails is reported and the others go on; its retention is
//! skipped (nothing is forgotten on a day its backup failed). gc runs when
//! the last one (`gc.json`) is older than the config's `gc.every`, whether or
//! not a source failed.

use jiff::{Span, Timestamp};
use serde::Serialize;

use crate::commands::backup::{BackupOptions, backup_sqlite, validate_sqlite_sources};
use crate::commands::forget::{ForgetOptions, forget};
use crate::commands::gc::{GcOptions, GcReport, gc};
use crate::commands::pg_backup::{PgBackupOptions, backup_postgres};
use crate::config::{Loaded, Source};
use crate::error::Result;
use crate::id::SnapshotId;
use crate::repo::Repository;
use crate::repo::snapshot::Snapshot;

/// What happened to one source.
#[derive(Debug, Serialize)]
pub struct SourceRun {
    pub name: String,
    pub ok: bool,
    pub snapshot: Option<SnapshotId>,
    pub bytes_read: u64,
    pub bytes_added: u64,
    pub duration_secs: f64,
    /// Snapshots of this source kept and forgotten by its policy (none without one).
    pub kept: usize,
    pub forgotten: usize,
    pub error: Option<String>,
    #[serde(skip)]
    pub exit_code: i32,
}

#[derive(Debug, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum GcRun {
    Ran { report: GcReport },
    NotDue { last: Timestamp, next: Timestamp },
    Disabled,
    Failed { error: String },
}

#[derive(Debug, Serialize)]
pub struct RunReport {
    pub sources: Vec<SourceRun>,
    pub gc: GcRun,
}

impl RunReport {
    /// The exit code: the highest of the failing sources' and gc's (4,
    /// verification, outranks 2, bad input, which outranks 1), else 0.
    pub fn exit_code(&self) -> i32 {
        let sources = self.sources.iter().filter(|s| !s.ok).map(|s| s.exit_code);
        let gc = match self.gc {
            GcRun::Failed { .. } => Some(crate::error::exit::FAILURE),
            _ => None,
        };
        sources.chain(gc).max().unwrap_or(crate::error::exit::OK)
    }
}

/// Runs every source of `cfg` into `repo` (opened with the exclusive lock).
pub fn run(repo: &mut Repository, cfg: &Loaded, now: Timestamp) -> RunReport {
    let sources = cfg
        .sources
        .iter()
        .map(|source| run_source(repo, source))
        .collect();
    crate::pipeline::store::settle_index(repo);
    let gc = gc_if_due(repo, cfg, now);
    RunReport { sources, gc }
}

/// Backs up one source and applies its retention (what `run` does for
/// each source; `serve` for one). The caller settles the index after.
pub fn run_source(repo: &Repository, source: &Source) -> SourceRun {
    let started = std::time::Instant::now();
    let mut r = SourceRun {
        name: source.name().to_string(),
        ok: false,
        snapshot: None,
        bytes_read: 0,
        bytes_added: 0,
        duration_secs: 0.0,
        kept: 0,
        forgotten: 0,
        error: None,
        exit_code: 0,
    };
    match backup_one(repo, source).and_then(|(id, snap)| {
        r.snapshot = Some(id);
        r.bytes_read = snap.stats.bytes_read;
        r.bytes_added = snap.stats.bytes_added;
        retain(repo, source, &snap)
    }) {
        Ok((kept, forgotten)) => {
            r.ok = true;
            r.kept = kept;
            r.forgotten = forgotten;
        }
        Err(e) => {
            // Reported in the run's result (stderr, even with --quiet).
            tracing::info!("source {} failed: {e}", source.name());
            r.exit_code = e.exit_code();
            r.error = Some(e.to_string());
        }
    }
    r.duration_secs = started.elapsed().as_secs_f64();
    r
}

fn backup_one(repo: &Repository, source: &Source) -> Result<(SnapshotId, Snapshot)> {
    match source {
        Source::Sqlite { paths, label, .. } => {
            let dbs = validate_sqlite_sources(paths)?;
            backup_sqlite(
                repo,
                &dbs,
                &BackupOptions {
                    label: label.clone(),
                    name: Some(source.name().to_string()),
                    recorded_as: None,
                },
            )
        }
        Source::Postgres {
            pgdata,
            conn,
            label,
            wal_wait,
            ..
        } => backup_postgres(
            repo,
            &PgBackupOptions {
                pgdata: pgdata.clone(),
                conninfo: conn
                    .clone()
                    .unwrap_or_else(crate::source::postgres::default_conninfo),
                label: label.clone(),
                name: Some(source.name().to_string()),
                wal_wait: std::time::Duration::from_secs(*wal_wait),
            },
        ),
    }
}

/// Applies the source's policy to the snapshots of the source `snap` belongs to.
fn retain(repo: &Repository, source: &Source, snap: &Snapshot) -> Result<(usize, usize)> {
    if source.policy().is_empty() {
        return Ok((0, 0));
    }
    let plans = forget(
        repo,
        &ForgetOptions {
            policy: source.policy().clone(),
            group: Some(snap.source_key()),
            ..ForgetOptions::default()
        },
    )?;
    Ok(plans
        .iter()
        .fold((0, 0), |(k, f), p| (k + p.keep.len(), f + p.forget.len())))
}

fn gc_if_due(repo: &mut Repository, cfg: &Loaded, now: Timestamp) -> GcRun {
    let Some(every) = cfg.gc_every else {
        return GcRun::Disabled;
    };
    let last = match repo.last_gc() {
        Ok(last) => last,
        Err(e) => {
            return GcRun::Failed {
                error: e.to_string(),
            };
        }
    };
    if let Some(last) = last
        && let Some(next) = not_due_until(last, every, now)
    {
        return GcRun::NotDue { last, next };
    }
    let opts = GcOptions {
        dry_run: false,
        repack_threshold: cfg.repack_threshold,
    };
    match gc(repo, &opts) {
        Ok(report) => GcRun::Ran { report },
        Err(e) => {
            tracing::info!("gc failed: {e}");
            GcRun::Failed {
                error: e.to_string(),
            }
        }
    }
}

/// When gc is next due, if it is not due at `now`. Slack of a tenth of the
/// interval (at most an hour): gc finishes a little after the run that
/// started it, so a daily cron would otherwise find it due only every other day.
fn not_due_until(last: Timestamp, every: Span, now: Timestamp) -> Option<Timestamp> {
    let next = add(last, every);
    let slack = ((next.as_second() - last.as_second()) / 10).min(3600);
    (next.as_second() - slack > now.as_second()).then_some(next)
}

/// `t + span`, calendar-aware (in UTC), saturating.
fn add(t: Timestamp, span: Span) -> Timestamp {
    t.to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .checked_add(span)
        .map(|z| z.timestamp())
        .unwrap_or(Timestamp::MAX)
}

/// The repository of a run: the config file's `repository` when it names one
/// (it wins over `--repo` and `$REWINDB_REPOSITORY`, which an operator may set
/// globally for `wal push`), else `None` (the usual resolution).
pub fn repository_for(cfg: &Loaded, flag: Option<&std::path::Path>) -> Option<std::path::PathBuf> {
    let c = cfg.repository.clone()?;
    if let Some(f) = flag
        && std::fs::canonicalize(f).ok() != std::fs::canonicalize(&c).ok()
    {
        tracing::info!(
            "using the config file's repository {} (not {})",
            c.display(),
            f.display()
        );
    }
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daily_cron_runs_gc_every_day() {
        let day = Span::new().days(1);
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        // The last gc finished at 02:10; the next run starts at 02:00.
        let last = t("2026-11-30T02:10:00Z");
        assert_eq!(not_due_until(last, day, t("2026-12-01T02:00:00Z")), None);
        // Later the same day it is not due, and says until when.
        assert_eq!(
            not_due_until(last, day, t("2026-11-30T14:00:00Z")),
            Some(t("2026-12-01T02:10:00Z"))
        );
        // An hour's slack at most: weekly gc is not due a day early.
        let week = Span::new().weeks(1);
        assert!(not_due_until(last, week, t("2026-12-06T02:10:00Z")).is_some());
        assert!(not_due_until(last, week, t("2026-12-07T01:15:00Z")).is_none());
    }
}
