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

use crate::commands::pitr::{ArchiveView, ClusterTimelines, PitrWindow, archive_view};
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
    /// `sqlite`, `postgres`, `pg-dump` or `command`.
    pub kind: String,
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
    /// The newest archived WAL's time (a cluster): the end of its PITR window.
    pub newest_wal_time: Option<Timestamp>,
    /// The source's own `max_age` from the config, else `--max-age`.
    pub max_age_secs: Option<i64>,
    /// Older than its max age, or (configured) never backed up. A cluster
    /// is stale too when its newest archived WAL is older than that:
    /// archiving has stopped, so the PITR window no longer grows.
    pub stale: bool,
    /// Why it is stale, in words.
    pub stale_reason: Option<String>,
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
/// listed too (stale when it has a max age). A configured source's own
/// `max_age` wins over `max_age`.
pub fn status(
    repo: &Repository,
    configured: &[Source],
    max_age: Option<Span>,
    now: Timestamp,
) -> Result<StatusReport> {
    let list = repo.snapshots()?;
    let view = archive_view(&repo.wal(), &list.ok)?;
    status_of(
        repo,
        &list.ok,
        list.damaged.len(),
        &view,
        configured,
        max_age,
        now,
    )
}

/// As [`status`], from a listing already made (the server's).
pub fn status_of(
    repo: &Repository,
    list: &[(SnapshotId, Snapshot)],
    damaged: usize,
    view: &ArchiveView,
    configured: &[Source],
    max_age: Option<Span>,
    now: Timestamp,
) -> Result<StatusReport> {
    let windows = &view.windows;
    let mut groups: BTreeMap<String, Vec<(SnapshotId, &Snapshot)>> = BTreeMap::new();
    // Each configured source's group: found by the paths or data directory
    // its snapshots record.
    let mut names: BTreeMap<String, &Source> = BTreeMap::new();
    for (id, s) in list {
        groups.entry(s.source_key()).or_default().push((*id, s));
        if let Some(c) = configured.iter().find(|c| is_configured(c, s)) {
            names.insert(s.source_key(), c);
        }
    }
    let mut sources: Vec<SourceStatus> = groups
        .into_iter()
        .map(|(source, snaps)| {
            let (newest_id, newest) = *snaps
                .iter()
                .max_by_key(|(_, s)| s.time)
                .expect("a group has a snapshot");
            let sysid = newest.postgres.as_ref().map(|p| p.system_identifier);
            let pitr_windows: Vec<PitrWindow> = windows
                .iter()
                .filter(|w| Some(w.system_identifier) == sysid)
                .cloned()
                .collect();
            let pitr_window = pitr_windows.iter().max_by_key(|w| w.to).cloned();
            let c = names.get(&source).copied();
            let limit = c.and_then(|c| c.alerting().max_age).or(max_age);
            let newest_wal_time = pitr_window.as_ref().map(|w| w.to);
            let stale_reason = staleness(limit, now, newest.time, sysid.map(|_| newest_wal_time));
            SourceStatus {
                name: c.map(|c| c.name().to_string()),
                source,
                kind: kind_of(newest.source),
                snapshots: snaps.len(),
                newest: Some(newest_id),
                newest_time: Some(newest.time),
                age_secs: Some((now.as_second() - newest.time.as_second()).max(0)),
                pitr_window,
                pitr_windows,
                newest_wal_time,
                max_age_secs: limit.map(|l| span_secs(l, now)),
                stale: stale_reason.is_some(),
                stale_reason,
            }
        })
        .collect();
    for c in configured {
        if !names.values().any(|n| n.name() == c.name()) {
            let limit = c.alerting().max_age.or(max_age);
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
                kind: c.kind().to_string(),
                snapshots: 0,
                newest: None,
                newest_time: None,
                age_secs: None,
                pitr_window: None,
                pitr_windows: Vec::new(),
                newest_wal_time: None,
                max_age_secs: limit.map(|l| span_secs(l, now)),
                stale: limit.is_some(),
                stale_reason: limit.map(|_| "never backed up".to_string()),
            });
        }
    }
    Ok(StatusReport {
        repository: repo.location().into(),
        repository_bytes: repo.stored_bytes("")? + repo.index_len().unwrap_or(0),
        encrypted: repo.crypto().is_encrypted(),
        snapshots: list.len(),
        damaged_snapshots: damaged,
        sources,
        timelines: view.clusters.clone(),
        notes: view.notes.clone(),
    })
}

/// Why a source is stale against `limit`, if it is: its newest snapshot
/// is older, or (a cluster: `wal` is `Some`) its newest archived WAL is.
fn staleness(
    limit: Option<Span>,
    now: Timestamp,
    newest: Timestamp,
    wal: Option<Option<Timestamp>>,
) -> Option<String> {
    let limit = limit?;
    let oldest_fresh = now
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .checked_sub(limit)
        .map(|z| z.timestamp())
        .unwrap_or(Timestamp::MIN);
    let age = |t: Timestamp| human_age((now.as_second() - t.as_second()).max(0));
    if newest < oldest_fresh {
        return Some(format!(
            "the newest snapshot is {} old (max age {limit:#})",
            age(newest)
        ));
    }
    match wal {
        Some(Some(t)) if t < oldest_fresh => Some(format!(
            "the newest archived WAL is {} old (max age {limit:#}): archiving has stopped, so \
             the point-in-time window no longer grows",
            age(t)
        )),
        Some(None) => Some("no WAL is archived for it: archiving does not work".into()),
        _ => None,
    }
}

/// The seconds `span` covers, counted back from `now`.
fn span_secs(span: Span, now: Timestamp) -> i64 {
    now.to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .checked_sub(span)
        .map(|then| now.as_second() - then.timestamp().as_second())
        .unwrap_or(i64::MAX)
}

/// A source kind as JSON names it.
fn kind_of(kind: crate::repo::snapshot::SourceKind) -> String {
    match serde_json::to_value(kind) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{kind:?}"),
    }
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
    fn a_cluster_whose_archiving_stopped_is_stale_though_its_backup_is_fresh() {
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        let now = t("2026-12-01T12:00:00Z");
        let day = Some(Span::new().hours(25));
        let fresh_backup = t("2026-12-01T02:00:00Z");
        // SQLite: only the snapshot's age counts.
        assert_eq!(staleness(day, now, fresh_backup, None), None);
        assert!(
            staleness(day, now, t("2026-11-29T02:00:00Z"), None)
                .unwrap()
                .contains("2d 10h old")
        );
        // A cluster with WAL archived an hour ago: fresh.
        assert_eq!(
            staleness(
                day,
                now,
                fresh_backup,
                Some(Some(t("2026-12-01T11:00:00Z")))
            ),
            None
        );
        // Its last WAL two days old: stale, though the base backup is not.
        let why = staleness(
            day,
            now,
            fresh_backup,
            Some(Some(t("2026-11-29T11:00:00Z"))),
        )
        .unwrap();
        assert!(
            why.contains("archived WAL is 2d 1h old") && why.contains("archiving has stopped"),
            "{why}"
        );
        assert!(
            staleness(day, now, fresh_backup, Some(None))
                .unwrap()
                .contains("no WAL")
        );
        // No max age: never stale.
        assert_eq!(
            staleness(None, now, t("2020-01-01T00:00:00Z"), Some(None)),
            None
        );
    }

    #[test]
    fn ages() {
        assert_eq!(human_age(42), "42s");
        assert_eq!(human_age(600), "10m");
        assert_eq!(human_age(7500), "2h 5m");
        assert_eq!(human_age(3 * 86_400 + 4 * 3600 + 59), "3d 4h");
    }
}
