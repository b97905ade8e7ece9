//! A repository in a local directory: each object one file at its name
//! (`packs/ab/<id>.pack` is the file `<root>/packs/ab/<id>.pack`), the layout
//! every repository has had since the first release.
//!
//! Durability: an object is written to a temporary file, fsynced, hard-linked
//! to its name (link(2) fails when the name exists, which makes `put`
//! create-only without a lock) and the directory fsynced. Temporary files sit
//! in `tmp/`, which the holder of the exclusive lock empties, except those of
//! WAL objects: `wal push` takes no lock, so its temporary files sit beside
//! their final names as `.tmp-*` and only old ones are removed.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{Lease, Object, ObjectInfo, Storage};
use crate::error::RepoError;
use crate::repo::fsutil;
use crate::repo::lock::{LockMode, RepoLock};

/// Directories every local repository has (`packs/00` … `packs/ff` too).
const LAYOUT: [&str; 4] = ["packs", "snapshots", "tmp", "wal"];
/// Files at the top of the directory that are not objects.
const NOT_OBJECTS: [&str; 2] = ["lock", "index.redb"];

#[derive(Debug, Clone)]
pub struct LocalDir {
    root: PathBuf,
}

struct LocalObject {
    file: File,
    len: u64,
}

impl Object for LocalObject {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
}

impl LocalDir {
    /// The repository directory at `root` (not checked: opening the
    /// repository reads its `config.json`).
    pub fn new(root: &Path) -> LocalDir {
        LocalDir {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Creates `dir` if needed, making its entry durable in every directory
    /// between it and the repository root.
    fn ensure_dir(&self, dir: &Path) -> io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        fs::create_dir_all(dir)?;
        let mut d = dir;
        while let Some(parent) = d.parent() {
            fsutil::sync_dir(parent)?;
            if parent == self.root || !parent.starts_with(&self.root) {
                break;
            }
            d = parent;
        }
        Ok(())
    }

    /// Lays out a new repository directory: its subdirectories, then
    /// whatever `finish` writes (the index, then `config.json`, which makes it
    /// a repository). A missing `root` is built in a temporary directory beside
    /// it and renamed into place, so a killed init leaves nothing there (at
    /// most a `.rewindb-init-*` directory beside it). An existing empty
    /// directory (a mount point, or one made for rewindb in a parent it cannot
    /// write) is laid out in place, never renamed over: until `config.json`
    /// exists it is no repository, and what a killed init left is taken up by
    /// the next one. `Ok(false)`: another process created it first.
    pub fn create(
        root: &Path,
        finish: impl FnOnce(&LocalDir) -> Result<(), RepoError>,
    ) -> Result<bool, RepoError> {
        use crate::error::IoContext;
        let exists = || RepoError::AlreadyExists {
            path: root.to_path_buf(),
        };
        if root.join("config.json").exists() || (root.exists() && !root.is_dir()) {
            return Err(exists());
        }
        let io = |what: &str| format!("creating {what} for {}", root.display());
        if root.is_dir() {
            let leftovers = ["packs", "snapshots", "tmp", "wal", "index.redb"];
            let mut entries = fs::read_dir(root).ctx(|| format!("reading {}", root.display()))?;
            let foreign = entries.any(|e| {
                e.map_or(true, |e| {
                    !leftovers.contains(&e.file_name().to_string_lossy().as_ref())
                })
            });
            let has_data =
                |sub: &str| fs::read_dir(root.join(sub)).is_ok_and(|mut d| d.next().is_some());
            if foreign || has_data("snapshots") || has_data("wal") {
                return Err(exists());
            }
            Self::lay_out(root).ctx(|| io("the layout"))?;
            finish(&LocalDir::new(root))?;
            fsutil::sync_dir(root).ctx(|| io("the repository directory"))?;
            return Ok(true);
        }
        let parent = root.parent().unwrap_or(Path::new("/"));
        fsutil::create_dir_durable(parent).ctx(|| io("the parent directory"))?;
        let staging = tempfile::Builder::new()
            .prefix(".rewindb-init-")
            .tempdir_in(parent)
            .ctx(|| io("a staging directory"))?;
        Self::lay_out(staging.path()).ctx(|| io("the layout"))?;
        finish(&LocalDir::new(staging.path()))?;
        // rename(2) moves the finished repository to the missing `root`.
        let staged = staging.keep();
        if let Err(e) = fs::rename(&staged, root) {
            let _ = fs::remove_dir_all(&staged);
            // Another process (a second cron job's first backup) got there first.
            if root.join("config.json").is_file() {
                return Ok(false);
            }
            return Err(e).ctx(|| io("the repository directory"));
        }
        fsutil::sync_dir(parent).ctx(|| io("the repository directory"))?;
        Ok(true)
    }

    fn lay_out(dir: &Path) -> io::Result<()> {
        let mkdir = |path: &Path| match fs::create_dir(path) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        };
        for sub in LAYOUT {
            mkdir(&dir.join(sub))?;
        }
        for byte in 0..=255u8 {
            mkdir(&dir.join("packs").join(format!("{byte:02x}")))?;
        }
        fsutil::sync_dir(&dir.join("packs"))?;
        fsutil::sync_dir(dir)
    }

    /// Files under `dir` (recursively), as object names relative to the root.
    fn walk(&self, dir: &Path, out: &mut Vec<ObjectInfo>) -> io::Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for e in entries {
            let e = e?;
            let file_name = e.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            if file_name.starts_with('.') {
                continue; // staging files of `wal push`, editor droppings
            }
            let path = e.path();
            let top = dir == self.root;
            if e.file_type()?.is_dir() {
                if !(top && file_name == "tmp") {
                    self.walk(&path, out)?;
                }
                continue;
            }
            if top && NOT_OBJECTS.contains(&file_name) {
                continue;
            }
            let size = match e.metadata() {
                Ok(m) => m.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // deleted meanwhile
                Err(e) => return Err(e),
            };
            let rel = path
                .strip_prefix(&self.root)
                .expect("walked below the root");
            let Some(name) = rel.to_str() else { continue };
            out.push(ObjectInfo {
                name: name.to_string(),
                size,
            });
        }
        Ok(())
    }
}

fn parent_of(path: &Path) -> &Path {
    path.parent().expect("object paths are below the root")
}

impl Storage for LocalDir {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn describe(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn put(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let dest = self.path(name);
        let dir = parent_of(&dest);
        self.ensure_dir(dir)?;
        let file_name = name.rsplit('/').next().unwrap_or(name);
        let staging = match name.starts_with("wal/") {
            true => tempfile::Builder::new()
                .prefix(&format!(".tmp-{file_name}-"))
                .tempfile_in(dir)?,
            false => tempfile::Builder::new()
                .prefix(".rewindb-")
                .tempfile_in(self.root.join("tmp"))?,
        };
        let mut staging = staging;
        staging.write_all(data)?;
        staging.as_file().sync_all()?;
        match fs::hard_link(staging.path(), &dest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // The existing object's entry is durable too before we say so.
                fsutil::sync_dir(dir)?;
                return Err(e);
            }
            Err(e) => return Err(e),
        }
        drop(staging); // removes the temporary name
        fsutil::sync_dir(dir)
    }

    fn replace(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let dest = self.path(name);
        self.ensure_dir(parent_of(&dest))?;
        fsutil::write_atomic(&self.root.join("tmp"), &dest, data)
    }

    fn get(&self, name: &str) -> io::Result<Vec<u8>> {
        fs::read(self.path(name))
    }

    fn open(&self, name: &str) -> io::Result<Box<dyn Object>> {
        let file = File::open(self.path(name))?;
        let len = file.metadata()?.len();
        Ok(Box::new(LocalObject { file, len }))
    }

    fn stat(&self, name: &str) -> io::Result<Option<u64>> {
        match fs::metadata(self.path(name)) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<ObjectInfo>> {
        let dir = match prefix.rfind('/') {
            Some(i) => self.root.join(&prefix[..i]),
            None => self.root.clone(),
        };
        let mut out = Vec::new();
        self.walk(&dir, &mut out)?;
        out.retain(|o| o.name.starts_with(prefix));
        out.sort();
        Ok(out)
    }

    fn groups(&self, prefix: &str) -> io::Result<Vec<String>> {
        let entries = match fs::read_dir(self.path(prefix)) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e?;
            if !e.file_type()?.is_dir() {
                continue;
            }
            if let Some(name) = e.file_name().to_str().filter(|n| !n.starts_with('.')) {
                out.push(name.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    fn delete(&self, name: &str) -> io::Result<()> {
        self.delete_many(&[name.to_string()])
    }

    fn delete_many(&self, names: &[String]) -> io::Result<()> {
        let mut dirs = std::collections::BTreeSet::new();
        for name in names {
            let path = self.path(name);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            dirs.insert(parent_of(&path).to_path_buf());
        }
        dirs.iter().try_for_each(|d| fsutil::sync_dir(d))
    }

    fn lock(&self, mode: LockMode, wait: Duration) -> Result<Lease, RepoError> {
        Ok(Lease::new(RepoLock::acquire(&self.root, mode, wait)?))
    }

    fn remove_abandoned(&self, wal_older_than: Option<Duration>) -> io::Result<u64> {
        let mut removed = 0;
        let mut remove = |path: &Path, len: u64| -> io::Result<()> {
            match fs::remove_file(path) {
                Ok(()) => removed += len,
                // A running push removes its own once it is linked.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            Ok(())
        };
        for f in fs::read_dir(self.root.join("tmp"))? {
            let f = f?;
            let meta = f.metadata()?;
            if meta.is_file() {
                tracing::debug!("removing stale temporary file {}", f.path().display());
                remove(&f.path(), meta.len())?;
            }
        }
        let Some(age) = wal_older_than else {
            return Ok(removed);
        };
        for cluster in self.groups("wal/")? {
            let dir = self.root.join("wal").join(cluster);
            for e in fs::read_dir(&dir)? {
                let e = e?;
                if !e.file_name().to_string_lossy().starts_with(".tmp-") {
                    continue;
                }
                let Ok(meta) = e.metadata() else { continue };
                let old = meta
                    .modified()
                    .ok()
                    .and_then(|m| SystemTime::now().duration_since(m).ok())
                    .is_some_and(|a| a > age);
                if old {
                    remove(&e.path(), meta.len())?;
                }
            }
        }
        Ok(removed)
    }

    fn local_dir(&self) -> Option<&Path> {
        Some(&self.root)
    }
}
