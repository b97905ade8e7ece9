//! `restore`: choose a snapshot, plan where each file goes, then write, verify and rename.
//!
//! [`select_snapshot`] and [`plan_restore`] decide; [`restore`] acts. A file is
//! written to a temporary name beside its destination, checked against the
//! whole-file blake3 recorded at backup and `PRAGMA integrity_check`, fsynced,
//! and only then renamed into place (invariant 6). Nothing is left at the
//! destination when any step fails.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use jiff::Timestamp;

use crate::error::{Error, Result, io_err};
use crate::id::SnapshotId;
use crate::repo::reader::BlobReader;
use crate::repo::snapshot::{FileEntry, Snapshot};
use crate::repo::{Repository, SnapshotList, fsutil};
use crate::source::sqlite;
use crate::time::newest_at_or_before;

#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    pub to: Option<PathBuf>,
    /// Replace existing files (keeping a safety copy of each).
    pub in_place: bool,
    /// Restore only the file with this name.
    pub file: Option<String>,
}

#[derive(Clone, Debug)]
pub struct RestoreItem {
    pub file: FileEntry,
    pub dest: PathBuf,
    /// The destination exists and will be replaced.
    pub replace: bool,
}

#[derive(Clone, Debug)]
pub struct RestorePlan {
    pub snapshot: SnapshotId,
    pub items: Vec<RestoreItem>,
    /// Directory to create before restoring into it.
    pub create_dir: Option<PathBuf>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RestoredFile {
    pub name: String,
    pub dest: PathBuf,
    pub size: u64,
    /// Where the replaced file was kept (`--in-place` only).
    pub safety_copy: Option<PathBuf>,
}

/// Chooses the snapshot named by `spec` (an id prefix or `latest`), or the
/// newest at or before `at`, among those of `source` if given.
pub fn select_snapshot<'a>(
    list: &'a SnapshotList,
    spec: Option<&str>,
    at: Option<Timestamp>,
    source: Option<&str>,
) -> Result<&'a (SnapshotId, Snapshot)> {
    let matches_source = |s: &Snapshot| match source {
        None => true,
        Some(src) => s.files.iter().any(|f| {
            f.name == src
                || f.source_path == Path::new(src)
                || std::path::absolute(src).is_ok_and(|a| a == f.source_path)
        }),
    };
    match (spec, at) {
        (Some(_), Some(_)) => Err(Error::Usage(
            "give either a snapshot or --at TIME, not both".into(),
        )),
        (Some("latest"), None) => list
            .ok
            .iter()
            .rev()
            .find(|(_, s)| matches_source(s))
            .ok_or_else(|| {
                Error::Usage(match source {
                    Some(src) => format!("no snapshot of {src:?} in the repository"),
                    None => "the repository has no snapshots yet".into(),
                })
            }),
        (Some(spec), None) => Ok(list.find(spec)?),
        (None, Some(at)) => {
            let candidates: Vec<&(SnapshotId, Snapshot)> =
                list.ok.iter().filter(|(_, s)| matches_source(s)).collect();
            let times: Vec<Timestamp> = candidates.iter().map(|(_, s)| s.time).collect();
            match newest_at_or_before(&times, at) {
                Some(i) => Ok(candidates[i]),
                None => Err(Error::Usage(match times.first() {
                    Some(first) => {
                        format!("no snapshot at or before {at}; the oldest is from {first}")
                    }
                    None => "the repository has no snapshots to restore".into(),
                })),
            }
        }
        (None, None) => Err(Error::Usage(
            "name a snapshot (an id or `latest`) or give --at TIME".into(),
        )),
    }
}

/// Decides where each file of the snapshot goes. Refuses to overwrite anything
/// unless `in_place` says so.
pub fn plan_restore(id: SnapshotId, snap: &Snapshot, opts: &RestoreOptions) -> Result<RestorePlan> {
    let files: Vec<&FileEntry> = snap
        .files
        .iter()
        .filter(|f| opts.file.as_ref().is_none_or(|n| &f.name == n))
        .collect();
    if files.is_empty() {
        let names: Vec<&str> = snap.files.iter().map(|f| f.name.as_str()).collect();
        return Err(Error::Usage(format!(
            "snapshot {} has no file named {:?}; it holds {}",
            id.short(),
            opts.file.as_deref().unwrap_or_default(),
            names.join(", ")
        )));
    }
    let mut create_dir = None;
    let dests: Vec<PathBuf> = match &opts.to {
        None if opts.in_place => files.iter().map(|f| f.source_path.clone()).collect(),
        None => {
            return Err(Error::Usage(
                "give --to PATH, or --in-place to restore over the original paths".into(),
            ));
        }
        Some(to) if files.len() == 1 && !to.is_dir() => vec![to.clone()],
        Some(dir) => {
            if !dir.exists() {
                create_dir = Some(dir.clone());
            } else if !dir.is_dir() {
                return Err(Error::Usage(format!(
                    "snapshot {} holds {} files: --to must be a directory, and {} is a file",
                    id.short(),
                    files.len(),
                    dir.display()
                )));
            }
            files.iter().map(|f| dir.join(&f.name)).collect()
        }
    };
    let mut items = Vec::new();
    for (file, dest) in files.into_iter().zip(dests) {
        let replace = dest.exists();
        if replace && !opts.in_place {
            return Err(Error::Usage(format!(
                "{} already exists; restore elsewhere, or pass --in-place to replace it \
                 (a safety copy of it is kept)",
                dest.display()
            )));
        }
        if replace && dest.is_dir() {
            return Err(Error::Usage(format!("{} is a directory", dest.display())));
        }
        if create_dir.is_none() {
            let parent = parent_dir(&dest);
            if !parent.is_dir() {
                return Err(Error::Usage(format!(
                    "directory {} does not exist",
                    parent.display()
                )));
            }
        }
        items.push(RestoreItem {
            file: file.clone(),
            dest,
            replace,
        });
    }
    Ok(RestorePlan {
        snapshot: id,
        items,
        create_dir,
    })
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Carries out a plan.
pub fn restore(repo: &Repository, plan: &RestorePlan) -> Result<Vec<RestoredFile>> {
    let mut reader = BlobReader::new(repo)?;
    if let Some(dir) = &plan.create_dir {
        fsutil::create_dir_durable(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    }
    let mut done = Vec::new();
    for item in &plan.items {
        done.push(restore_file(&mut reader, plan.snapshot, item)?);
    }
    Ok(done)
}

fn restore_file(
    reader: &mut BlobReader<'_>,
    snapshot: SnapshotId,
    item: &RestoreItem,
) -> Result<RestoredFile> {
    let file = &item.file;
    let ids = reader.manifest(file)?;
    // Every chunk must be findable before a byte is written.
    let locations = ids
        .iter()
        .map(|id| reader.locate(id))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let parent = parent_dir(&item.dest);
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.rewindb-", file.name))
        .tempfile_in(&parent)
        .map_err(io_err(format!(
            "creating a temporary file in {}",
            parent.display()
        )))?;
    let tmp_path = tmp.path().to_path_buf();
    let write_err = || io_err(format!("writing {}", tmp_path.display()));
    let mut hasher = blake3::Hasher::new();
    let mut size = 0u64;
    {
        let mut out = BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        for (pack, entry) in &locations {
            let data = reader.read_entry(pack, entry)?;
            hasher.update(&data);
            size += data.len() as u64;
            out.write_all(&data).map_err(write_err())?;
        }
        out.flush().map_err(write_err())?;
    }
    let hash = hasher.finalize().to_hex();
    if size != file.size || hash.as_str() != file.blake3 {
        return Err(Error::Verification(format!(
            "{} restored from snapshot {} does not match what was backed up \
             ({size} bytes, blake3 {hash}; expected {} bytes, blake3 {}); nothing was written",
            file.name,
            snapshot.short(),
            file.size,
            file.blake3
        )));
    }
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(file.mode))
            .map_err(write_err())?;
    }
    tmp.as_file().sync_all().map_err(write_err())?;
    sqlite::integrity_check(&tmp_path).map_err(|e| {
        Error::Verification(format!(
            "{} from snapshot {} fails PRAGMA integrity_check: {e}; nothing was written",
            file.name,
            snapshot.short()
        ))
    })?;
    let safety_copy = if item.replace {
        Some(swap_in_place(tmp, &item.dest)?)
    } else {
        tmp.persist_noclobber(&item.dest)
            .map_err(|e| io_err(format!("renaming into {}", item.dest.display()))(e.error))?;
        fsutil::sync_dir(&parent).map_err(io_err(format!("syncing {}", parent.display())))?;
        None
    };
    Ok(RestoredFile {
        name: file.name.clone(),
        dest: item.dest.clone(),
        size,
        safety_copy,
    })
}

/// Replaces a live database with a verified temporary file. The old file and
/// its `-wal`/`-journal` move aside together (a stale WAL applied to the new
/// file would corrupt it); any failure moves them back.
fn swap_in_place(tmp: tempfile::NamedTempFile, dest: &Path) -> Result<PathBuf> {
    let stamp = Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
    let mut safety = dest.as_os_str().to_owned();
    safety.push(format!(".rewindb-safety-{stamp}"));
    let safety = PathBuf::from(safety);
    let [wal, journal, shm] = sqlite::companion_files(dest);
    let [safety_wal, safety_journal, _] = sqlite::companion_files(&safety);
    let mut moved: Vec<(PathBuf, PathBuf)> = Vec::new();
    let result = (|| -> Result<()> {
        for (from, to) in [
            (dest, &safety),
            (&wal, &safety_wal),
            (&journal, &safety_journal),
        ] {
            if from.exists() {
                fs::rename(from, to).map_err(io_err(format!(
                    "moving {} aside to {}",
                    from.display(),
                    to.display()
                )))?;
                moved.push((from.to_path_buf(), to.clone()));
            }
        }
        if shm.exists() {
            fs::remove_file(&shm).map_err(io_err(format!("removing {}", shm.display())))?;
        }
        tmp.persist_noclobber(dest)
            .map_err(|e| io_err(format!("renaming into {}", dest.display()))(e.error))?;
        let parent = parent_dir(dest);
        fsutil::sync_dir(&parent).map_err(io_err(format!("syncing {}", parent.display())))?;
        sqlite::integrity_check(dest).map_err(|e| {
            Error::Verification(format!(
                "{} fails PRAGMA integrity_check after the swap: {e}",
                dest.display()
            ))
        })
    })();
    if let Err(e) = result {
        if !moved.is_empty() {
            let _ = fs::remove_file(dest);
        }
        for (from, to) in moved.iter().rev() {
            if let Err(re) = fs::rename(to, from) {
                return Err(Error::Usage(format!(
                    "{e}; rolling back also failed ({re}): the original is at {}",
                    to.display()
                )));
            }
        }
        return Err(e);
    }
    Ok(safety)
}
