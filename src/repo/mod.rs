//! The content-addressed repository: a directory of packs, snapshots, an index and a config.
//!
//! [`Repository`] opens (or creates) the directory and takes the lock;
//! [`writer::BlobWriter`] stores new blobs durably; [`reader::BlobReader`]
//! reads and verifies them. The layout and byte formats are in
//! `docs/format.md`; the promises the code keeps are in `docs/ARCHITECTURE.md`.

pub mod delta;
pub mod fsutil;
pub mod index;
pub mod lock;
pub mod pack;
pub mod reader;
pub mod snapshot;
pub mod wal;
pub mod writer;

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::error::{IoContext, RepoError};
use crate::id::{PackId, SnapshotId};
use index::Index;
use lock::{LockMode, RepoLock};
use pack::BlobEntry;
use snapshot::Snapshot;

/// The newest repository format this build reads and writes. Version 2
/// added `pg_chunk` to the chunker parameters: a build that knows only
/// version 1 would ignore it and cut PostgreSQL files differently from the
/// repository's earlier backups, so it must refuse the repository. Version 1
/// repositories are read and written as they are (single-page chunks).
pub const FORMAT_VERSION: u32 = 2;
const CONFIG_FORMAT: &str = "rewindb-repository";

/// `config.json`: written once by `init`, never changed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Config {
    pub format: String,
    pub version: u32,
    pub id: String,
    pub chunker: ChunkerParams,
    /// zstd level for new blobs.
    pub compression_level: i32,
    /// New blobs are compressed together in frames of about this many bytes.
    pub frame_target_bytes: u64,
    /// A pack is sealed once its frames reach this many bytes.
    pub pack_target_bytes: u64,
}

impl Config {
    fn new(root: &Path) -> Config {
        let seed = format!(
            "{}|{}|{}",
            root.display(),
            std::process::id(),
            jiff::Timestamp::now()
        );
        Config {
            format: CONFIG_FORMAT.into(),
            version: FORMAT_VERSION,
            id: blake3::hash(seed.as_bytes()).to_hex()[..16].to_string(),
            chunker: ChunkerParams::default(),
            compression_level: 3,
            frame_target_bytes: 64 * 1024,
            pack_target_bytes: 16 << 20,
        }
    }
}

impl Config {
    /// Sizes the pack format can address (`docs/format.md`): frames are
    /// refused above `MAX_FRAME_LEN` and pack offsets are 32-bit.
    fn validate(&self) -> Result<(), String> {
        self.chunker.validate()?;
        let frame_max = u64::from(pack::MAX_FRAME_LEN) / 2;
        if !(4096..=frame_max).contains(&self.frame_target_bytes) {
            return Err(format!("frame_target_bytes must be 4096..={frame_max}"));
        }
        if !(65536..=1 << 30).contains(&self.pack_target_bytes) {
            return Err("pack_target_bytes must be 65536..=1073741824".into());
        }
        if !(1..=19).contains(&self.compression_level) {
            return Err("compression_level must be 1..=19".into());
        }
        Ok(())
    }
}

/// An open repository. Holds the lock it was opened with until dropped.
pub struct Repository {
    root: PathBuf,
    config: Config,
    index: std::sync::OnceLock<Index>,
    mode: Option<LockMode>,
    _lock: Option<RepoLock>,
}

/// How to open a repository.
#[derive(Clone, Copy, Debug)]
pub struct OpenOptions {
    /// `None` reads only files that are written atomically (snapshots, config)
    /// and takes no lock.
    pub lock: Option<LockMode>,
    pub lock_wait: Duration,
}

impl Repository {
    /// Creates a new repository at `root`, which must be missing or empty.
    ///
    /// A missing `root` is built in a temporary directory beside it and
    /// renamed into place, so a killed `init` leaves nothing there (at most
    /// a `.rewindb-init-*` directory beside it). An existing empty directory
    /// (a mount point, or one made for rewindb in a parent it cannot write)
    /// is initialised in place with `config.json` written last; what a killed
    /// init left in it is taken up by the next one.
    pub fn init(root: &Path) -> Result<(), RepoError> {
        let root = &std::path::absolute(root).ctx(|| format!("resolving {}", root.display()))?;
        let exists = || RepoError::AlreadyExists {
            path: root.to_path_buf(),
        };
        if root.join("config.json").exists() || (root.exists() && !root.is_dir()) {
            return Err(exists());
        }
        let io = |what: &str| format!("creating {what} for {}", root.display());
        if root.is_dir() {
            // An existing directory (a mount point, or one made for us in a
            // parent we cannot write) is initialised in place, never renamed
            // over: config.json comes last, so until then it is no
            // repository, and what a killed init left is taken up again.
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
            Self::lay_out(root, root)?;
            return fsutil::sync_dir(root).ctx(|| io("the repository directory"));
        }
        let parent = root.parent().unwrap_or(Path::new("/"));
        fsutil::create_dir_durable(parent).ctx(|| io("the parent directory"))?;
        let staging = tempfile::Builder::new()
            .prefix(".rewindb-init-")
            .tempdir_in(parent)
            .ctx(|| io("a staging directory"))?;
        Self::lay_out(staging.path(), root)?;
        // rename(2) moves the finished repository to the missing `root`.
        let staged = staging.keep();
        if let Err(e) = fs::rename(&staged, root) {
            let _ = fs::remove_dir_all(&staged);
            // Another process (a second cron job's first backup) got there first.
            if root.join("config.json").is_file() {
                return Ok(());
            }
            return Err(e).ctx(|| io("the repository directory"));
        }
        fsutil::sync_dir(parent).ctx(|| io("the repository directory"))
    }

    /// Creates a repository's layout in `dir`, config.json last (durable),
    /// for a repository that will live at `root`.
    fn lay_out(dir: &Path, root: &Path) -> Result<(), RepoError> {
        let io = |what: &str| format!("creating {what} for {}", root.display());
        let mkdir = |path: &Path| match fs::create_dir(path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        };
        for sub in ["packs", "snapshots", "tmp", "wal"] {
            mkdir(&dir.join(sub)).ctx(|| io(sub))?;
        }
        for byte in 0..=255u8 {
            mkdir(&dir.join("packs").join(format!("{byte:02x}"))).ctx(|| io("packs"))?;
        }
        fsutil::sync_dir(&dir.join("packs")).ctx(|| io("packs"))?;
        // An index left by a killed init holds nothing: made anew.
        let index = dir.join("index.redb");
        if index.exists() {
            fs::remove_file(&index).ctx(|| io("index.redb"))?;
        }
        drop(Index::create(&index)?);
        fsutil::sync_dir(dir).ctx(|| io("the repository directory"))?;
        let config = Config::new(root);
        let bytes = serde_json::to_vec_pretty(&config).expect("config serialises");
        fsutil::write_atomic(&dir.join("tmp"), &dir.join("config.json"), &bytes)
            .ctx(|| io("config.json"))
    }

    /// Opens an existing repository.
    pub fn open(root: &Path, opts: OpenOptions) -> Result<Repository, RepoError> {
        let root = &std::path::absolute(root).ctx(|| format!("resolving {}", root.display()))?;
        if !root.exists() {
            return Err(RepoError::NotFound {
                path: root.to_path_buf(),
                reason: "the directory does not exist".into(),
            });
        }
        let config_path = root.join("config.json");
        if !config_path.is_file() {
            return Err(RepoError::NotARepository {
                path: root.to_path_buf(),
                reason: "it has no config.json".into(),
            });
        }
        let lock = match opts.lock {
            Some(mode) => Some(RepoLock::acquire(root, mode, opts.lock_wait)?),
            None => None,
        };
        let bytes = fs::read(&config_path).ctx(|| format!("reading {}", config_path.display()))?;
        let config: Config =
            serde_json::from_slice(&bytes).map_err(|e| RepoError::NotARepository {
                path: root.to_path_buf(),
                reason: format!("config.json is not valid: {e}"),
            })?;
        if config.format != CONFIG_FORMAT {
            return Err(RepoError::NotARepository {
                path: root.to_path_buf(),
                reason: format!("config.json names format {:?}", config.format),
            });
        }
        if config.version > FORMAT_VERSION {
            return Err(RepoError::UnsupportedVersion {
                path: root.to_path_buf(),
                found: config.version,
                supported: FORMAT_VERSION,
            });
        }
        config.validate().map_err(|e| RepoError::NotARepository {
            path: root.to_path_buf(),
            reason: format!("config.json: {e}"),
        })?;
        let mut repo = Repository {
            root: root.to_path_buf(),
            config,
            index: std::sync::OnceLock::new(),
            mode: opts.lock,
            _lock: lock,
        };
        match opts.lock {
            Some(LockMode::Shared) => repo.recover_index_for_readers(opts.lock_wait)?,
            Some(LockMode::Exclusive) => repo.remove_stale_temp_files()?,
            None => {}
        }
        Ok(repo)
    }

    /// Under the exclusive lock nobody else writes to `tmp/`: anything there
    /// is a partial pack or snapshot from a run that was killed.
    fn remove_stale_temp_files(&self) -> Result<(), RepoError> {
        let tmp = self.tmp_dir();
        for f in fs::read_dir(&tmp).ctx(|| format!("listing {}", tmp.display()))? {
            let path = f.ctx(|| format!("listing {}", tmp.display()))?.path();
            if path.is_file() {
                tracing::debug!("removing stale temporary file {}", path.display());
                fs::remove_file(&path).ctx(|| format!("removing {}", path.display()))?;
            }
        }
        Ok(())
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
        self._lock = None;
        {
            let _exclusive = RepoLock::acquire(&self.root, LockMode::Exclusive, wait)?;
            // Any error is reported again by the read-only open in index().
            let _ = Index::open(&path, true);
        }
        self._lock = Some(RepoLock::acquire(&self.root, LockMode::Shared, wait)?);
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn index_path(&self) -> PathBuf {
        self.root.join("index.redb")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// The index, opened on first use (writable under the exclusive lock).
    pub fn index(&self) -> Result<&Index, RepoError> {
        if self.index.get().is_none() {
            let writable = match self.mode {
                Some(LockMode::Exclusive) => true,
                Some(LockMode::Shared) => false,
                None => panic!("the index needs a repository lock"),
            };
            let _ = self.index.set(Index::open(&self.index_path(), writable)?);
        }
        Ok(self.index.get().expect("opened above"))
    }

    /// Compacts the index when at least `min_fraction` of its file is free
    /// space (redb is copy-on-write: each backup's commit leaves the pages it
    /// replaced free, and the file grows by them). Returns (before, after)
    /// file lengths when it compacted.
    pub fn compact_index(&mut self, min_fraction: f64) -> Result<Option<(u64, u64)>, RepoError> {
        assert!(self.is_exclusive(), "compaction needs the exclusive lock");
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
        let after = fs::metadata(&path)
            .ctx(|| format!("reading {}", path.display()))?
            .len();
        Ok(Some((len, after)))
    }

    /// Closes the index (so that `repair` can replace the file).
    pub fn close_index(&mut self) {
        self.index.take();
    }

    /// Whether this handle holds the exclusive lock.
    pub fn is_exclusive(&self) -> bool {
        self.mode == Some(LockMode::Exclusive)
    }

    pub fn pack_path(&self, id: &PackId) -> PathBuf {
        let hex = id.to_hex();
        self.root.join("packs").join(&hex[..2]).join(hex + ".pack")
    }

    /// Every pack file present on disk.
    pub fn pack_files(&self) -> Result<Vec<(PackId, PathBuf, u64)>, RepoError> {
        let mut out = Vec::new();
        let packs = self.root.join("packs");
        for dir in fs::read_dir(&packs).ctx(|| format!("listing {}", packs.display()))? {
            let dir = dir.ctx(|| format!("listing {}", packs.display()))?.path();
            if !dir.is_dir() {
                continue;
            }
            for f in fs::read_dir(&dir).ctx(|| format!("listing {}", dir.display()))? {
                let f = f.ctx(|| format!("listing {}", dir.display()))?;
                let path = f.path();
                let Some(id) = id_from_file_name::<PackId>(&path, ".pack") else {
                    continue;
                };
                let len = f
                    .metadata()
                    .ctx(|| format!("stat {}", path.display()))?
                    .len();
                out.push((id, path, len));
            }
        }
        out.sort_by_key(|(id, _, _)| *id);
        Ok(out)
    }

    /// Reads and validates a pack's entry table without reading its blobs.
    pub fn read_pack_table(&self, pack: &PackId, len: u64) -> Result<Vec<BlobEntry>, String> {
        use std::os::unix::fs::FileExt;
        let file = fs::File::open(self.pack_path(pack)).map_err(|e| e.to_string())?;
        if len < pack::TRAILER_LEN as u64 {
            return Err("too short to be a pack".into());
        }
        let mut trailer = [0u8; pack::TRAILER_LEN];
        file.read_exact_at(&mut trailer, len - pack::TRAILER_LEN as u64)
            .map_err(|e| e.to_string())?;
        let (table_len, hash) = pack::decode_trailer(len, &trailer).map_err(|e| e.0)?;
        let mut table = vec![0u8; table_len];
        file.read_exact_at(&mut table, len - (pack::TRAILER_LEN + table_len) as u64)
            .map_err(|e| e.to_string())?;
        pack::decode_entries(len, &table, &hash).map_err(|e| e.0)
    }

    fn snapshot_path(&self, id: &SnapshotId) -> PathBuf {
        self.root
            .join("snapshots")
            .join(format!("{}.json", id.to_hex()))
    }

    /// Makes a snapshot visible. Call only once everything it references is durable.
    pub fn commit_snapshot(&self, snap: &Snapshot) -> Result<SnapshotId, RepoError> {
        let (id, bytes) = snap.encode();
        let path = self.snapshot_path(&id);
        fsutil::write_atomic(&self.tmp_dir(), &path, &bytes)
            .ctx(|| format!("writing snapshot {}", path.display()))?;
        Ok(id)
    }

    /// When the last gc finished (`gc.json`), if one ever did.
    pub fn last_gc(&self) -> Result<Option<jiff::Timestamp>, RepoError> {
        let path = self.root.join("gc.json");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).ctx(|| format!("reading {}", path.display())),
        };
        #[derive(Deserialize)]
        struct Last {
            time: jiff::Timestamp,
        }
        let last: Last = serde_json::from_slice(&bytes)
            .map_err(|e| RepoError::corrupt(format!("{}", path.display()), e.to_string()))?;
        Ok(Some(last.time))
    }

    /// Records that a gc finished at `time` (read by `run` to space gc runs).
    pub fn record_gc(&self, time: jiff::Timestamp) -> Result<(), RepoError> {
        let path = self.root.join("gc.json");
        let bytes = serde_json::to_vec(&serde_json::json!({ "time": time })).expect("serialises");
        fsutil::write_atomic(&self.tmp_dir(), &path, &bytes)
            .ctx(|| format!("writing {}", path.display()))
    }

    fn protected_dir(&self) -> PathBuf {
        self.root.join("protected")
    }

    /// Snapshots that no retention policy removes (`rewindb protect`): one
    /// empty file `protected/<snapshot id>` each.
    pub fn protected(&self) -> Result<HashSet<SnapshotId>, RepoError> {
        let dir = self.protected_dir();
        let mut out = HashSet::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).ctx(|| format!("listing {}", dir.display())),
        };
        for f in entries {
            let path = f.ctx(|| format!("listing {}", dir.display()))?.path();
            if let Some(id) = id_from_file_name::<SnapshotId>(&path, "") {
                out.insert(id);
            }
        }
        Ok(out)
    }

    /// Protects a snapshot from retention policies, or lifts the protection.
    pub fn set_protected(&self, id: &SnapshotId, on: bool) -> Result<(), RepoError> {
        let dir = self.protected_dir();
        let path = dir.join(id.to_hex());
        if on {
            fsutil::create_dir_durable(&dir).ctx(|| format!("creating {}", dir.display()))?;
            fsutil::write_atomic(&self.tmp_dir(), &path, b"")
                .ctx(|| format!("writing {}", path.display()))
        } else {
            match fs::remove_file(&path) {
                Ok(()) => fsutil::sync_dir(&dir).ctx(|| format!("syncing {}", dir.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e).ctx(|| format!("removing {}", path.display())),
            }
        }
    }

    /// Removes a snapshot's file (`forget`); the data only it referenced
    /// stays in the packs until `gc`. Needs the exclusive lock.
    pub fn remove_snapshot(&self, id: &SnapshotId) -> Result<(), RepoError> {
        assert!(self.is_exclusive(), "forgetting needs the exclusive lock");
        let path = self.snapshot_path(id);
        fs::remove_file(&path).ctx(|| format!("removing snapshot {}", path.display()))?;
        let dir = self.root.join("snapshots");
        fsutil::sync_dir(&dir).ctx(|| format!("syncing {}", dir.display()))
    }

    /// All snapshots, oldest first, and the snapshot files that could not be read.
    pub fn snapshots(&self) -> Result<SnapshotList, RepoError> {
        let dir = self.root.join("snapshots");
        let mut list = SnapshotList::default();
        for f in fs::read_dir(&dir).ctx(|| format!("listing {}", dir.display()))? {
            let path = f.ctx(|| format!("listing {}", dir.display()))?.path();
            let Some(id) = id_from_file_name::<SnapshotId>(&path, ".json") else {
                continue;
            };
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                // Forgotten since the listing (readers take no lock against `forget`).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).ctx(|| format!("reading {}", path.display())),
            };
            match Snapshot::decode(&id, &bytes) {
                Ok(s) => list.ok.push((id, s)),
                Err(e) => list.damaged.push((id, e)),
            }
        }
        list.ok
            .sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(list)
    }
}

/// The id a repository file is named by (`<hex id><suffix>`); other files are ignored.
fn id_from_file_name<T: std::str::FromStr>(path: &Path, suffix: &str) -> Option<T> {
    path.file_name()?
        .to_str()?
        .strip_suffix(suffix)?
        .parse()
        .ok()
}

#[derive(Default)]
pub struct SnapshotList {
    pub ok: Vec<(SnapshotId, Snapshot)>,
    /// Snapshot files that exist but do not parse or do not match their id.
    pub damaged: Vec<(SnapshotId, String)>,
}

impl SnapshotList {
    /// Finds a snapshot by `latest` or a unique prefix of its id (at least 4 hex digits).
    pub fn find(&self, spec: &str) -> Result<&(SnapshotId, Snapshot), RepoError> {
        if spec == "latest" {
            return self.ok.last().ok_or_else(|| {
                RepoError::UnknownSnapshot("latest (the repository has no snapshots)".into())
            });
        }
        let spec_lc = spec.to_ascii_lowercase();
        if spec_lc.len() < 4 || !spec_lc.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RepoError::UnknownSnapshot(spec.to_string()));
        }
        let mut found = self
            .ok
            .iter()
            .filter(|(id, _)| id.to_hex().starts_with(&spec_lc));
        match (found.next(), found.next()) {
            (Some(s), None) => Ok(s),
            (Some(_), Some(_)) => Err(RepoError::AmbiguousSnapshot(spec.to_string())),
            (None, _) => Err(RepoError::UnknownSnapshot(spec.to_string())),
        }
    }
}
