//! `backup sqlite`: snapshot live SQLite databases into the repository.
//!
//! Every path is validated before the repository is touched, so bad input
//! leaves it unchanged. Pages are cut into chunks on page boundaries, stored
//! through a [`BlobWriter`], and the snapshot is committed only after the
//! writer's packs and index entries are durable.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use crate::chunker::ChunkerParams;
use crate::error::{Error, Result};
use crate::id::{ChunkId, SnapshotId};
use crate::repo::Repository;
use crate::repo::snapshot::{BackupStats, FileEntry, SNAPSHOT_VERSION, Snapshot, SourceKind};
use crate::repo::writer::BlobWriter;
use crate::source::sqlite;

#[derive(Clone, Debug, Default)]
pub struct BackupOptions {
    pub label: Option<String>,
}

/// Checks the databases named on the command line; returns their absolute paths.
pub fn validate_sqlite_sources(dbs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if dbs.is_empty() {
        return Err(Error::Usage("name at least one SQLite database".into()));
    }
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for db in dbs {
        let abs = sqlite::validate(db)?;
        let name = file_name(&abs);
        if !names.insert(name.clone()) {
            return Err(Error::Usage(format!(
                "two databases are named {name:?}; a snapshot restores files by name, \
                 so back them up in separate snapshots"
            )));
        }
        out.push(abs);
    }
    Ok(out)
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Backs up `dbs` (already validated) as one snapshot.
pub fn backup_sqlite(
    repo: &mut Repository,
    dbs: &[PathBuf],
    opts: &BackupOptions,
) -> Result<(SnapshotId, Snapshot)> {
    let started = Instant::now();
    let time = jiff::Timestamp::now();
    let previous = repo.snapshots()?;
    let mut writer = BlobWriter::new(repo)?;
    let params = writer.chunker();
    let mut files = Vec::new();
    for db in dbs {
        // The newest earlier capture of this database: its chunks are the
        // delta bases for the pages that changed since.
        let parent = previous
            .ok
            .iter()
            .rev()
            .find_map(|(_, s)| s.files.iter().find(|f| &f.source_path == db));
        let bases = match parent.map(|f| writer.reader().manifest(f)) {
            Some(Ok(ids)) => ids,
            Some(Err(e)) => {
                tracing::warn!(
                    "{}: previous snapshot unreadable ({e}); storing changed pages whole",
                    db.display()
                );
                Vec::new()
            }
            None => Vec::new(),
        };
        files.push(backup_one(&mut writer, &params, db, &bases)?);
    }
    let written = writer.commit()?;
    repo.compact_index()?;
    let snapshot = Snapshot {
        version: SNAPSHOT_VERSION,
        time,
        source: SourceKind::Sqlite,
        label: opts.label.clone(),
        hostname: hostname(),
        files,
        stats: BackupStats {
            bytes_read: 0,
            chunks: written.chunks,
            chunks_new: written.chunks_new,
            bytes_new: written.bytes_new,
            bytes_added: written.bytes_added,
            duration_secs: started.elapsed().as_secs_f64(),
        },
    };
    let snapshot = Snapshot {
        stats: BackupStats {
            bytes_read: snapshot.logical_size(),
            ..snapshot.stats
        },
        ..snapshot
    };
    let id = repo.commit_snapshot(&snapshot)?;
    Ok((id, snapshot))
}

fn backup_one(
    writer: &mut BlobWriter<'_>,
    params: &ChunkerParams,
    db: &std::path::Path,
    bases: &[ChunkId],
) -> Result<FileEntry> {
    let mut whole = blake3::Hasher::new();
    let mut ids: Vec<ChunkId> = Vec::new();
    let mut group: Vec<u8> = Vec::new();
    let mut size = 0u64;
    let mut per_chunk = 0usize;
    let info = sqlite::read_pages(db, |page| {
        if per_chunk == 0 {
            per_chunk = params.pages_per_chunk(page.len() as u32);
        }
        whole.update(page);
        size += page.len() as u64;
        if per_chunk == 1 {
            let base = bases.get(ids.len()).copied();
            ids.push(writer.add_with_base(page, base)?);
        } else {
            group.extend_from_slice(page);
            if group.len() >= page.len() * per_chunk {
                let base = bases.get(ids.len()).copied();
                ids.push(writer.add_with_base(&group, base)?);
                group.clear();
            }
        }
        Ok(())
    })?;
    if !group.is_empty() {
        let base = bases.get(ids.len()).copied();
        ids.push(writer.add_with_base(&group, base)?);
    }
    let manifest = writer.add_manifest(&ids)?;
    Ok(FileEntry {
        name: file_name(db),
        source_path: db.to_path_buf(),
        size,
        blake3: whole.finalize().to_hex().to_string(),
        page_size: info.page_size,
        journal_mode: info.journal_mode,
        mode: std::fs::metadata(db)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
            .unwrap_or(0o644),
        chunk_count: ids.len() as u64,
        manifest,
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
