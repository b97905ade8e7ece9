//! PostgreSQL, physical: the backup session, LSNs, and which files of a data
//! directory a base backup takes.
//!
//! A base backup runs `pg_backup_start` and `pg_backup_stop` in one session
//! (the non-exclusive low-level API): PostgreSQL aborts the backup if that
//! session ends, so [`PgSession`] keeps its connection open between the
//! calls while the caller reads the files.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};

/// A WAL position, written `X/Y` in hex as PostgreSQL does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

/// The connection string used when `--conn` is not given: libpq's
/// environment variables where set, else the local server's default socket
/// as the `postgres` user.
pub fn default_conninfo() -> String {
    let var = |name: &str, default: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_string())
    };
    format!(
        "host={} port={} user={} dbname={}",
        var("PGHOST", "/var/run/postgresql"),
        var("PGPORT", "5432"),
        var("PGUSER", "postgres"),
        var("PGDATABASE", "postgres")
    )
}

/// A `server_version_num` as people write versions: 150018 → "15.18"
/// (from PostgreSQL 10 on, major * 10000 + minor).
pub fn version_text(num: u32) -> String {
    format!("{}.{}", num / 10_000, num % 10_000)
}

impl FromStr for Lsn {
    type Err = String;
    fn from_str(s: &str) -> Result<Lsn, String> {
        let bad = || format!("{s:?} is not an LSN (expected hex X/Y, like 0/16B3748)");
        let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
        let part = |p: &str| {
            (!p.is_empty() && p.len() <= 8)
                .then(|| u32::from_str_radix(p, 16).ok())
                .flatten()
                .ok_or_else(bad)
        };
        Ok(Lsn((u64::from(part(hi)?) << 32) | u64::from(part(lo)?)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl serde::Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Lsn, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What the server says about itself before a backup.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    pub system_identifier: u64,
    pub server_version_num: u32,
    pub data_directory: PathBuf,
    pub wal_segment_size: u64,
    pub archive_mode: String,
    pub archive_command: String,
    pub in_recovery: bool,
}

/// What `pg_backup_stop` returned.
#[derive(Clone, Debug)]
pub struct BackupStop {
    pub lsn: Lsn,
    pub label_file: String,
    pub tablespace_map: Option<String>,
}

/// One connection to the server, driven by a single-threaded runtime.
pub struct PgSession {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    conninfo: String,
}

fn pg_err(conninfo: &str, what: &str) -> impl FnOnce(tokio_postgres::Error) -> Error {
    let (conninfo, what) = (conninfo.to_string(), what.to_string());
    move |e| {
        // tokio-postgres puts the server's message in the source chain.
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg = format!("{msg}: {s}");
            source = s.source();
        }
        // The server, not the command line: running again can help once it
        // answers (exit 1, not the usage code).
        Error::Failed(format!("PostgreSQL ({conninfo}): {what}: {msg}"))
    }
}

impl PgSession {
    /// Connects with a libpq-style connection string (`host=/run/postgresql
    /// port=5432 user=postgres dbname=postgres`).
    pub fn connect(conninfo: &str) -> Result<PgSession> {
        let config = tokio_postgres::Config::from_str(conninfo).map_err(|e| {
            Error::Usage(format!(
                "--conn {conninfo:?} is not a connection string: {e}"
            ))
        })?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(crate::error::io_err(
                "starting the PostgreSQL client runtime",
            ))?;
        let client = rt.block_on(async {
            let (client, connection) = config
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(pg_err(
                    conninfo,
                    "cannot connect (check --conn: host or socket directory, port, user, dbname; and that the server runs; running again helps once it accepts connections)",
                ))?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!("PostgreSQL connection ended: {e}");
                }
            });
            Ok::<_, Error>(client)
        })?;
        Ok(PgSession {
            rt,
            client,
            conninfo: conninfo.to_string(),
        })
    }

    /// Runs a query returning one row of text columns.
    pub fn row(&self, sql: &str, params: &[&str]) -> Result<Vec<Option<String>>> {
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let row = self
            .rt
            .block_on(self.client.query_one(sql, &params))
            .map_err(pg_err(&self.conninfo, sql))?;
        Ok((0..row.len())
            .map(|i| row.get::<_, Option<String>>(i))
            .collect())
    }

    fn text(&self, sql: &str) -> Result<String> {
        Ok(self
            .row(sql, &[])?
            .into_iter()
            .next()
            .flatten()
            .unwrap_or_default())
    }

    pub fn server_info(&self) -> Result<ServerInfo> {
        let bad = |what: &str, v: &str| {
            Error::Failed(format!(
                "PostgreSQL ({}): unexpected {what} {v:?}",
                self.conninfo
            ))
        };
        let sysid = self.text("SELECT system_identifier::text FROM pg_control_system()")?;
        let version = self.text("SELECT current_setting('server_version_num')")?;
        let seg = self.text("SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'")?;
        Ok(ServerInfo {
            system_identifier: sysid
                .parse()
                .map_err(|_| bad("system identifier", &sysid))?,
            server_version_num: version.parse().map_err(|_| bad("version", &version))?,
            data_directory: PathBuf::from(self.text("SHOW data_directory")?),
            wal_segment_size: seg.parse().map_err(|_| bad("wal_segment_size", &seg))?,
            archive_mode: self.text("SHOW archive_mode")?,
            archive_command: self.text("SHOW archive_command")?,
            in_recovery: self.text("SELECT pg_is_in_recovery()::text")? == "true",
        })
    }

    /// `pg_backup_start(label, fast => true)`: an immediate checkpoint.
    pub fn backup_start(&self, label: &str) -> Result<Lsn> {
        let lsn = self
            .row("SELECT pg_backup_start($1, true)::text", &[label])?
            .into_iter()
            .next()
            .flatten()
            .unwrap_or_default();
        lsn.parse().map_err(Error::Usage)
    }

    /// `pg_backup_stop(wait_for_archive => false)`: rewindb waits for the WAL
    /// itself, with a timeout and a clear error, rather than inside the server.
    pub fn backup_stop(&self) -> Result<BackupStop> {
        let row = self.row(
            "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(false)",
            &[],
        )?;
        let get = |i: usize| row.get(i).cloned().flatten();
        Ok(BackupStop {
            lsn: get(0).unwrap_or_default().parse().map_err(Error::Usage)?,
            label_file: get(1).unwrap_or_default(),
            tablespace_map: get(2).filter(|m| !m.is_empty()),
        })
    }

    /// The archiver's counters: (archived, failed, last failed WAL, when, last archived WAL).
    pub fn archiver_status(&self) -> Result<ArchiverStatus> {
        let row = self.row(
            "SELECT archived_count::text, failed_count::text, last_failed_wal, \
             last_failed_time::text, last_archived_wal FROM pg_stat_archiver",
            &[],
        )?;
        let get = |i: usize| row.get(i).cloned().flatten();
        Ok(ArchiverStatus {
            archived_count: get(0).and_then(|v| v.parse().ok()).unwrap_or(0),
            failed_count: get(1).and_then(|v| v.parse().ok()).unwrap_or(0),
            last_failed_wal: get(2),
            last_failed_time: get(3),
            last_archived_wal: get(4),
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiverStatus {
    pub archived_count: u64,
    pub failed_count: u64,
    pub last_failed_wal: Option<String>,
    pub last_failed_time: Option<String>,
    pub last_archived_wal: Option<String>,
}

/// The timeline a backup started on, from its `backup_label`.
pub fn label_timeline(label: &str) -> Option<u32> {
    label
        .lines()
        .find_map(|l| l.strip_prefix("START TIMELINE:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Directories whose contents a base backup leaves out (the directories
/// themselves are kept): PostgreSQL's documentation, "Backing Up the Data
/// Directory", and the server's own `basebackup.c`.
const CONTENTS_EXCLUDED: &[&str] = &[
    "pg_wal",
    "pg_dynshmem",
    "pg_notify",
    "pg_replslot",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
];

/// Files left out wherever they are.
const FILES_EXCLUDED: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "pg_internal.init",
    // Written fresh from what pg_backup_stop returns; a stale one here is
    // left over from a crashed exclusive backup.
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "tablespace_map.old",
    // A restored cluster must not find these from the source.
    "recovery.signal",
    "standby.signal",
];

/// What a base backup takes from a data directory.
#[derive(Clone, Debug, Default)]
pub struct DataDirectory {
    /// Relative paths of the directories, parents first, with their modes.
    pub dirs: Vec<(PathBuf, u32)>,
    /// Relative paths of the regular files to read.
    pub files: Vec<PathBuf>,
    /// Relative paths left out (unlogged relations, temp files...), for logs.
    pub skipped: usize,
}

/// Lists the data directory at `root`. Tablespaces (entries in
/// `pg_tblspc`) are refused with a clear error: rewindb does not back them
/// up yet.
pub fn list_data_directory(root: &Path) -> Result<DataDirectory> {
    let mut out = DataDirectory::default();
    walk(root, Path::new(""), &mut out)?;
    Ok(out)
}

fn walk(root: &Path, rel: &Path, out: &mut DataDirectory) -> Result<()> {
    let dir = root.join(rel);
    let io = |what: &str| crate::error::io_err(format!("{what} {}", dir.display()));
    let meta = std::fs::metadata(&dir).map_err(io("reading"))?;
    out.dirs.push((
        rel.to_path_buf(),
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
    ));
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(io("listing"))?
        .collect::<std::io::Result<_>>()
        .map_err(io("listing"))?;
    entries.sort_by_key(|e| e.file_name());
    let names: Vec<String> = entries
        .iter()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    // Unlogged relations: only their init fork is kept (`<node>_init`);
    // recovery recreates the other forks from it.
    let unlogged: Vec<&str> = names
        .iter()
        .filter_map(|n| n.strip_suffix("_init"))
        .collect();
    let in_db_dir = rel.starts_with("base") || rel.starts_with("global");
    for (entry, name) in entries.iter().zip(&names) {
        let path = rel.join(name);
        let file_type = entry.file_type().map_err(io("reading"))?;
        if rel == Path::new("pg_tblspc") {
            return Err(Error::Usage(format!(
                "{}: the cluster has tablespaces ({}), which rewindb cannot back up yet",
                root.display(),
                root.join(&path).display()
            )));
        }
        if name.starts_with("pgsql_tmp") || FILES_EXCLUDED.contains(&name.as_str()) {
            out.skipped += 1;
            continue;
        }
        if in_db_dir && !name.ends_with("_init") {
            let node = name.split(['_', '.']).next().unwrap_or(name);
            if unlogged.contains(&node) {
                out.skipped += 1;
                continue;
            }
        }
        // pg_wal may be a symlink to another disk: taken as a directory.
        let is_dir = file_type.is_dir()
            || (file_type.is_symlink() && root.join(&path).is_dir() && name == "pg_wal");
        if is_dir {
            if rel == Path::new("") && CONTENTS_EXCLUDED.contains(&name.as_str()) {
                let meta = std::fs::metadata(root.join(&path)).map_err(io("reading"))?;
                out.dirs.push((
                    path.clone(),
                    std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
                ));
                if name == "pg_wal" {
                    // Recovery writes .ready/.done files there.
                    out.dirs.push((path.join("archive_status"), 0o700));
                }
                continue;
            }
            walk(root, &path, out)?;
        } else if file_type.is_file() {
            out.files.push(path);
        } else {
            tracing::warn!(
                "{}: not a regular file, left out",
                root.join(&path).display()
            );
            out.skipped += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text() {
        let l: Lsn = "1/16B3748".parse().unwrap();
        assert_eq!(l.0, (1 << 32) | 0x16B3748);
        assert_eq!(l.to_string(), "1/16B3748");
        for bad in ["", "16B3748", "1/", "/1", "x/1", "1/123456789"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn timeline_from_label() {
        let label = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
                     CHECKPOINT LOCATION: 0/2000060\nSTART TIMELINE: 3\nLABEL: x\n";
        assert_eq!(label_timeline(label), Some(3));
        assert_eq!(label_timeline("nothing"), None);
    }

    #[test]
    fn listing_leaves_out_what_postgres_says() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        for dir in [
            "base/1",
            "global",
            "pg_wal/archive_status",
            "pg_stat_tmp",
            "pg_tblspc",
        ] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        for f in [
            "PG_VERSION",
            "postmaster.pid",
            "base/1/1234",
            "base/1/1234_fsm",
            "base/1/5000",
            "base/1/5000.1",
            "base/1/5000_init",
            "base/1/pg_internal.init",
            "base/1/pgsql_tmp123",
            "global/pg_control",
            "pg_wal/000000010000000000000001",
            "pg_stat_tmp/x",
        ] {
            std::fs::write(root.join(f), b"x").unwrap();
        }
        let listed = list_data_directory(root).unwrap();
        let files: Vec<_> = listed.files.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            files,
            [
                "PG_VERSION",
                "base/1/1234",
                "base/1/1234_fsm",
                "base/1/5000_init",
                "global/pg_control"
            ]
        );
        let dirs: Vec<_> = listed
            .dirs
            .iter()
            .map(|(p, _)| p.to_str().unwrap())
            .collect();
        assert!(dirs.contains(&"pg_wal") && dirs.contains(&"pg_wal/archive_status"));
        assert!(dirs.contains(&"pg_stat_tmp") && dirs.contains(&"pg_tblspc"));
        std::fs::create_dir(root.join("pg_tblspc/16400")).unwrap();
        assert!(list_data_directory(root).is_err());
    }
}
