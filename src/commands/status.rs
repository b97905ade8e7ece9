//! `status`: per source, the newest snapshot and its age, the PITR window of a
//! cluster, and the repository's size; with a maximum age, which sources are
//! stale (for a monitor, or cron's mail).
//!
//! Takes no lock: it reads only atomically written files (snapshots, WAL
//! archive headers) and file sizes, so it answers while a backup runs.

use std::collections::BTreeMap;
use std::path::Path;

use jiff::{Span, Timestamp};
use serde::Serialize;

use crate::commands::pitr::{ClusterTimelines, PitrWindow, archive_view};
use crate::config::Source;
use crate::error::Result;
use crate::id::SnapshotId;
use crate::repo::Repository;
use crate::repo::snapshot::{Snapshot, SourceKind};

#[derive(Debug, Serialize)]
pub struct SourceStatus {
    /// The source's name in the config file (`status --config`).
    pub name: Option<String>,
    /// The source as `forget` groups snapshots (`Snapshot::source_key`);
    /// for a configured source never backed up, what the config names.
    pub source: String,
    pub snapshots: usize,
    /// `None`: a configured source with no snapshot yet.
    pub newest: Option<SnapshotId>,
    pub newest_time: Option<Timestamp>,
    pub age_secs: Option<i64>,
    /// A cluster's PITR window that reaches furthest.
    pub pitr_window: Option<PitrWindow>,
    /// A cluster's PITR windows, one per timeline (several when the archive
    /// holds more than one history).
    pub pitr_windows: Vec<PitrWindow>,
    /// Older than `--max-age`, or (configured) never backed up.
    pub stale: bool,
}

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub repository: std::path::PathBuf,
    /// Bytes of every file in the repository directory.
    pub repository_bytes: u64,
    /// Whether the repository is encrypted (`docs/format.md`, "Encryption").
    pub encrypted: bool,
    pub snapshots: usize,
    pub damaged_snapshots: usize,
    pub sources: Vec<SourceStatus>,
    /// Each cluster's timelines in the WAL archive, with their fork points.
    pub timelines: Vec<ClusterTimelines>,
    pub notes: Vec<String>,
}

impl StatusReport {
    pub fn stale(&self) -> impl Iterator<Item = &SourceStatus> {
        self.sources.iter().filter(|s| s.stale)
    }
}

/// The status of every source in the repository; with `configured` (the
/// sources of a `run` config), those are named, and one with no snapshot is
/// listed too (stale when there is a `max_age`).
pub fn status(
    repo: &Repository,
    configured: &[Source],
    max_age: Option<Span>,
    now: Timestamp,
) -> Result<StatusReport> {
    let list = repo.snapshots()?;
    let view = archive_view(&repo.wal(), &list.ok)?;
    let windows = &view.windows;
    let oldest_fresh = max_age.map(|span| {
        now.to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .checked_sub(span)
            .map(|z| z.timestamp())
            .unwrap_or(Timestamp::MIN)
    });
    let mut groups: BTreeMap<String, Vec<(SnapshotId, Timestamp, Option<u64>)>> = BTreeMap::new();
    // Each configured source's group: found by the paths or data directory
    // its snapshots record.
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for (id, s) in &list.ok {
        groups.entry(s.source_key()).or_default().push((
            *id,
            s.time,
            s.postgres.as_ref().map(|p| p.system_identifier),
        ));
        if let Some(c) = configured.iter().find(|c| is_configured(c, s)) {
            names.insert(s.source_key(), c.name().to_string());
        }
    }
    let mut sources: Vec<SourceStatus> = groups
        .into_iter()
        .map(|(source, snaps)| {
            let &(newest, newest_time, sysid) = snaps
                .iter()
                .max_by_key(|(_, t, _)| *t)
                .expect("a group has a snapshot");
            let pitr_windows: Vec<PitrWindow> = windows
                .iter()
                .filter(|w| Some(w.system_identifier) == sysid)
                .cloned()
                .collect();
            let pitr_window = pitr_windows.iter().max_by_key(|w| w.to).cloned();
            SourceStatus {
                name: names.get(&source).cloned(),
                source,
                snapshots: snaps.len(),
                newest: Some(newest),
                newest_time: Some(newest_time),
                age_secs: Some((now.as_second() - newest_time.as_second()).max(0)),
                pitr_window,
                pitr_windows,
                stale: oldest_fresh.is_some_and(|t| newest_time < t),
            }
        })
        .collect();
    for c in configured {
        if !names.values().any(|n| n == c.name()) {
            sources.push(SourceStatus {
                name: Some(c.name().to_string()),
                source: match c {
                    Source::Sqlite { paths, .. } => {
                        let p: Vec<String> =
                            paths.iter().map(|p| p.display().to_string()).collect();
                        format!("sqlite {}", p.join(","))
                    }
                    Source::Postgres { pgdata, .. } => format!("postgres {}", pgdata.display()),
                },
                snapshots: 0,
                newest: None,
                newest_time: None,
                age_secs: None,
                pitr_window: None,
                pitr_windows: Vec::new(),
                stale: max_age.is_some(),
            });
        }
    }
    Ok(StatusReport {
        repository: repo.location().into(),
        repository_bytes: repo.stored_bytes("")? + repo.index_len().unwrap_or(0),
        encrypted: repo.crypto().is_encrypted(),
        snapshots: list.ok.len(),
        damaged_snapshots: list.damaged.len(),
        sources,
        timelines: view.clusters,
        notes: view.notes,
    })
}

/// Whether snapshot `s` is of the configured source `c`.
fn is_configured(c: &Source, s: &Snapshot) -> bool {
    if s.name.as_deref() == Some(c.name()) {
        return true;
    }
    match (c, &s.postgres) {
        (Source::Postgres { pgdata, .. }, Some(pg)) => pg.pgdata == *pgdata,
        (Source::Sqlite { paths, .. }, None) if s.source == SourceKind::Sqlite => {
            let mut want: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
            let mut have: Vec<&Path> = s.files.iter().map(|f| f.source_path.as_path()).collect();
            want.sort();
            have.sort();
            want == have
        }
        _ => false,
    }
}

/// "3d 4h", "2h 5m", "42s": an age for humans.
pub fn human_age(secs: i64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(human_age(42), "42s");
        assert_eq!(human_age(600), "10m");
        assert_eq!(human_age(7500), "2h 5m");
        assert_eq!(human_age(3 * 86_400 + 4 * 3600 + 59), "3d 4h");
    }
}
