//! `backup sqlite`: snapshot live SQLite databases into the repository.
//!
//! Every path is validated before the repository is touched, so bad input
//! leaves it unchanged. Pages are cut into chunks on page boundaries, stored
//! through a [`BlobWriter`], and the snapshot is committed only after the
//! writer's packs and index entries are durable.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::id::{ChunkId, SnapshotId};
use crate::pipeline::store::{ChunkShape, Run, store_pages};
use crate::repo::Repository;
use crate::repo::snapshot::{FileEntry, Snapshot, SourceKind};
use crate::repo::writer::BlobWriter;
use crate::source::sqlite;

#[derive(Clone, Debug, Default)]
pub struct BackupOptions {
    pub label: Option<String>,
    /// The source's name in the `run` config, recorded in the snapshot.
    pub name: Option<String>,
    /// Record each database as if read from this path (one per database,
    /// in order): an uploaded copy stored as a snapshot of the source
    /// whose path it names (`serve`'s import).
    pub recorded_as: Option<Vec<PathBuf>>,
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
    repo: &Repository,
    dbs: &[PathBuf],
    opts: &BackupOptions,
) -> Result<(SnapshotId, Snapshot)> {
    let started = Instant::now();
    let time = jiff::Timestamp::now();
    let previous = repo.snapshots()?;
    let mut writer = BlobWriter::new(repo)?;
    tracing::debug!(elapsed = ?started.elapsed(), "index open");
    let mut files = Vec::new();
    for (n, db) in dbs.iter().enumerate() {
        let recorded = opts
            .recorded_as
            .as_ref()
            .and_then(|r| r.get(n))
            .unwrap_or(db);
        // The newest earlier capture of this database: its chunks are the
        // delta bases for the pages that changed since.
        let parent = previous
            .ok
            .iter()
            .rev()
            .filter(|(_, s)| s.source == SourceKind::Sqlite)
            .find_map(|(_, s)| s.files.iter().find(|f| &f.source_path == recorded))
            .filter(|_| repo.delta_bases());
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
        tracing::debug!(elapsed = ?started.elapsed(), "{}: previous manifest loaded", db.display());
        let _bar = crate::progress::start(
            std::fs::metadata(db).map(|m| m.len()).unwrap_or(0),
            &db.display().to_string(),
        );
        let mut entry = backup_one(&mut writer, repo, db, &bases)?;
        entry.name = file_name(recorded);
        entry.source_path = recorded.clone();
        files.push(entry);
        tracing::debug!(elapsed = ?started.elapsed(), "{}: read and stored", db.display());
    }
    let run = Run {
        started,
        time,
        source: SourceKind::Sqlite,
        label: opts.label.clone(),
        name: opts.name.clone(),
    };
    run.commit(repo, writer, files, None, None)
}

/// Reads one SQLite database into the repository.
fn backup_one(
    writer: &mut BlobWriter<'_>,
    repo: &Repository,
    db: &std::path::Path,
    bases: &[ChunkId],
) -> Result<FileEntry> {
    let params = writer.chunker();
    let shape = move |page: usize| ChunkShape {
        len: page * params.pages_per_chunk(page as u32),
        delta_level: crate::repo::delta::SQLITE_LEVEL,
    };
    let (stored, info) = store_pages(writer, repo, bases, shape, |sink| {
        sqlite::read_pages(db, |page| sink(page))
    })?;
    let manifest = writer.add_manifest(&stored.ids)?;
    Ok(FileEntry {
        name: file_name(db),
        source_path: db.to_path_buf(),
        size: stored.size,
        blake3: stored.blake3.to_hex().to_string(),
        page_size: info.page_size,
        journal_mode: info.journal_mode,
        mode: std::fs::metadata(db)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
            .unwrap_or(0o644),
        chunk_count: stored.ids.len() as u64,
        manifest,
        owner: None,
    })
}
