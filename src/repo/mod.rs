//! The content-addressed repository: packs, snapshots, a WAL archive and a
//! config, kept by a [`storage::Storage`], and an index beside them.
//!
//! [`Repository`] opens (or creates) a repository and takes the lock, and is
//! the only code that knows how its objects are named;
//! [`writer::BlobWriter`] stores new blobs durably; [`reader::BlobReader`]
//! reads and verifies them. The layout and byte formats are in
//! `docs/format.md`; the promises the code keeps are in `docs/ARCHITECTURE.md`.

pub mod audit;
pub mod cache;
pub mod config;
pub mod delta;
pub mod encryption;
pub mod fsutil;
pub mod index;
pub mod index_objects;
pub mod lock;
pub mod pack;
pub mod reader;
pub mod rebuild;
mod records;
pub mod snapshot;
pub mod storage;
pub(crate) mod upload;
pub mod wal;
pub mod writer;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::crypto::Crypto;
use crate::error::{IoContext, RepoError};
use crate::id::PackId;
pub use config::{CONFIG_FORMAT, Config, FORMAT_VERSION};
pub use encryption::{NewRepository, PasswordSource};
use index::Index;
use lock::LockMode;
use pack::BlobEntry;
pub use records::SnapshotList;
use storage::local::LocalDir;
use storage::{Lease, Object, Storage, is_not_found};
use wal::WalArchive;

/// An open repository. Holds the lock it was opened with until dropped.
pub struct Repository {
    storage: Arc<dyn Storage>,
    /// Where `index.redb` lives: the repository's own directory when it is
    /// local, a cache directory otherwise.
    index_dir: PathBuf,
    config: Config,
    index: std::sync::OnceLock<Index>,
    mode: Option<LockMode>,
    lease: Option<Lease>,
    /// The index cache's own lock, when the index is not in the repository.
    cache_lock: Option<lock::RepoLock>,
    /// Ids and sealing: plain, or keyed with the master keys in `keys`.
    crypto: Crypto,
    keys: Option<encryption::Unlocked>,
}

/// How to open a repository.
#[derive(Clone, Copy, Debug)]
pub struct OpenOptions {
    /// `None` reads only objects that are written atomically (snapshots,
    /// config, WAL) and takes no lock.
    pub lock: Option<LockMode>,
    pub lock_wait: Duration,
}

/// Why a storage without `config.json` is not a repository, and what to do.
pub(crate) fn no_config(storage: &dyn Storage) -> RepoError {
    let reason = storage.missing_container().unwrap_or_else(|| {
        format!(
            "it has no config.json; create a repository there with `rewindb --repo {} init`, \
             or check the address",
            storage.location()
        )
    });
    RepoError::NotARepository {
        path: storage.location().into(),
        reason,
    }
}

/// The index file in its directory.
const INDEX_FILE: &str = "index.redb";
/// Where `repair index` builds the new index before it replaces the old one
/// (a dot-name: not a repository object).
const INDEX_REBUILD_FILE: &str = ".index.redb.rebuild";
/// How old a `wal push` upload must be before gc takes it for abandoned:
/// far longer than any push takes.
const STALE_WAL_UPLOAD: Duration = Duration::from_secs(3600);

impl Repository {
    /// Creates a new repository in the local directory `root`, which must be
    /// missing or empty (see [`LocalDir::create`]: a killed `init` leaves
    /// nothing that is taken for a repository).
    pub fn init(root: &Path, new: NewRepository) -> Result<(), RepoError> {
        if let Some(remote) = cache::remote(root)? {
            return cache::init_remote(remote.as_ref(), new);
        }
        let root = &std::path::absolute(root).ctx(|| format!("resolving {}", root.display()))?;
        LocalDir::create(root, |staged| {
            let dir = staged.root();
            // An index left by a killed init holds nothing: made anew.
            let index = dir.join(INDEX_FILE);
            if index.exists() {
                std::fs::remove_file(&index).ctx(|| format!("removing {}", index.display()))?;
            }
            Self::lay_out(staged, dir, &root.display().to_string(), new)
        })?;
        Ok(())
    }

    /// Creates a new repository in `storage`, its index in `index_dir`.
    pub fn init_in(
        storage: &dyn Storage,
        index_dir: &Path,
        new: NewRepository,
    ) -> Result<(), RepoError> {
        if storage
            .stat("config.json")
            .ctx(|| format!("reading {}", storage.describe("config.json")))?
            .is_some()
        {
            return Err(RepoError::AlreadyExists {
                path: storage.location().into(),
            });
        }
        Self::lay_out(storage, index_dir, &storage.location(), new)
    }

    /// An empty index, then `config.json` (which makes it a repository).
    fn lay_out(
        storage: &dyn Storage,
        index_dir: &Path,
        seed: &str,
        new: NewRepository,
    ) -> Result<(), RepoError> {
        drop(Index::create(&index_dir.join(INDEX_FILE))?);
        encryption::write_config(storage, seed, new)
    }

    /// Whether `root` holds a repository (its `config.json`; whether that is
    /// valid, opening tells). A remote one that cannot be reached does not.
    pub fn exists_at(root: &Path) -> bool {
        match cache::remote(root) {
            Ok(Some(storage)) => storage.stat("config.json").is_ok_and(|s| s.is_some()),
            Ok(None) => root.join("config.json").is_file(),
            Err(_) => false,
        }
    }

    /// Opens the existing repository in the local directory `root`.
    pub fn open(root: &Path, opts: OpenOptions) -> Result<Repository, RepoError> {
        Self::open_cached(root, None, opts)
    }

    /// Opens the repository at `root`: a local directory, or
    /// `s3://BUCKET/PREFIX`, whose index is cached under `cache_root`
    /// ([`cache::default_root`] if `None`).
    pub fn open_cached(
        root: &Path,
        cache_root: Option<&Path>,
        opts: OpenOptions,
    ) -> Result<Repository, RepoError> {
        Self::open_cached_with(root, cache_root, opts, PasswordSource::Environment)
    }

    /// As [`open_cached`](Self::open_cached), an encrypted repository's
    /// password from `password` (`copy`'s destination).
    pub fn open_cached_with(
        root: &Path,
        cache_root: Option<&Path>,
        opts: OpenOptions,
        password: PasswordSource,
    ) -> Result<Repository, RepoError> {
        if let Some(remote) = cache::remote(root)? {
            return cache::open_remote(remote, cache_root, opts, password);
        }
        let root = &std::path::absolute(root).ctx(|| format!("resolving {}", root.display()))?;
        if !root.exists() {
            return Err(RepoError::NotFound {
                path: root.to_path_buf(),
                reason: "the directory does not exist".into(),
            });
        }
        Self::open_in_with(Arc::new(LocalDir::new(root)), root, opts, password)
    }

    /// Opens the existing repository in `storage`, its index in `index_dir`.
    pub fn open_in(
        storage: Arc<dyn Storage>,
        index_dir: &Path,
        opts: OpenOptions,
    ) -> Result<Repository, RepoError> {
        Self::open_in_with(storage, index_dir, opts, PasswordSource::Environment)
    }

    /// As [`open_in`](Self::open_in), the password of an encrypted
    /// repository from `password`.
    pub fn open_in_with(
        storage: Arc<dyn Storage>,
        index_dir: &Path,
        opts: OpenOptions,
        password: PasswordSource,
    ) -> Result<Repository, RepoError> {
        let location = || PathBuf::from(storage.location());
        let not_a_repo = |reason: String| RepoError::NotARepository {
            path: location(),
            reason,
        };
        if storage
            .stat("config.json")
            .ctx(|| format!("reading {}", storage.describe("config.json")))?
            .is_none()
        {
            return Err(no_config(&*storage));
        }
        let lease = match opts.lock {
            Some(mode) => Some(storage.lock(mode, opts.lock_wait)?),
            None => None,
        };
        let bytes = storage
            .get("config.json")
            .ctx(|| format!("reading {}", storage.describe("config.json")))?;
        let config: Config = serde_json::from_slice(&bytes)
            .map_err(|e| not_a_repo(format!("config.json is not valid: {e}")))?;
        if config.format != CONFIG_FORMAT {
            return Err(not_a_repo(format!(
                "config.json names format {:?}",
                config.format
            )));
        }
        if config.version > FORMAT_VERSION {
            return Err(RepoError::UnsupportedVersion {
                path: location(),
                found: config.version,
                supported: FORMAT_VERSION,
            });
        }
        config
            .validate()
            .map_err(|e| not_a_repo(format!("config.json: {e}")))?;
        let keys = encryption::unlock(storage.as_ref(), &config, password)?;
        let crypto = keys
            .as_ref()
            .map_or_else(Crypto::plain, |k| Crypto::new(&k.master));
        let mut repo = Repository {
            crypto,
            keys,
            storage,
            index_dir: index_dir.to_path_buf(),
            config,
            index: std::sync::OnceLock::new(),
            mode: opts.lock,
            lease,
            cache_lock: None,
        };
        let local = repo.storage.local_dir() == Some(index_dir);
        match opts.lock {
            // The index of a repository kept elsewhere is this machine's cache.
            Some(_) if !local => repo.prepare_cache(opts.lock_wait)?,
            Some(LockMode::Shared) => repo.recover_index_for_readers(opts.lock_wait)?,
            // Under the exclusive lock nobody else stages objects (but `wal
            // push`, whose uploads are left alone here).
            Some(LockMode::Exclusive | LockMode::Append) => {
                repo.storage
                    .remove_abandoned(None)
                    .ctx(|| format!("removing temporary files in {}", repo.location()))?;
            }
            None => {}
        }
        Ok(repo)
    }

    /// A writer killed while it had the index open leaves redb needing a
    /// repair, which only a writable open performs. Readers hold the shared
    /// lock and open read-only, so when that fails they step up to the
    /// exclusive lock for one writable open, then step back down.
    fn recover_index_for_readers(&mut self, wait: Duration) -> Result<(), RepoError> {
        let path = self.index_path();
        if !path.exists() {
            return Ok(()); // reported by index() to whoever needs it
        }
        if let Ok(index) = Index::open(&path, false) {
            let _ = self.index.set(index);
            return Ok(());
        }
        tracing::info!("recovering the index after an interrupted run");
        self.lease = None;
        {
            let _exclusive = self.storage.lock(LockMode::Exclusive, wait)?;
            // Any error is reported again by the read-only open in index().
            let _ = Index::open(&path, true);
        }
        self.lease = Some(self.storage.lock(LockMode::Shared, wait)?);
        Ok(())
    }

    /// The repository's address (a directory, or a URL), for messages.
    pub fn location(&self) -> String {
        self.storage.location()
    }

    /// The repository's directory when it is one on this machine.
    pub fn local_dir(&self) -> Option<&Path> {
        self.storage.local_dir()
    }

    /// The WAL archive.
    pub fn wal(&self) -> WalArchive<'_> {
        WalArchive::new(self.storage.as_ref(), &self.crypto)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// How this repository makes ids and seals objects.
    pub fn crypto(&self) -> &Crypto {
        &self.crypto
    }

    /// The master keys, when the repository is encrypted (`key add`,
    /// `init --keys-from`).
    pub fn master_keys(&self) -> Option<&crate::crypto::MasterKeys> {
        self.keys.as_ref().map(|k| &k.master)
    }

    /// The id of the key object that opened this repository.
    pub fn key_id(&self) -> Option<&str> {
        self.keys.as_ref().map(|k| k.key_id.as_str())
    }

    fn index_path(&self) -> PathBuf {
        self.index_dir.join(INDEX_FILE)
    }

    /// The index, opened on first use (writable under the exclusive lock).
    pub fn index(&self) -> Result<&Index, RepoError> {
        if self.index.get().is_none() {
            let writable = match self.mode {
                Some(mode) => mode.writes_index(),
                None => panic!("the index needs a repository lock"),
            };
            let _ = self.index.set(Index::open(&self.index_path(), writable)?);
        }
        Ok(self.index.get().expect("opened above"))
    }

    /// The index file's size in bytes.
    pub fn index_len(&self) -> Result<u64, RepoError> {
        let path = self.index_path();
        Ok(std::fs::metadata(&path)
            .ctx(|| format!("reading {}", path.display()))?
            .len())
    }

    /// Compacts the index when at least `min_fraction` of its file is free
    /// space (redb is copy-on-write: each backup's commit leaves the pages it
    /// replaced free, and the file grows by them). Returns (before, after)
    /// file lengths when it compacted.
    pub fn compact_index(&mut self, min_fraction: f64) -> Result<Option<(u64, u64)>, RepoError> {
        assert!(self.writes_index(), "compaction needs a writer's lock");
        let path = self.index_path();
        let index = match self.index.get_mut() {
            Some(index) => index,
            None => {
                let _ = self.index.set(Index::open(&path, true)?);
                self.index.get_mut().expect("set above")
            }
        };
        let (free, len) = index.fragmentation()?;
        if (free as f64) < min_fraction * len as f64 {
            return Ok(None);
        }
        index.compact()?;
        Ok(Some((len, self.index_len()?)))
    }

    /// Replaces the index with one `build` fills (`repair index`): built
    /// beside the old one and renamed over it, so a crash midway leaves the
    /// old index in place.
    pub fn replace_index(
        &mut self,
        build: impl FnOnce(&Index) -> Result<(), RepoError>,
    ) -> Result<(), RepoError> {
        assert!(self.is_exclusive(), "repair needs the exclusive lock");
        self.index.take();
        let building = self.index_dir.join(INDEX_REBUILD_FILE);
        match std::fs::remove_file(&building) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).ctx(|| format!("removing {}", building.display()));
            }
            _ => {}
        }
        build(&Index::create(&building)?)?;
        let dest = self.index_path();
        std::fs::rename(&building, &dest).ctx(|| format!("replacing {}", dest.display()))?;
        fsutil::sync_dir(&self.index_dir).ctx(|| format!("syncing {}", self.index_dir.display()))
    }

    /// Whether this handle may write the index (`Exclusive` or `Append`).
    pub fn writes_index(&self) -> bool {
        self.mode.is_some_and(LockMode::writes_index)
    }

    /// Whether this handle holds the exclusive lock.
    pub fn is_exclusive(&self) -> bool {
        self.mode == Some(LockMode::Exclusive)
    }

    /// How an object is named in messages.
    pub fn describe(&self, name: &str) -> String {
        self.storage.describe(name)
    }

    /// How a pack is named in messages (its path in a local repository).
    pub fn describe_pack(&self, id: &PackId) -> String {
        self.storage.describe(&storage::pack_name(id))
    }

    /// Whether a backup stores changed chunks as deltas against their
    /// previous versions. That reads each previous version back: free on a
    /// local disk, but from a bucket it downloads about as much as a full
    /// backup stores (measured in `docs/benchmarks.md`, "S3"), every time.
    /// So a remote repository stores changed chunks whole (compressed) unless
    /// `REWINDB_REMOTE_DELTAS=1` says download is cheap where it is.
    pub fn delta_bases(&self) -> bool {
        !self.storage.is_remote()
            || std::env::var_os("REWINDB_REMOTE_DELTAS").is_some_and(|v| v == "1")
    }

    /// Whether writers describe their packs in index objects (remote
    /// repositories: a cold cache reads those instead of every pack's table).
    pub fn writes_index_objects(&self) -> bool {
        self.storage.is_remote()
    }

    /// gc: removes the index objects that describe no pack in `live`.
    pub fn prune_index_objects(&self, live: &HashSet<PackId>) -> Result<usize, RepoError> {
        index_objects::prune(self.storage(), &self.crypto, live)
            .ctx(|| format!("removing stale index objects from {}", self.location()))
    }

    /// The storage, for the modules of this one that name objects themselves.
    pub(crate) fn storage(&self) -> &dyn Storage {
        self.storage.as_ref()
    }

    /// Where a writer sends its sealed packs (in parallel to a remote storage).
    pub(crate) fn pack_uploads(&self) -> upload::PackUploads {
        upload::PackUploads::new(self.storage.clone())
    }

    /// Opens a pack for positioned reads, given its size when the index
    /// knows it (a remote storage then need not ask for it). A missing pack
    /// is `PackMissing`, here or at the first read.
    pub fn open_pack(&self, id: &PackId, len: Option<u64>) -> Result<Box<dyn Object>, RepoError> {
        let name = storage::pack_name(id);
        let opened = match len {
            Some(len) => self.storage.open_sized(&name, len),
            None => self.storage.open(&name),
        };
        opened.map_err(|e| self.pack_error(id, e))
    }

    /// A pack read's I/O error: `PackMissing` when the pack is gone.
    pub fn pack_error(&self, id: &PackId, e: std::io::Error) -> RepoError {
        match is_not_found(&e) {
            true => RepoError::PackMissing {
                pack: *id,
                path: self.describe_pack(id).into(),
            },
            false => RepoError::Io {
                context: format!("reading pack {}", self.describe_pack(id)),
                source: e,
            },
        }
    }

    /// A whole pack's bytes.
    pub fn read_pack(&self, id: &PackId) -> Result<Vec<u8>, RepoError> {
        self.storage
            .get(&storage::pack_name(id))
            .ctx(|| format!("reading {}", self.describe_pack(id)))
    }

    /// Removes packs the index no longer references (gc), durably.
    pub fn delete_packs(&self, ids: &[PackId]) -> Result<(), RepoError> {
        let names: Vec<String> = ids.iter().map(storage::pack_name).collect();
        self.storage
            .delete_many(&names)
            .ctx(|| format!("removing packs from {}", self.location()))
    }

    /// Every pack present in the repository, with its size, by id.
    pub fn pack_files(&self) -> Result<Vec<(PackId, u64)>, RepoError> {
        rebuild::pack_files(self.storage.as_ref())
    }

    /// Reads and validates a pack's entry table without reading its blobs.
    pub fn read_pack_table(&self, pack: &PackId, len: u64) -> Result<Vec<BlobEntry>, String> {
        rebuild::read_pack_table(self.storage.as_ref(), &self.crypto, pack, len)
    }

    /// Rebuilds the index from the packs' tables (`repair index`), beside
    /// the old one, which it then replaces.
    pub fn rebuild_index(&mut self) -> Result<rebuild::RepairReport, RepoError> {
        let storage = self.storage.clone();
        let crypto = self.crypto.clone();
        let mut report = None;
        self.replace_index(|index| {
            // The packs' own tables: a repair trusts nothing else.
            report = Some(rebuild::rebuild(storage.as_ref(), &crypto, index, false)?);
            Ok(())
        })?;
        Ok(report.expect("set by the rebuild"))
    }

    /// Bytes the repository holds under `prefix` ("" for all of it; the
    /// index, which lives beside it or in a cache, not included).
    pub fn stored_bytes(&self, prefix: &str) -> Result<u64, RepoError> {
        Ok(self
            .storage
            .list(prefix)
            .ctx(|| format!("listing {}", self.location()))?
            .iter()
            .map(|o| o.size)
            .sum())
    }

    /// Why the user `uid` (group `gid`), PostgreSQL's, could not archive
    /// WAL of cluster `system_identifier` here: the directories it must enter
    /// and write in a local repository, from their mode bits.
    pub fn wal_access_problems(&self, uid: u32, gid: u32, system_identifier: u64) -> Vec<String> {
        let Some(root) = self.local_dir() else {
            return Vec::new(); // a remote repository: credentials, not modes
        };
        let mut problems = Vec::new();
        let wal_dir = root.join("wal");
        if let Some(dir) = fsutil::may_reach(&wal_dir, uid, gid) {
            problems.push(format!("cannot enter {}", dir.display()));
            return problems;
        }
        let config = root.join("config.json");
        if !fsutil::may(&config, uid, gid, 4) {
            problems.push(format!("cannot read {}", config.display()));
        }
        if !fsutil::may(&wal_dir, uid, gid, 3) {
            problems.push(format!("cannot write {}", wal_dir.display()));
        }
        let cluster = wal_dir.join(system_identifier.to_string());
        if cluster.exists() && !fsutil::may(&cluster, uid, gid, 3) {
            problems.push(format!("cannot write {}", cluster.display()));
        }
        problems
    }

    /// Removes what killed runs left while staging objects, `wal push`'s
    /// uploads included once they are an hour old (gc). Returns the bytes freed.
    pub fn remove_abandoned_uploads(&self) -> Result<u64, RepoError> {
        assert!(self.is_exclusive(), "needs the exclusive lock");
        self.storage
            .remove_abandoned(Some(STALE_WAL_UPLOAD))
            .ctx(|| format!("removing temporary files in {}", self.location()))
    }
}

#[cfg(test)]
mod tests;
