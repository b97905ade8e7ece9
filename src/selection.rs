//! Choosing what to restore: which source, which snapshot of it, which file.
//!
//! A repository can hold many sources: sets of SQLite databases, PostgreSQL
//! clusters, pg_dump and command streams. A selection that more than one
//! source could satisfy is refused with the list of sources and the
//! `--source` value that names each; it never picks one silently. A source
//! is named as its user knows it:
//! - a SQLite database by its path or file name (which selects that one
//!   database of a snapshot that holds several);
//! - a PostgreSQL cluster by its data directory or its system identifier;
//! - a stream by its `--name`;
//! - any source by its name in the `run` config (recorded in the snapshot).
//!
//! [`select`] is pure apart from resolving relative paths against the
//! current directory.

use std::collections::BTreeMap;
use std::path::Path;

use jiff::Timestamp;

use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::repo::SnapshotList;
use crate::repo::snapshot::{Snapshot, SourceKind};
use crate::source::postgres::Lsn;
use crate::time::show;

/// What the user asked to restore.
#[derive(Clone, Debug, Default)]
pub struct Selector {
    /// A snapshot id (or unique prefix), or `latest`.
    pub snapshot: Option<String>,
    /// The newest snapshot at or before this time (a base backup counts from
    /// when it finished).
    pub at: Option<Timestamp>,
    /// The newest base backup that ended at or before this LSN.
    pub lsn: Option<Lsn>,
    pub source: Option<String>,
    /// One file of the snapshot, by name (`--file`).
    pub file: Option<String>,
    /// Only PostgreSQL base backups qualify (`--immediate`, `--lsn`,
    /// `--target-name`).
    pub base_backups_only: bool,
}

/// The chosen snapshot, and the one file of it to restore when the source
/// named a single database (or `--file` did).
#[derive(Clone, Debug)]
pub struct Selected<'a> {
    pub id: SnapshotId,
    pub snapshot: &'a Snapshot,
    pub file: Option<String>,
}

/// How a `--source` value matched a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Match {
    /// The whole snapshot's source.
    Whole,
    /// The source's name in the `run` config.
    Name(String),
    /// One database of a SQLite snapshot, by its name in the snapshot.
    File(String),
}

fn same_path(p: &Path, src: &str) -> bool {
    p == Path::new(src) || std::path::absolute(src).is_ok_and(|a| a == p)
}

/// How `src` names (part of) snapshot `s`, if it does.
fn source_match(s: &Snapshot, src: &str) -> Option<Match> {
    if s.name.as_deref() == Some(src) {
        return Some(Match::Name(src.to_string()));
    }
    if let Some(pg) = &s.postgres {
        return (same_path(&pg.pgdata, src) || pg.system_identifier.to_string() == src)
            .then_some(Match::Whole);
    }
    if let Some(stream) = &s.stream {
        return (stream.name == src).then_some(Match::Whole);
    }
    s.files
        .iter()
        .find(|f| f.name == src || same_path(&f.source_path, src))
        .map(|f| Match::File(f.name.clone()))
}

/// Whether snapshot `s` is of the source a user named (`--source`).
pub fn is_of_source(s: &Snapshot, src: &str) -> bool {
    source_match(s, src).is_some()
}

/// The source a snapshot (or one database of it) belongs to, for telling
/// sources apart: one database path is the same source in every snapshot
/// that holds it, and a set of databases the same whatever host (a
/// container's hostname changes with every run) and order.
fn identity(s: &Snapshot, m: &Match) -> String {
    match m {
        Match::File(name) => {
            let path = s
                .files
                .iter()
                .find(|f| &f.name == name)
                .map(|f| f.source_path.display().to_string())
                .unwrap_or_default();
            format!("sqlite database {path}")
        }
        Match::Name(name) => format!("config name {name}"),
        Match::Whole => whole_identity(s),
    }
}

/// [`identity`] of a whole snapshot.
fn whole_identity(s: &Snapshot) -> String {
    if s.source == SourceKind::Sqlite {
        let mut paths = s.sources();
        paths.sort();
        return format!("sqlite {}", paths.join(","));
    }
    s.source_key()
}

/// What kind of snapshot this is, in words.
pub fn kind_name(s: &Snapshot) -> &'static str {
    match s.source {
        SourceKind::Sqlite => "of SQLite databases",
        SourceKind::Postgres => "a PostgreSQL base backup",
        SourceKind::PgDump => "a pg_dump stream",
        SourceKind::Command => "a command's output",
    }
}

/// Chooses the snapshot (and file) `sel` names.
pub fn select<'a>(list: &'a SnapshotList, sel: &Selector) -> Result<Selected<'a>> {
    if sel.snapshot.is_some() && sel.at.is_some() {
        return Err(Error::Usage(
            "give either a snapshot or --at TIME, not both".into(),
        ));
    }
    let named = sel.snapshot.as_deref().filter(|s| *s != "latest");
    if let Some(spec) = named {
        let (id, snap) = list.find(spec)?;
        let m = match &sel.source {
            Some(src) => source_match(snap, src).ok_or_else(|| {
                Error::Usage(format!(
                    "snapshot {} is not of source {src:?}: it is {} ({})",
                    id.short(),
                    kind_name(snap),
                    snap.sources().join(", ")
                ))
            })?,
            None => Match::Whole,
        };
        if sel.base_backups_only && snap.postgres.is_none() {
            return Err(Error::Usage(format!(
                "--immediate, --lsn and --target-name are for PostgreSQL base backups; \
                 snapshot {} is {}",
                id.short(),
                kind_name(snap)
            )));
        }
        return finish(*id, snap, m, sel);
    }
    // Every snapshot that could be meant, with how it matched.
    let mut matching: Vec<(&(SnapshotId, Snapshot), Match)> = Vec::new();
    for entry in &list.ok {
        let s = &entry.1;
        if sel.base_backups_only && s.postgres.is_none() {
            continue;
        }
        let m = match &sel.source {
            Some(src) => match source_match(s, src) {
                Some(m) => m,
                None => continue,
            },
            None => Match::Whole,
        };
        matching.push((entry, m));
    }
    let mut sources: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, (entry, m)) in matching.iter().enumerate() {
        sources.entry(identity(&entry.1, m)).or_default().push(i);
    }
    if sources.is_empty() {
        return Err(Error::Usage(match (&sel.source, list.ok.is_empty()) {
            (_, true) => "the repository has no snapshots yet".to_string(),
            (Some(src), false) => format!(
                "no {} of source {src:?} in the repository; it holds:\n{}",
                if sel.base_backups_only {
                    "base backup"
                } else {
                    "snapshot"
                },
                source_list(list, &list.ok.iter().collect::<Vec<_>>())
            ),
            (None, false) => "the repository has no PostgreSQL base backup: --immediate, \
                              --lsn and --target-name are for base backups"
                .to_string(),
        }));
    }
    if sources.len() > 1 {
        let entries: Vec<&(SnapshotId, Snapshot)> = matching.iter().map(|(e, _)| *e).collect();
        return Err(Error::Usage(format!(
            "{} sources {}; rewindb does not guess which one you mean (nothing was \
             restored). Name one with --source:\n{}",
            sources.len(),
            match &sel.source {
                Some(src) => format!("match --source {src:?}"),
                None => "are in the repository".to_string(),
            },
            source_list(list, &entries)
        )));
    }
    let picks: Vec<&(&(SnapshotId, Snapshot), Match)> = matching.iter().collect();
    let who = || match &sel.source {
        Some(src) => format!(" of {src:?}"),
        None => String::new(),
    };
    let chosen = if let Some(at) = sel.at {
        // A base backup is usable from when it finished; the other kinds
        // hold their data as of when the backup started.
        let usable_from = |s: &Snapshot| s.postgres.as_ref().map_or(s.time, |p| p.stop_time);
        picks
            .iter()
            .rev()
            .find(|(e, _)| usable_from(&e.1) <= at)
            .ok_or_else(|| {
                let oldest = picks
                    .iter()
                    .map(|(e, _)| usable_from(&e.1))
                    .min()
                    .expect("a source has snapshots");
                Error::Usage(format!(
                    "no snapshot{} at or before {}; the oldest is from {} (times are UTC, to \
                     the second as `rewindb snapshots` shows them)",
                    who(),
                    show(at),
                    show(oldest)
                ))
            })?
    } else if let Some(lsn) = sel.lsn {
        picks
            .iter()
            .rev()
            .find(|(e, _)| e.1.postgres.as_ref().is_some_and(|p| p.stop_lsn <= lsn))
            .ok_or_else(|| {
                Error::Usage(format!(
                    "no base backup{} ended at or before LSN {lsn}; list them with `rewindb \
                     snapshots`",
                    who()
                ))
            })?
    } else if sel.snapshot.as_deref() == Some("latest") {
        picks.last().expect("a source has snapshots")
    } else {
        return Err(Error::Usage(
            "name a snapshot (an id or `latest`) or give --at TIME".into(),
        ));
    };
    let ((id, snap), m) = (chosen.0, chosen.1.clone());
    finish(*id, snap, m, sel)
}

/// The file to restore: the database the source named, or `--file`.
fn finish<'a>(
    id: SnapshotId,
    snap: &'a Snapshot,
    m: Match,
    sel: &Selector,
) -> Result<Selected<'a>> {
    let file = match (m, &sel.file) {
        (Match::File(a), Some(b)) if &a != b => {
            return Err(Error::Usage(format!(
                "--source names database {a:?} and --file names {b:?}: give one"
            )));
        }
        (Match::File(a), _) => Some(a),
        (Match::Whole | Match::Name(_), f) => f.clone(),
    };
    Ok(Selected {
        id,
        snapshot: snap,
        file,
    })
}

/// One line per source among `entries`: the `--source` value that names
/// it, what it is, how many snapshots, the newest.
fn source_list(list: &SnapshotList, entries: &[&(SnapshotId, Snapshot)]) -> String {
    // A set of databases is named by any of its paths.
    let mut groups: BTreeMap<String, Vec<&Snapshot>> = BTreeMap::new();
    for (_, s) in entries {
        groups.entry(whole_identity(s)).or_default().push(s);
    }
    let pgdata_count = |p: &Path| {
        list.ok
            .iter()
            .filter_map(|(_, s)| s.postgres.as_ref())
            .map(|pg| (pg.pgdata.clone(), pg.system_identifier))
            .filter(|(d, _)| d == p)
            .map(|(_, id)| id)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    let mut lines = Vec::new();
    for snaps in groups.values() {
        let newest = snaps.last().expect("grouped");
        let (value, what) = if let Some(pg) = &newest.postgres {
            // Two clusters with one data directory path (two hosts): the
            // system identifier tells them apart.
            let value = match pgdata_count(&pg.pgdata) {
                1 => pg.pgdata.display().to_string(),
                _ => pg.system_identifier.to_string(),
            };
            (
                value,
                format!(
                    "PostgreSQL cluster {} ({})",
                    pg.system_identifier,
                    pg.pgdata.display()
                ),
            )
        } else if let Some(stream) = &newest.stream {
            let kind = match newest.source {
                SourceKind::PgDump => "pg_dump stream",
                _ => "command output",
            };
            (stream.name.clone(), format!("{kind} {}", stream.name))
        } else {
            let paths = newest.sources();
            let value = match &paths[..] {
                [one] => one.clone(),
                [first, rest @ ..] => format!("{first} (or {})", rest.join(", ")),
                [] => String::new(),
            };
            (value, format!("SQLite {}", paths.join(", ")))
        };
        let count = snaps.len();
        lines.push(format!(
            "  --source {value:<28} {what}{}: {count} snapshot{}, newest {}",
            newest
                .name
                .as_deref()
                .map(|n| format!(" (config name {n:?})"))
                .unwrap_or_default(),
            if count == 1 { "" } else { "s" },
            show(newest.time)
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::snapshot::{
        BackupStats, FileEntry, PgBackupInfo, SNAPSHOT_VERSION, StreamInfo,
    };

    fn file(path: &str) -> FileEntry {
        FileEntry {
            name: Path::new(path)
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .into(),
            source_path: path.into(),
            size: 4096,
            blake3: "00".repeat(32),
            page_size: 4096,
            journal_mode: "wal".into(),
            mode: 0o644,
            chunk_count: 1,
            manifest: vec![],
            owner: None,
        }
    }

    fn snap(minute: i64, kind: SourceKind, paths: &[&str]) -> Snapshot {
        Snapshot {
            version: SNAPSHOT_VERSION,
            time: Timestamp::from_second(1_800_000_000 + minute * 60).unwrap(),
            source: kind,
            label: None,
            name: None,
            hostname: "db1".into(),
            files: paths.iter().map(|p| file(p)).collect(),
            stats: BackupStats::default(),
            postgres: None,
            stream: None,
        }
    }

    fn base_backup(minute: i64, pgdata: &str, sysid: u64) -> Snapshot {
        let mut s = snap(minute, SourceKind::Postgres, &["/pg/PG_VERSION"]);
        s.postgres = Some(PgBackupInfo {
            system_identifier: sysid,
            pgdata: pgdata.into(),
            server_version_num: 150018,
            timeline: 1,
            wal_segment_size: 16 << 20,
            start_lsn: Lsn(0x2000028),
            stop_lsn: Lsn(0x2000100),
            start_time: s.time,
            stop_time: s.time + jiff::SignedDuration::from_secs(2),
            start_wal: String::new(),
            stop_wal: String::new(),
            directories: vec![],
        });
        s
    }

    fn dump(minute: i64, name: &str) -> Snapshot {
        let mut s = snap(minute, SourceKind::PgDump, &["/shop.sql"]);
        s.stream = Some(StreamInfo {
            name: name.into(),
            command: vec!["pg_dump".into()],
        });
        s
    }

    fn list(snaps: Vec<Snapshot>) -> SnapshotList {
        let mut ok: Vec<(SnapshotId, Snapshot)> = snaps
            .into_iter()
            .map(|s| (s.encode(&crate::crypto::Crypto::plain()).0, s))
            .collect();
        ok.sort_by_key(|(_, s)| s.time);
        SnapshotList {
            ok,
            damaged: vec![],
        }
    }

    fn mixed() -> SnapshotList {
        list(vec![
            snap(0, SourceKind::Sqlite, &["/srv/app.db", "/srv/auth.db"]),
            base_backup(1, "/var/lib/pg/main", 7001),
            dump(2, "pg_dump-shop"),
            snap(3, SourceKind::Sqlite, &["/srv/app.db", "/srv/auth.db"]),
            base_backup(4, "/var/lib/pg/main", 7001),
        ])
    }

    fn sel(snapshot: Option<&str>, at: Option<i64>, source: Option<&str>) -> Selector {
        Selector {
            snapshot: snapshot.map(str::to_string),
            at: at.map(|m| Timestamp::from_second(1_800_000_000 + m * 60 + 30).unwrap()),
            source: source.map(str::to_string),
            ..Selector::default()
        }
    }

    #[test]
    fn more_than_one_source_is_refused_with_the_list() {
        let l = mixed();
        for s in [sel(Some("latest"), None, None), sel(None, Some(10), None)] {
            let e = select(&l, &s).unwrap_err().to_string();
            assert!(e.contains("3 sources are in the repository"), "{e}");
            assert!(e.contains("--source /srv/app.db (or /srv/auth.db)"), "{e}");
            assert!(e.contains("--source /var/lib/pg/main"), "{e}");
            assert!(e.contains("--source pg_dump-shop"), "{e}");
        }
    }

    #[test]
    fn each_source_by_the_names_users_have() {
        let l = mixed();
        let pick = |s: Selector| {
            let got = select(&l, &s).unwrap();
            (got.snapshot.time, got.snapshot.source, got.file)
        };
        let t = |m: i64| Timestamp::from_second(1_800_000_000 + m * 60).unwrap();
        assert_eq!(
            pick(sel(None, Some(3), Some("/var/lib/pg/main"))).1,
            SourceKind::Postgres
        );
        assert_eq!(pick(sel(Some("latest"), None, Some("7001"))).0, t(4));
        assert_eq!(
            pick(sel(Some("latest"), None, Some("pg_dump-shop"))).1,
            SourceKind::PgDump
        );
        // One database of two: that file only, from the newest snapshot.
        assert_eq!(
            pick(sel(Some("latest"), None, Some("/srv/app.db"))),
            (t(3), SourceKind::Sqlite, Some("app.db".to_string()))
        );
        assert_eq!(
            pick(sel(None, Some(1), Some("auth.db"))),
            (t(0), SourceKind::Sqlite, Some("auth.db".to_string()))
        );
    }

    #[test]
    fn an_unknown_source_lists_those_that_exist() {
        let e = select(&mixed(), &sel(Some("latest"), None, Some("crm.db")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no snapshot of source \"crm.db\""), "{e}");
        assert!(e.contains("--source pg_dump-shop"), "{e}");
    }

    #[test]
    fn base_backup_flags_consider_only_base_backups() {
        let l = mixed();
        let s = Selector {
            snapshot: Some("latest".into()),
            base_backups_only: true,
            ..Selector::default()
        };
        assert!(select(&l, &s).unwrap().snapshot.postgres.is_some());
        let only_dumps = list(vec![dump(0, "a")]);
        let e = select(&only_dumps, &s).unwrap_err().to_string();
        assert!(e.contains("no PostgreSQL base backup"), "{e}");
    }

    #[test]
    fn a_time_before_the_first_snapshot_names_the_oldest_to_the_second() {
        let l = list(vec![snap(5, SourceKind::Sqlite, &["/srv/app.db"])]);
        let e = select(&l, &sel(None, Some(2), None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("the oldest is from 2027-01-15 08:05:00"), "{e}");
    }

    #[test]
    fn the_same_database_in_two_snapshot_sets_is_one_source() {
        let l = list(vec![
            snap(0, SourceKind::Sqlite, &["/srv/app.db"]),
            snap(1, SourceKind::Sqlite, &["/srv/app.db", "/srv/auth.db"]),
        ]);
        let got = select(&l, &sel(Some("latest"), None, Some("/srv/app.db"))).unwrap();
        assert_eq!(got.file.as_deref(), Some("app.db"));
        assert_eq!(got.snapshot.files.len(), 2);
        // Without --source they are two sets: refused.
        assert!(select(&l, &sel(Some("latest"), None, None)).is_err());
    }

    /// Regression (review): `restore latest --lsn X`, as the README shows
    /// it, was refused as "a snapshot and --lsn".
    #[test]
    fn latest_with_an_lsn_is_the_newest_base_backup_that_ended_before_it() {
        let l = list(vec![
            base_backup(1, "/pg", 7001),
            base_backup(2, "/pg", 7001),
        ]);
        let mut s = Selector {
            snapshot: Some("latest".into()),
            lsn: Some(Lsn(0x2000100)),
            base_backups_only: true,
            ..Selector::default()
        };
        let got = select(&l, &s).unwrap();
        assert_eq!(
            got.snapshot.time,
            Timestamp::from_second(1_800_000_120).unwrap()
        );
        s.lsn = Some(Lsn(0x10));
        assert!(select(&l, &s).is_err());
    }

    /// Regression (review): snapshots from a container, whose hostname
    /// changes with every run, or that list the databases in another order,
    /// are one source.
    #[test]
    fn changing_hostnames_and_path_order_are_one_source() {
        let mut a = snap(0, SourceKind::Sqlite, &["/data/app.db", "/data/auth.db"]);
        a.hostname = "pod-1".into();
        let mut b = snap(1, SourceKind::Sqlite, &["/data/auth.db", "/data/app.db"]);
        b.hostname = "pod-2".into();
        let l = list(vec![a, b]);
        let got = select(&l, &sel(Some("latest"), None, None)).unwrap();
        assert_eq!(got.snapshot.hostname, "pod-2");
        let got = select(&l, &sel(None, Some(0), Some("/data/app.db"))).unwrap();
        assert_eq!(got.snapshot.hostname, "pod-1");
    }

    #[test]
    fn a_config_name_names_its_source() {
        let mut a = snap(0, SourceKind::Sqlite, &["/srv/app.db", "/srv/auth.db"]);
        a.name = Some("app".into());
        let l = list(vec![a, dump(1, "x")]);
        let got = select(&l, &sel(Some("latest"), None, Some("app"))).unwrap();
        assert_eq!(got.file, None);
        assert_eq!(got.snapshot.files.len(), 2);
    }
}
