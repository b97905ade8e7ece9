//! `wal push` and `wal fetch`: PostgreSQL's archive_command and restore_command.
//!
//! Both take no repository lock (the WAL archive needs none, see
//! [`crate::repo::wal`]), so they run beside a base backup, another push or
//! gc. PostgreSQL runs both with the data directory as the working
//! directory, which is how they learn which cluster they serve.

use std::path::{Path, PathBuf};

use crate::error::{Error, RepoError, Result, io_err};
use crate::repo::wal::{
    Pushed, WalArchive, WalKind, WalName, control_system_identifier, segment_header,
};

/// The file name part of `path` as a WAL name.
fn wal_name_of(path: &Path) -> Result<WalName> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Usage(format!("{}: no file name", path.display())))?;
    WalName::parse(name).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
}

/// The system identifier of the cluster whose data directory is `dir`, if
/// it is one.
fn cluster_here(dir: &Path) -> Option<u64> {
    control_system_identifier(dir).ok()
}

/// Archives the WAL file at `path` (as PostgreSQL passes it, `pg_wal/NAME`,
/// relative to the data directory). `system_id` is needed only for history
/// and backup files pushed from outside a data directory.
pub fn push(repo_root: &Path, path: &Path, system_id: Option<u64>) -> Result<(WalName, Pushed)> {
    let name = wal_name_of(path)?;
    let not_found = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => Error::Usage(format!("{}: no such file", path.display())),
        _ => io_err(format!("reading {}", path.display()))(e),
    };
    let file = std::fs::File::open(path).map_err(not_found)?;
    let len = file.metadata().map_err(not_found)?.len();
    let here = cluster_here(Path::new("."));
    let sysid = match name.kind {
        WalKind::Segment | WalKind::Partial => {
            let mut first = vec![0u8; len.min(64) as usize];
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut first, 0).map_err(not_found)?;
            let header = segment_header(&first)
                .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?;
            check_segment(&name, &header, len, path)?;
            for (what, id) in [("this data directory", here), ("--system-id", system_id)] {
                if let Some(id) = id.filter(|&id| id != header.system_identifier) {
                    return Err(Error::Usage(format!(
                        "{}: the segment belongs to the cluster with system identifier {}, \
                         but {what} is {id}; is archive_command pointing at the right \
                         repository?",
                        path.display(),
                        header.system_identifier
                    )));
                }
            }
            header.system_identifier
        }
        WalKind::History | WalKind::Backup => system_id.or(here).ok_or_else(|| {
            Error::Usage(format!(
                "{}: cannot tell which cluster this file belongs to; run from the data \
                 directory (as archive_command does) or give --system-id",
                path.display()
            ))
        })?,
    };
    let repo = open_unlocked(repo_root)?;
    let pushed = repo.wal().push(sysid, &name, &file, len)?;
    Ok((name, pushed))
}

/// The segment's header must agree with its name.
fn check_segment(
    name: &WalName,
    header: &crate::repo::wal::SegmentHeader,
    len: u64,
    path: &Path,
) -> Result<()> {
    let seg_size = u64::from(header.seg_size);
    let expected = WalName::segment(name.timeline, header.page_addr / seg_size, seg_size);
    // The first segment of a new timeline begins with pages written on its
    // parent timeline: its header may name an older timeline, never a newer one.
    let mismatch = header.timeline > name.timeline
        || expected.log != name.log
        || expected.seg != name.seg
        || !header.page_addr.is_multiple_of(seg_size)
        || len != seg_size;
    if mismatch {
        return Err(Error::Usage(format!(
            "{}: its content is segment {expected} ({len} bytes, segment size {seg_size}), \
             not {name}; refusing to archive it under that name",
            path.display()
        )));
    }
    Ok(())
}

/// An existing repository, checked like any other command would, without
/// the lock: the WAL archive needs none (its objects are create-only).
fn open_unlocked(repo_root: &Path) -> Result<crate::repo::Repository, RepoError> {
    // Opening without a lock validates config.json and reads nothing else.
    crate::repo::Repository::open(
        repo_root,
        crate::repo::OpenOptions {
            lock: crate::commands::Operation::List.lock(),
            lock_wait: std::time::Duration::ZERO,
        },
    )
}

/// Which cluster a fetch is for: `--system-id`, else the data directory it
/// runs in, else the only cluster in the archive.
pub fn fetch_cluster(archive: &WalArchive, system_id: Option<u64>) -> Result<u64> {
    if let Some(id) = system_id.or_else(|| cluster_here(Path::new("."))) {
        return Ok(id);
    }
    match archive.clusters()?.as_slice() {
        [only] => Ok(*only),
        [] => Err(Error::Repo(RepoError::WalMissing {
            name: "any".into(),
            detail: "the repository has no WAL archive yet".into(),
        })),
        several => Err(Error::Usage(format!(
            "the repository holds WAL of several clusters ({}); give --system-id",
            several
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Writes the archived WAL file `name` to `dest`, verified. A file that is not
/// archived is an error (PostgreSQL reads the non-zero exit as "no such file").
pub fn fetch(repo_root: &Path, name: &str, dest: &Path, system_id: Option<u64>) -> Result<()> {
    let name = WalName::parse(name).map_err(Error::Usage)?;
    let repo = open_unlocked(repo_root)?;
    let archive = repo.wal();
    let sysid = fetch_cluster(&archive, system_id)?;
    let data = archive
        .read(sysid, &name)?
        .ok_or_else(|| RepoError::WalMissing {
            name: name.to_string(),
            detail: format!("cluster {sysid}"),
        })?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".rewindb-fetch-")
        .tempfile_in(&parent)
        .map_err(io_err(format!("creating a file in {}", parent.display())))?;
    std::io::Write::write_all(&mut tmp, &data)
        .map_err(io_err(format!("writing {}", tmp.path().display())))?;
    // PostgreSQL copies the file into place itself; it needs no fsync here.
    tmp.persist(dest)
        .map_err(|e| io_err(format!("writing {}", dest.display()))(e.error))?;
    Ok(())
}
