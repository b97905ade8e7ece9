//! The index of a repository kept elsewhere (a bucket): a cache on this
//! machine, `<cache root>/<repository id>/index.redb` (`docs/format.md`,
//! "Where the index lives").
//!
//! A cache is brought up to date whenever the repository is opened with a
//! lock: the packs other machines added are read (their tables only) and
//! the ones gone are dropped ([`rebuild::sync`]). After a gc run elsewhere
//! (`gc.json` changed since the cache last saw it) the cache is rebuilt whole,
//! because gc also drops dead blobs from the index that stay in kept packs,
//! and a cache that kept them could dedup against a delta whose base is gone.
//! A missing or empty cache is rebuilt the same way: a new machine needs
//! only the bucket's name and credentials.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::storage::{Storage, is_not_found};
use super::{INDEX_REBUILD_FILE, OpenOptions, Repository, fsutil, rebuild};
use crate::error::{IoContext, RepoError};
use crate::repo::index::Index;
use crate::repo::lock::{LockMode, RepoLock};

/// The copy of `gc.json` a cache was last brought up to date with.
const GC_SEEN_FILE: &str = "gc-seen";

/// The storage `root` names, if it is remote.
pub fn remote(root: &Path) -> Result<Option<Arc<dyn Storage>>, RepoError> {
    let Some(text) = root.to_str().filter(|t| t.starts_with("s3://")) else {
        return Ok(None);
    };
    #[cfg(feature = "s3")]
    {
        use super::storage::s3::{S3, S3Url};
        match S3Url::parse(text).expect("an s3:// URL") {
            Err(why) => Err(RepoError::NotFound {
                path: root.to_path_buf(),
                reason: why,
            }),
            Ok(url) => Ok(Some(Arc::new(S3::new(&url)?))),
        }
    }
    #[cfg(not(feature = "s3"))]
    Err(RepoError::NotFound {
        path: text.into(),
        reason: "this rewindb was built without S3 support (cargo feature `s3`)".into(),
    })
}

/// Where caches live: `$REWINDB_CACHE_DIR`, else `$XDG_CACHE_HOME/rewindb`,
/// else `~/.cache/rewindb`.
pub fn default_root() -> PathBuf {
    let nonempty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(dir) = nonempty("REWINDB_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    nonempty("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| nonempty("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("rewindb")
}

/// Creates a repository in a remote storage: its `config.json`, create-only,
/// in a place that holds nothing yet. The cache is made on first open.
pub fn init_remote(storage: &dyn Storage, new: super::NewRepository) -> Result<(), RepoError> {
    let exists = || RepoError::AlreadyExists {
        path: storage.location().into(),
    };
    let listing = || format!("listing {}", storage.location());
    if let Some(why) = storage.missing_container() {
        return Err(RepoError::NotFound {
            path: storage.location().into(),
            reason: why,
        });
    }
    // A killed init may have left its key object (written before the
    // config): that is not a repository, and is written again.
    let groups = storage.groups("").ctx(listing)?;
    if storage.stat("config.json").ctx(listing)?.is_some()
        || groups.iter().any(|g| g != "keys" && g != "locks")
    {
        return Err(exists());
    }
    match super::encryption::write_config(storage, &storage.location(), new) {
        Err(RepoError::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(exists())
        }
        other => other,
    }
}

/// Opens a remote repository with its cache under `cache_root`.
pub fn open_remote(
    storage: Arc<dyn Storage>,
    cache_root: Option<&Path>,
    opts: OpenOptions,
    password: super::PasswordSource,
) -> Result<Repository, RepoError> {
    if opts.lock.is_none() {
        // No index is opened without a lock (`wal push`, `snapshots`): no cache.
        return Repository::open_in_with(storage, Path::new(""), opts, password);
    }
    let bytes = match storage.get("config.json") {
        Ok(b) => b,
        Err(e) if is_not_found(&e) => return Err(super::no_config(&*storage)),
        Err(e) => return Err(e).ctx(|| format!("reading {}", storage.describe("config.json"))),
    };
    // Only the id is needed here; open_in validates the rest.
    let id = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_string))
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()))
        .ok_or_else(|| RepoError::NotARepository {
            path: storage.location().into(),
            reason: "config.json has no valid id".into(),
        })?;
    let dir = cache_root
        .map_or_else(default_root, Path::to_path_buf)
        .join(id);
    fsutil::create_dir_durable(&dir).ctx(|| format!("creating the cache {}", dir.display()))?;
    Repository::open_in_with(storage, &dir, opts, password)
}

impl Repository {
    /// Takes this machine's lock on the cache and brings the index up to
    /// date with the repository (rebuilt whole when missing or after a gc).
    pub(super) fn prepare_cache(&mut self, wait: std::time::Duration) -> Result<(), RepoError> {
        // One process at a time per cache: the index is written by whoever
        // syncs it, and backups from one machine share it.
        self.cache_lock = Some(RepoLock::acquire(
            &self.index_dir,
            LockMode::Exclusive,
            wait,
        )?);
        let started = Instant::now();
        let gc_now = match self.storage.get("gc.json") {
            Ok(b) => b,
            Err(e) if is_not_found(&e) => Vec::new(),
            Err(e) => return Err(e).ctx(|| format!("reading {}", self.describe("gc.json"))),
        };
        let seen_path = self.index_dir.join(GC_SEEN_FILE);
        let seen = std::fs::read(&seen_path).ok();
        let path = self.index_path();
        if !path.exists() || seen.as_deref() != Some(gc_now.as_slice()) {
            let building = self.index_dir.join(INDEX_REBUILD_FILE);
            let _ = std::fs::remove_file(&building);
            let report = rebuild::rebuild(
                self.storage.as_ref(),
                &self.crypto,
                &Index::create(&building)?,
                true,
            )?;
            std::fs::rename(&building, &path).ctx(|| format!("replacing {}", path.display()))?;
            fsutil::sync_dir(&self.index_dir)
                .ctx(|| format!("syncing {}", self.index_dir.display()))?;
            self.cache_saw_gc(&gc_now)?;
            tracing::info!(
                packs = report.packs_indexed,
                secs = started.elapsed().as_secs_f64(),
                "index cache rebuilt from {}",
                self.location()
            );
            return Ok(());
        }
        let synced = rebuild::sync(
            self.storage.as_ref(),
            &self.crypto,
            &Index::open(&path, true)?,
        )?;
        tracing::debug!(
            ?synced,
            secs = started.elapsed().as_secs_f64(),
            "index cache synced"
        );
        Ok(())
    }

    /// Records which `gc.json` the cache is up to date with (nothing for an
    /// index that lives in the repository).
    pub(super) fn cache_saw_gc(&self, gc: &[u8]) -> Result<(), RepoError> {
        if self.storage.local_dir() == Some(self.index_dir.as_path()) {
            return Ok(());
        }
        let tmp = &self.index_dir;
        fsutil::write_atomic(tmp, &tmp.join(GC_SEEN_FILE), gc)
            .ctx(|| format!("writing {}", tmp.join(GC_SEEN_FILE).display()))
    }
}

/// Keeps an object read from the repository in the cache (write, then
/// rename: a reader sees all of it or nothing). A cache that cannot be
/// written costs requests, not correctness: failures are only logged.
pub(crate) fn keep(path: &Path, bytes: &[u8]) {
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        tracing::debug!("could not cache {}: {e}", path.display());
    }
}

/// Removes the cached objects of `dir` that are not in `names` (forgotten
/// snapshots).
pub(crate) fn forget_others(dir: &Path, names: &std::collections::HashSet<&str>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_str().is_some_and(|n| names.contains(n)) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
