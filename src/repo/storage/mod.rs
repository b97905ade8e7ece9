//! Where a repository's objects live: the one boundary between the repository
//! and a place that stores bytes.
//!
//! A repository is a set of named objects (`config.json`,
//! `packs/ab/<id>.pack`, `snapshots/<id>.json`, `wal/<system id>/<file>`,
//! `protected/<id>`, `gc.json`; see `docs/format.md`). Names use `/` whatever
//! the backend. [`Storage`] is what the repository asks of a backend, named by
//! what each operation does rather than by files:
//!
//! - [`put`](Storage::put) stores an immutable object and never overwrites
//!   one (create-only: the WAL archive's no-clobber rule and content-addressed
//!   packs and snapshots both rest on it);
//! - [`replace`](Storage::replace) swaps a small mutable object atomically
//!   (`gc.json`);
//! - [`get`](Storage::get), [`open`](Storage::open) (positioned reads of one
//!   object), [`stat`](Storage::stat), [`list`](Storage::list) by prefix with
//!   sizes, [`groups`](Storage::groups), [`delete`](Storage::delete);
//! - [`lock`](Storage::lock): shared or exclusive, waiting up to a limit, held
//!   by the returned [`Lease`] and released when the holder dies.
//!
//! The index is not an object: it is a redb file in a local directory
//! ([`Storage::local_dir`] for a local repository, a cache directory
//! otherwise), rebuilt from the packs' own tables when it is missing.
//!
//! Backends: [`local::LocalDir`] (a directory, byte-compatible with every
//! repository made before this boundary existed), [`memory::Memory`] (tests,
//! fuzzing) and [`fault::Faulty`] (wraps another and fails, tears or "crashes"
//! at a chosen operation).

pub mod fault;
pub mod local;
pub mod memory;
#[cfg(feature = "s3")]
pub mod s3;

use std::io;
use std::path::Path;
use std::time::Duration;

use crate::error::RepoError;
use crate::repo::lock::LockMode;

/// An object and its size in bytes, as [`Storage::list`] returns it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectInfo {
    pub name: String,
    pub size: u64,
}

/// An object opened for positioned reads (a pack read blob by blob).
pub trait Object: Send + Sync {
    fn len(&self) -> u64;
    /// Fills `buf` from `offset`; an object shorter than that is `UnexpectedEof`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A held lock: shared or exclusive until dropped. A lease of a process that
/// dies ends without it (the kernel drops a file lock; an object-store lease
/// expires, see `docs/format.md`).
pub struct Lease(#[allow(dead_code)] Box<dyn Send + Sync>);

impl Lease {
    pub fn new(holder: impl Send + Sync + 'static) -> Lease {
        Lease(Box::new(holder))
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lease")
    }
}

/// What a repository needs from the place its objects live. Every
/// operation is durable when it returns `Ok`.
pub trait Storage: Send + Sync {
    /// The repository's address, for messages (a directory path or a URL).
    fn location(&self) -> String;

    /// How an object is named in messages (`/backups/repo/packs/ab/….pack`).
    fn describe(&self, name: &str) -> String {
        format!("{}/{name}", self.location().trim_end_matches('/'))
    }

    /// Stores an immutable object. Never overwrites: when `name` exists the
    /// call fails with [`io::ErrorKind::AlreadyExists`] and changes nothing.
    /// A crash leaves the object complete or absent, never torn.
    fn put(&self, name: &str, data: &[u8]) -> io::Result<()>;

    /// As [`put`](Self::put), for bytes the caller gives away (a sealed
    /// pack): a backend that sends them on can do so without a copy.
    fn put_owned(&self, name: &str, data: Vec<u8>) -> io::Result<()> {
        self.put(name, &data)
    }

    /// Replaces (or creates) a small mutable object atomically: a reader
    /// sees the old bytes or the new ones.
    fn replace(&self, name: &str, data: &[u8]) -> io::Result<()>;

    /// A whole object; a missing one is [`io::ErrorKind::NotFound`].
    fn get(&self, name: &str) -> io::Result<Vec<u8>>;

    /// Opens an object for positioned reads.
    fn open(&self, name: &str) -> io::Result<Box<dyn Object>>;

    /// As [`open`](Self::open), for an object whose size the caller knows
    /// (a remote storage need not ask for it). A missing object may show
    /// only at the first read, as [`io::ErrorKind::NotFound`].
    fn open_sized(&self, name: &str, _len: u64) -> io::Result<Box<dyn Object>> {
        self.open(name)
    }

    /// `len` bytes of an object from `offset`.
    fn get_range(&self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.open(name)?.read_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// An object's size, or `None` when it does not exist.
    fn stat(&self, name: &str) -> io::Result<Option<u64>>;

    /// Every object whose name starts with `prefix`, sorted by name. Staging
    /// leftovers and the local index are not objects and are not listed.
    fn list(&self, prefix: &str) -> io::Result<Vec<ObjectInfo>>;

    /// The distinct next path components below `prefix` (which ends in `/`):
    /// `groups("wal/")` lists the clusters without listing their files.
    fn groups(&self, prefix: &str) -> io::Result<Vec<String>>;

    /// Removes an object; one already gone is not an error.
    fn delete(&self, name: &str) -> io::Result<()>;

    /// Removes several objects (durable together when it returns).
    fn delete_many(&self, names: &[String]) -> io::Result<()> {
        names.iter().try_for_each(|n| self.delete(n))
    }

    /// Takes the repository lock, waiting up to `wait`.
    fn lock(&self, mode: LockMode, wait: Duration) -> Result<Lease, RepoError>;

    /// Removes what killed writers left while staging objects. Called by the
    /// holder of the exclusive lock, so nothing is staging but `wal push`,
    /// whose uploads are removed only when older than `wal_older_than`.
    /// Returns the bytes removed.
    fn remove_abandoned(&self, wal_older_than: Option<Duration>) -> io::Result<u64>;

    /// Why the place the repository should be in does not exist (a bucket
    /// that is not there), asked when `config.json` is missing; `None` when
    /// it exists or the storage has no such notion.
    fn missing_container(&self) -> Option<String> {
        None
    }

    /// Whether objects travel over a network: a repository created there
    /// gets larger packs (fewer requests).
    fn is_remote(&self) -> bool {
        false
    }

    /// How many sealed packs are uploaded at once ([`crate::repo::upload`]);
    /// 1 stores them in order in the writer's thread.
    fn parallel_uploads(&self) -> usize {
        1
    }

    /// The repository's own directory when it is one on this machine (the
    /// index lives there; PostgreSQL permission checks look at it).
    fn local_dir(&self) -> Option<&Path> {
        None
    }
}

/// `packs/ab/<hex>.pack`: packs are spread over 256 directories (`docs/format.md`).
pub fn pack_name(id: &crate::id::PackId) -> String {
    let hex = id.to_hex();
    format!("packs/{}/{hex}.pack", &hex[..2])
}

/// `snapshots/<hex>.json`.
pub fn snapshot_name(id: &crate::id::SnapshotId) -> String {
    format!("snapshots/{}.json", id.to_hex())
}

/// The id an object is named by (`<dir>/<hex id><suffix>`), if it is one.
pub fn id_in_name<T: std::str::FromStr>(name: &str, suffix: &str) -> Option<T> {
    name.rsplit('/').next()?.strip_suffix(suffix)?.parse().ok()
}

/// Whether an I/O error says the object is not there.
pub fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

#[cfg(test)]
mod tests;
