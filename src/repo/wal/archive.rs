//! The WAL archive of one repository: each archived file one object,
//! `wal/<system identifier>/<WAL file name>`, stored create-only so that two
//! pushes never overwrite each other and no lock is needed.

use super::{ArchivedHeader, HEADER_LEN, ReadAt, WalName, decode_archived, pack};
use crate::error::{IoContext, RepoError};
use crate::repo::storage::{Storage, is_not_found};

/// The WAL archive of one repository.
pub struct WalArchive<'s> {
    storage: &'s dyn Storage,
}

/// What `push` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    Stored,
    /// The same file was already archived (PostgreSQL retries a push whose
    /// success it did not see).
    AlreadyArchived,
}

impl<'s> WalArchive<'s> {
    pub fn new(storage: &'s dyn Storage) -> WalArchive<'s> {
        WalArchive { storage }
    }

    fn object(system_identifier: u64, name: &WalName) -> String {
        format!("wal/{system_identifier}/{name}")
    }

    /// How a cluster's part of the archive is named in messages (its directory).
    pub fn describe_cluster(&self, system_identifier: u64) -> String {
        self.storage.describe(&format!("wal/{system_identifier}"))
    }

    /// How an archived file is named in messages (its path).
    pub fn describe(&self, system_identifier: u64, name: &WalName) -> String {
        self.storage
            .describe(&Self::object(system_identifier, name))
    }

    /// The clusters (system identifiers) that have WAL in the archive.
    pub fn clusters(&self) -> Result<Vec<u64>, RepoError> {
        let groups = self
            .storage
            .groups("wal/")
            .ctx(|| format!("listing {}", self.storage.describe("wal")))?;
        let mut out: Vec<u64> = groups.iter().filter_map(|g| g.parse().ok()).collect();
        out.sort();
        Ok(out)
    }

    /// Archives the file of `len` bytes that `source` reads (at an offset)
    /// as `name` for the cluster `system_identifier`: durable before it
    /// returns. An identical file already archived is success; a different
    /// one is an error, and nothing is overwritten.
    pub fn push(
        &self,
        system_identifier: u64,
        name: &WalName,
        source: &(impl ReadAt + Sync + ?Sized),
        len: u64,
    ) -> Result<Pushed, RepoError> {
        let object = Self::object(system_identifier, name);
        let (hash, compression, mut stored) =
            pack(source, len, HEADER_LEN).ctx(|| format!("compressing {name}"))?;
        let header = ArchivedHeader {
            compression,
            raw_len: len,
            blake3: *hash.as_bytes(),
            pushed_at: jiff::Timestamp::now(),
        };
        stored[..HEADER_LEN].copy_from_slice(&header.encode());
        match self.storage.put(&object, &stored) {
            Ok(()) => Ok(Pushed::Stored),
            // Of two pushes racing, or a retry of one whose success
            // PostgreSQL did not see, one stored it: compare with that.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                self.compare_existing(system_identifier, name, len, &hash)
            }
            Err(e) => Err(e).ctx(|| format!("writing {}", self.storage.describe(&object))),
        }
    }

    /// A push found `name` already archived (durably: `put` says so only then).
    fn compare_existing(
        &self,
        system_identifier: u64,
        name: &WalName,
        len: u64,
        hash: &blake3::Hash,
    ) -> Result<Pushed, RepoError> {
        let conflict = |detail: String| RepoError::WalConflict {
            name: name.to_string(),
            path: self.describe(system_identifier, name).into(),
            detail,
        };
        match self.read(system_identifier, name) {
            Ok(Some(stored)) if blake3::hash(&stored) == *hash => Ok(Pushed::AlreadyArchived),
            Ok(Some(stored)) => Err(conflict(format!(
                "the archived copy has {} bytes and blake3 {}, the one pushed now {len} bytes \
                 and blake3 {hash}",
                stored.len(),
                blake3::hash(&stored),
            ))),
            Ok(None) => Err(conflict(
                "the archived copy was removed while this push compared with it".into(),
            )),
            Err(e) => Err(conflict(format!("the archived copy cannot be read ({e})"))),
        }
    }

    /// Whether `name` of cluster `system_identifier` is archived.
    pub fn contains(&self, system_identifier: u64, name: &WalName) -> Result<bool, RepoError> {
        let object = Self::object(system_identifier, name);
        Ok(self
            .storage
            .stat(&object)
            .ctx(|| format!("reading {}", self.storage.describe(&object)))?
            .is_some())
    }

    /// Reads an archived file back, verified against its blake3; `None` when
    /// it is not archived (or was removed since it was listed).
    pub fn read(
        &self,
        system_identifier: u64,
        name: &WalName,
    ) -> Result<Option<Vec<u8>>, RepoError> {
        let object = Self::object(system_identifier, name);
        let bytes = match self.storage.get(&object) {
            Ok(b) => b,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e).ctx(|| format!("reading {}", self.storage.describe(&object))),
        };
        decode_archived(&bytes)
            .map(|(_, raw)| Some(raw))
            .map_err(|detail| {
                RepoError::corrupt(
                    format!("WAL file {name} ({})", self.storage.describe(&object)),
                    detail,
                )
            })
    }

    /// Reads only an archived file's header; `None` when it is not archived.
    pub fn header(
        &self,
        system_identifier: u64,
        name: &WalName,
    ) -> Result<Option<ArchivedHeader>, RepoError> {
        let object = Self::object(system_identifier, name);
        let describe = || self.storage.describe(&object);
        let bytes = match self.storage.get_range(&object, 0, HEADER_LEN) {
            Ok(b) => b,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(RepoError::corrupt(
                    format!("WAL archive file {}", describe()),
                    "shorter than its header".to_string(),
                ));
            }
            Err(e) => return Err(e).ctx(|| format!("reading {}", describe())),
        };
        ArchivedHeader::decode(&bytes)
            .map(Some)
            .map_err(|e| RepoError::corrupt(format!("WAL archive file {}", describe()), e))
    }

    /// Every file archived for a cluster, by name.
    pub fn list(&self, system_identifier: u64) -> Result<Vec<WalName>, RepoError> {
        Ok(self
            .sizes(system_identifier)?
            .into_iter()
            .map(|(n, _)| n)
            .collect())
    }

    /// Every file archived for a cluster, by name, with its stored size.
    pub fn sizes(&self, system_identifier: u64) -> Result<Vec<(WalName, u64)>, RepoError> {
        let prefix = format!("wal/{system_identifier}/");
        let mut out: Vec<(WalName, u64)> = self
            .storage
            .list(&prefix)
            .ctx(|| format!("listing {}", self.describe_cluster(system_identifier)))?
            .into_iter()
            .filter_map(|o| Some((WalName::parse(&o.name[prefix.len()..]).ok()?, o.size)))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Copies, as they are stored, the files of cluster `system_identifier`
    /// that `to` lacks (`copy`). Returns how many it copied.
    pub fn copy_missing(&self, system_identifier: u64, to: &WalArchive) -> Result<u64, RepoError> {
        let there: std::collections::HashSet<WalName> =
            to.list(system_identifier)?.into_iter().collect();
        let mut copied = 0;
        for name in self.list(system_identifier)? {
            if there.contains(&name) {
                continue;
            }
            let object = Self::object(system_identifier, &name);
            let bytes = match self.storage.get(&object) {
                Ok(b) => b,
                Err(e) if is_not_found(&e) => continue, // removed since the listing
                Err(e) => {
                    return Err(e).ctx(|| format!("reading {}", self.storage.describe(&object)));
                }
            };
            match to.storage.put(&object, &bytes) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(e).ctx(|| format!("writing {}", to.storage.describe(&object)));
                }
                _ => copied += 1,
            }
        }
        Ok(copied)
    }

    /// Removes archived files (gc: WAL no retained base backup needs), durably.
    pub fn remove(&self, files: &[(u64, WalName)]) -> Result<(), RepoError> {
        let names: Vec<String> = files
            .iter()
            .map(|(sysid, name)| Self::object(*sysid, name))
            .collect();
        self.storage
            .delete_many(&names)
            .ctx(|| format!("removing WAL from {}", self.storage.describe("wal")))
    }
}
