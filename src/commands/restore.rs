//! `restore`: choose a snapshot, plan where each file goes, then write, verify and rename.
//!
//! [`crate::selection::select`] and [`plan_restore`] decide; [`restore`] acts. A file is
//! written to a temporary name beside its destination, checked against the
//! whole-file blake3 recorded at backup and `PRAGMA integrity_check`, fsynced,
//! and only then renamed into place (invariant 6). A file whose restore fails
//! leaves nothing at its destination; when a later file of a multi-file
//! restore fails, the error lists the files already restored.

use std::fs;
use std::path::{Path, PathBuf};

use jiff::Timestamp;

use crate::error::{Error, Result, io_err};
use crate::id::SnapshotId;
use crate::pipeline::fetch::write_chunks;
use crate::repo::reader::BlobReader;
use crate::repo::snapshot::{FileEntry, Snapshot};
use crate::repo::{Repository, fsutil};
use crate::source::sqlite;

#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    pub to: Option<PathBuf>,
    /// Replace existing files (keeping a safety copy of each).
    pub in_place: bool,
    /// Restore only the file with this name.
    pub file: Option<String>,
    pub verify: Verify,
    /// `to` is a directory to create if missing, even for one file (the
    /// server's restores under its `restore_dir`).
    pub into_dir: bool,
}

/// How a restored database is checked before it is renamed into place. The
/// whole-file blake3 recorded at backup is always checked (and every chunk's
/// own hash): that proves the restored bytes are the ones read inside the
/// backup's read transaction, which is what a restore promises. The SQLite
/// checks on top examine the database itself (a drill, or a database that
/// may have been damaged before it was backed up).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verify {
    /// blake3, then `PRAGMA integrity_check` (about 4 s per GiB here).
    Full,
    /// blake3, then `PRAGMA quick_check` (skips index-content checks).
    Quick,
    /// blake3 only: the bytes are exactly those captured at backup time.
    #[default]
    Hash,
}

impl std::str::FromStr for Verify {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "full" => Ok(Verify::Full),
            "quick" => Ok(Verify::Quick),
            "hash" => Ok(Verify::Hash),
            _ => Err(format!("--verify {s:?}: expected full, quick or hash")),
        }
    }
}

impl Verify {
    fn pragma(self) -> Option<&'static str> {
        match self {
            Verify::Full => Some("integrity_check"),
            Verify::Quick => Some("quick_check"),
            Verify::Hash => None,
        }
    }
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
    pub verify: Verify,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RestoredFile {
    pub name: String,
    pub dest: PathBuf,
    pub size: u64,
    /// Where the replaced file was kept (`--in-place` only).
    pub safety_copy: Option<PathBuf>,
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
        Some(to) if files.len() == 1 && !to.is_dir() && !opts.into_dir => vec![to.clone()],
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
        if dest.is_dir() {
            return Err(Error::Usage(format!("{} is a directory", dest.display())));
        }
        // A -wal or -journal left beside the destination would be applied to
        // the restored file by the first SQLite that opens it.
        let [wal, journal, _] = sqlite::companion_files(&dest);
        let stale = [wal, journal].into_iter().find(|p| p.exists());
        let replace = dest.exists() || stale.is_some();
        if replace && !opts.in_place {
            return Err(Error::Usage(match stale {
                Some(stale) if !dest.exists() => format!(
                    "{} is left beside {}: SQLite would apply it to the restored database; \
                     remove it, restore elsewhere, or pass --in-place to move it aside",
                    stale.display(),
                    dest.display()
                ),
                _ => format!(
                    "{} already exists; restore elsewhere, or pass --in-place to replace it \
                     (a safety copy of it is kept)",
                    dest.display()
                ),
            }));
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
        verify: opts.verify,
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
    let mut done: Vec<RestoredFile> = Vec::new();
    for item in &plan.items {
        match restore_file(repo, &mut reader, plan.snapshot, item, plan.verify) {
            Ok(restored) => done.push(restored),
            Err(e) if done.is_empty() => return Err(e),
            // Files already renamed into place stay (each verified); say which,
            // and where any replaced originals were kept.
            Err(e) => {
                let restored = done
                    .iter()
                    .map(|r| match &r.safety_copy {
                        Some(kept) => {
                            format!("{} (original kept as {})", r.dest.display(), kept.display())
                        }
                        None => r.dest.display().to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(Error::Partial {
                    restored,
                    source: Box::new(e),
                });
            }
        }
    }
    Ok(done)
}

fn restore_file(
    repo: &Repository,
    reader: &mut BlobReader<'_>,
    snapshot: SnapshotId,
    item: &RestoreItem,
    verify: Verify,
) -> Result<RestoredFile> {
    let file = &item.file;
    let ids = reader.manifest(file)?;
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
    let tiles = file.page_size.is_power_of_two();
    let _bar = crate::progress::start(item.file.size, &item.dest.display().to_string());
    let (hash, size) = write_chunks(
        repo,
        &ids,
        tiles,
        tmp.as_file_mut(),
        &tmp_path,
        verify.pragma().is_some(),
    )?;
    let hash = hash.to_hex();
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
    // The SQLite check reads the file from the page cache while the fsync
    // writes it out: the two overlap.
    let (synced, checked) = std::thread::scope(|scope| {
        let syncing = scope.spawn(|| tmp.as_file().sync_all());
        let checked = verify
            .pragma()
            .map(|pragma| (pragma, sqlite::integrity_check(&tmp_path, pragma)));
        let synced = syncing.join().expect("the fsync thread does not panic");
        (synced, checked)
    });
    if let Some((pragma, Err(e))) = checked {
        return Err(Error::Verification(format!(
            "{} from snapshot {} fails PRAGMA {pragma}: {e}; nothing was written",
            file.name,
            snapshot.short()
        )));
    }
    synced.map_err(write_err())?;
    let safety_copy = if item.replace {
        swap_in_place(tmp, &item.dest, verify)?
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

/// Replaces a live database with a verified temporary file and returns where
/// the replaced files were kept.
///
/// The old file and its `-wal`/`-journal` are first hard-linked to safety
/// names, so the path never stops holding a database (a crash midway leaves
/// the old one, or the new one). The old WAL and journal are then removed
/// before the new file is renamed over the old: applied to the new file they
/// would corrupt it. Any failure renames the kept files back.
fn swap_in_place(
    tmp: tempfile::NamedTempFile,
    dest: &Path,
    verify: Verify,
) -> Result<Option<PathBuf>> {
    let safety = safety_name(dest);
    let [wal, journal, shm] = sqlite::companion_files(dest);
    let [safety_wal, safety_journal, _] = sqlite::companion_files(&safety);
    let parent = parent_dir(dest);
    let had_dest = dest.exists();
    let mut kept: Vec<(PathBuf, PathBuf)> = Vec::new();
    let result = (|| -> Result<()> {
        for (from, to) in [
            (dest, &safety),
            (&wal, &safety_wal),
            (&journal, &safety_journal),
        ] {
            if from.exists() {
                fs::hard_link(from, to).map_err(io_err(format!(
                    "keeping {} as {}",
                    from.display(),
                    to.display()
                )))?;
                kept.push((from.to_path_buf(), to.clone()));
            }
        }
        fsutil::sync_dir(&parent).map_err(io_err(format!("syncing {}", parent.display())))?;
        for stale in [&wal, &journal, &shm] {
            if stale.exists() {
                fs::remove_file(stale).map_err(io_err(format!("removing {}", stale.display())))?;
            }
        }
        tmp.persist(dest)
            .map_err(|e| io_err(format!("renaming into {}", dest.display()))(e.error))?;
        fsutil::sync_dir(&parent).map_err(io_err(format!("syncing {}", parent.display())))?;
        match verify.pragma() {
            Some(pragma) => sqlite::integrity_check(dest, pragma).map_err(|e| {
                Error::Verification(format!(
                    "{} fails PRAGMA {pragma} after the swap: {e}",
                    dest.display()
                ))
            }),
            None => Ok(()),
        }
    })();
    if let Err(e) = result {
        if !had_dest {
            let _ = fs::remove_file(dest);
        }
        for (original, kept_as) in kept.iter().rev() {
            if let Err(re) = fs::rename(kept_as, original) {
                return Err(Error::Io {
                    context: format!(
                        "{e}; putting {} back also failed, the original is at {}",
                        original.display(),
                        kept_as.display()
                    ),
                    source: re,
                });
            }
        }
        return Err(e);
    }
    Ok(kept.first().map(|(_, kept_as)| kept_as.clone()))
}

/// `<dest>.rewindb-safety-<UTC time to the nanosecond>`, never an existing name.
fn safety_name(dest: &Path) -> PathBuf {
    loop {
        let stamp = Timestamp::now().strftime("%Y%m%dT%H%M%S%.9fZ").to_string();
        let mut name = dest.as_os_str().to_owned();
        name.push(format!(".rewindb-safety-{stamp}"));
        let name = PathBuf::from(name);
        if !name.exists() {
            return name;
        }
    }
}
