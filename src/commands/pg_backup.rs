//! `backup postgres`: a base backup of a running PostgreSQL cluster.
//!
//! Between `pg_backup_start` and `pg_backup_stop` (one session, see
//! [`PgSession`]) every file of the data directory that PostgreSQL's
//! documentation does not leave out is read and stored in chunks of whole
//! 8 KiB pages (`pg_chunk` bytes, 64 KiB in new repositories), each changed
//! chunk delta-encoded against the same chunk of the previous base backup.
//! The files may change while they are read: WAL replay from the backup's
//! start repairs that, which is why the snapshot is committed only once the
//! WAL from start to stop is in the repository.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result, io_err};
use crate::id::{ChunkId, SnapshotId};
use crate::pipeline::store::{ChunkShape, Run, StoredFile, store_pages, store_small};
use crate::repo::Repository;
use crate::repo::delta::DeltaEncoder;
use crate::repo::snapshot::{DirEntry, FileEntry, PgBackupInfo, Snapshot, SourceKind};
use crate::repo::wal::WalName;
use crate::repo::writer::BlobWriter;
use crate::source::postgres::{self, Lsn, PgSession};

/// PostgreSQL's block size: relation files change in pages of this size.
pub const PG_PAGE: usize = 8192;
/// Files up to this size are stored on the calling thread.
const SMALL_FILE: u64 = 1 << 20;

#[derive(Clone, Debug)]
pub struct PgBackupOptions {
    pub pgdata: PathBuf,
    pub conninfo: String,
    pub label: Option<String>,
    /// The source's name in the `run` config, recorded in the snapshot.
    pub name: Option<String>,
    /// How long to wait for the WAL the backup needs to be archived.
    pub wal_wait: Duration,
}

/// Checks `pgdata` looks like a data directory; returns its absolute path.
pub fn validate_pgdata(pgdata: &Path) -> Result<PathBuf> {
    let abs =
        std::path::absolute(pgdata).map_err(io_err(format!("resolving {}", pgdata.display())))?;
    if !abs.is_dir() {
        return Err(Error::Usage(format!(
            "{}: no such directory",
            abs.display()
        )));
    }
    if !abs.join("PG_VERSION").is_file() || !abs.join("global/pg_control").is_file() {
        return Err(Error::Usage(format!(
            "{}: not a PostgreSQL data directory (no PG_VERSION or global/pg_control)",
            abs.display()
        )));
    }
    Ok(abs)
}

/// Takes a base backup of the cluster at `opts.pgdata` into `repo`.
pub fn backup_postgres(
    repo: &Repository,
    opts: &PgBackupOptions,
) -> Result<(SnapshotId, Snapshot)> {
    let started = Instant::now();
    let pgdata = validate_pgdata(&opts.pgdata)?;
    let session = PgSession::connect(&opts.conninfo)?;
    let server = session.server_info()?;
    preflight(&pgdata, &server)?;
    let previous = repo.snapshots()?;
    let parent = previous
        .ok
        .iter()
        .rev()
        .find(|(_, s)| {
            s.postgres
                .as_ref()
                .is_some_and(|p| p.system_identifier == server.system_identifier)
        })
        .map(|(_, s)| s)
        .filter(|_| repo.delta_bases());
    let mut writer = BlobWriter::new(repo)?;
    let chunk_len = repo.config().chunker.pg_chunk as usize;
    let level = crate::repo::delta::level_for(chunk_len, PG_PAGE);
    let mut encoder = DeltaEncoder::new(repo, level)?;
    let time = jiff::Timestamp::now();
    let start_lsn = session.backup_start(&format!("rewindb {time}"))?;
    tracing::info!("backup started at {start_lsn}");
    let listing = postgres::list_data_directory(&pgdata)?;
    let parent_files: HashMap<&str, &FileEntry> = parent
        .map(|s| s.files.iter().map(|f| (f.name.as_str(), f)).collect())
        .unwrap_or_default();
    let mut files = Vec::with_capacity(listing.files.len() + 2);
    let total = match crate::progress::enabled() {
        true => (listing.files.iter())
            .filter_map(|rel| std::fs::metadata(pgdata.join(rel)).ok())
            .map(|m| m.len())
            .sum(),
        false => 0,
    };
    let bar = crate::progress::start(total, &pgdata.display().to_string());
    for rel in &listing.files {
        let name = rel.to_str().ok_or_else(|| {
            Error::Usage(format!(
                "{}: file name is not UTF-8",
                pgdata.join(rel).display()
            ))
        })?;
        let bases = match parent_files.get(name) {
            Some(f) => writer.reader().manifest(f).unwrap_or_else(|e| {
                tracing::warn!("{name}: previous backup's manifest unreadable ({e})");
                Vec::new()
            }),
            None => Vec::new(),
        };
        if let Some(entry) = backup_file(&mut writer, &mut encoder, repo, &pgdata, name, &bases)? {
            files.push(entry);
        }
    }
    drop(bar); // not shown while the WAL is awaited
    let stop = session.backup_stop()?;
    let stop_time = jiff::Timestamp::now();
    tracing::info!("backup stopped at {}", stop.lsn);
    let timeline = postgres::label_timeline(&stop.label_file).ok_or_else(|| {
        Error::Failed(format!(
            "pg_backup_stop returned a backup label without START TIMELINE:\n{}",
            stop.label_file
        ))
    })?;
    // backup_label (and tablespace_map) as PostgreSQL returned them: a
    // restore writes them into the data directory.
    let owner = std::fs::metadata(&pgdata)
        .map(|m| (m.uid(), m.gid()))
        .map_err(io_err(format!("reading {}", pgdata.display())))?;
    let mut extra = vec![("backup_label", stop.label_file.clone())];
    if let Some(map) = &stop.tablespace_map {
        extra.push(("tablespace_map", map.clone()));
    }
    for (name, text) in extra {
        let stored = store_small(&mut writer, &mut encoder, text.as_bytes(), chunk_len, &[])?;
        files.push(file_entry(
            &mut writer,
            &pgdata,
            name,
            stored,
            0o600,
            owner,
        )?);
    }
    let seg = server.wal_segment_size;
    let start_wal = WalName::segment(timeline, start_lsn.0 / seg, seg);
    let stop_wal = WalName::segment(timeline, stop.lsn.0.saturating_sub(1) / seg, seg);
    wait_for_wal(
        repo,
        &session,
        server.system_identifier,
        &start_wal,
        &stop_wal,
        seg,
        opts.wal_wait,
    )?;
    let mut directories = Vec::with_capacity(listing.dirs.len());
    for (path, mode) in listing.dirs {
        let meta = std::fs::metadata(pgdata.join(&path)).ok();
        directories.push(DirEntry {
            path,
            mode,
            uid: meta.as_ref().map_or(owner.0, |m| m.uid()),
            gid: meta.as_ref().map_or(owner.1, |m| m.gid()),
        });
    }
    let info = PgBackupInfo {
        system_identifier: server.system_identifier,
        pgdata: pgdata.clone(),
        server_version_num: server.server_version_num,
        timeline,
        wal_segment_size: seg,
        start_lsn,
        stop_lsn: stop.lsn,
        start_time: time,
        stop_time,
        start_wal: start_wal.to_string(),
        stop_wal: stop_wal.to_string(),
        directories,
    };
    drop(encoder);
    let run = Run {
        started,
        time,
        source: SourceKind::Postgres,
        label: opts.label.clone(),
        name: opts.name.clone(),
    };
    run.commit(repo, writer, files, Some(info), None)
}

/// What must hold before a backup starts, each with what to do about it.
fn preflight(pgdata: &Path, server: &postgres::ServerInfo) -> Result<()> {
    let same_dir =
        std::fs::canonicalize(pgdata).ok() == std::fs::canonicalize(&server.data_directory).ok();
    if !same_dir {
        return Err(Error::Usage(format!(
            "--pgdata {} is not the data directory of the server connected to \
             (it says {}); check --pgdata and --conn",
            pgdata.display(),
            server.data_directory.display()
        )));
    }
    if server.server_version_num < 150000 {
        return Err(Error::Usage(format!(
            "PostgreSQL {} is too old: base backups need version 15 or newer \
             (pg_backup_start)",
            server.server_version_num
        )));
    }
    if server.in_recovery {
        return Err(Error::Usage(
            "the server is a standby; rewindb takes base backups from a primary only".into(),
        ));
    }
    if server.archive_mode == "off" {
        return Err(Error::Usage(
            "archive_mode is off: a base backup is useless without its WAL. Set \
             archive_mode = on and archive_command = 'rewindb --repo DIR wal push %p' \
             in postgresql.conf, restart the server, then run `rewindb check postgres`"
                .into(),
        ));
    }
    Ok(())
}

/// Reads one file of the data directory into the repository. A file that
/// vanished since the listing (a dropped table) is skipped: WAL replay
/// removes it anyway.
fn backup_file(
    writer: &mut BlobWriter<'_>,
    encoder: &mut DeltaEncoder<'_>,
    repo: &Repository,
    pgdata: &Path,
    name: &str,
    bases: &[ChunkId],
) -> Result<Option<FileEntry>> {
    let path = pgdata.join(name);
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::debug!("{name}: removed during the backup, skipped");
            return Ok(None);
        }
        Err(e) => return Err(io_err(format!("opening {}", path.display()))(e)),
    };
    let meta = file
        .metadata()
        .map_err(io_err(format!("reading {}", path.display())))?;
    let read_err = || io_err(format!("reading {}", path.display()));
    let chunk_len = repo.config().chunker.pg_chunk as usize;
    let stored = if meta.len() <= SMALL_FILE {
        let mut data = Vec::with_capacity(meta.len() as usize);
        file.read_to_end(&mut data).map_err(read_err())?;
        crate::progress::add(data.len() as u64);
        store_small(writer, encoder, &data, chunk_len, bases)?
    } else {
        let (stored, ()) = store_pages(
            writer,
            repo,
            bases,
            move |_| ChunkShape {
                len: chunk_len,
                delta_level: crate::repo::delta::level_for(chunk_len, PG_PAGE),
            },
            |sink| {
                // Whole pages of 8 KiB; a file being extended meanwhile may end
                // in a partial one, which is stored as it is.
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = read_full(&mut file, &mut buf).map_err(read_err())?;
                    for page in buf[..n].chunks(PG_PAGE) {
                        sink(page)?;
                    }
                    if n < buf.len() {
                        return Ok(());
                    }
                }
            },
        )?;
        stored
    };
    let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777;
    Ok(Some(file_entry(
        writer,
        pgdata,
        name,
        stored,
        mode,
        (meta.uid(), meta.gid()),
    )?))
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn file_entry(
    writer: &mut BlobWriter<'_>,
    pgdata: &Path,
    name: &str,
    stored: StoredFile,
    mode: u32,
    owner: (u32, u32),
) -> Result<FileEntry> {
    let manifest = writer.add_manifest(&stored.ids)?;
    Ok(FileEntry {
        name: name.to_string(),
        source_path: pgdata.join(name),
        size: stored.size,
        blake3: stored.blake3.to_hex().to_string(),
        page_size: PG_PAGE as u32,
        journal_mode: String::new(),
        mode,
        chunk_count: stored.ids.len() as u64,
        manifest,
        owner: Some(owner),
    })
}

/// Waits until every segment from `first` to `last` is archived. The
/// server switched to a new segment in `pg_backup_stop`, so the last one is
/// on its way; when it does not come, the error says what the archiver
/// reports.
fn wait_for_wal(
    repo: &Repository,
    session: &PgSession,
    sysid: u64,
    first: &WalName,
    last: &WalName,
    seg_size: u64,
    wait: Duration,
) -> Result<()> {
    let archive = repo.wal();
    let deadline = Instant::now() + wait;
    let mut next = first.segno(seg_size);
    loop {
        while next <= last.segno(seg_size) {
            let name = WalName::segment(first.timeline, next, seg_size);
            if !archive.contains(sysid, &name)? {
                break;
            }
            next += 1;
        }
        if next > last.segno(seg_size) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let missing = WalName::segment(first.timeline, next, seg_size);
            let status = session.archiver_status()?;
            let failing = match (&status.last_failed_wal, &status.last_failed_time) {
                (Some(wal), Some(when)) if status.failed_count > 0 => format!(
                    "; the server's archiver has failed {} time(s), last on {wal} at {when} \
                     (see the server log)",
                    status.failed_count
                ),
                _ => String::new(),
            };
            return Err(Error::Failed(format!(
                "the backup needs WAL {first} to {last}, but {missing} did not reach the \
                 repository within {}s{failing}; no snapshot was saved. Run `rewindb check \
                 postgres` to test archiving; running the backup again helps once archiving \
                 works (or with a longer --wal-wait)",
                wait.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The LSN range and timeline of a base backup, as listed.
pub fn describe(info: &PgBackupInfo) -> String {
    format!(
        "LSN {}-{} timeline {}",
        info.start_lsn, info.stop_lsn, info.timeline
    )
}

/// Parses an LSN given on the command line.
pub fn parse_lsn(s: &str) -> Result<Lsn> {
    s.parse().map_err(Error::Usage)
}
