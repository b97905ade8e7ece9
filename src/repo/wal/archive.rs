//! The WAL archive of one repository: each archived file one object,
//! `wal/<system identifier>/<WAL file name>`, stored create-only so that two
//! pushes never overwrite each other and no lock is needed.

use super::{ArchivedHeader, HEADER_LEN, ReadAt, WalName, decode_archived, pack};
use crate::crypto::{Crypto, aad};
use crate::error::{IoContext, RepoError};
use crate::repo::storage::{Storage, is_not_found};

/// The WAL archive of one repository.
pub struct WalArchive<'s> {
    storage: &'s dyn Storage,
    crypto: &'s Crypto,
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
    pub fn new(storage: &'s dyn Storage, crypto: &'s Crypto) -> WalArchive<'s> {
        WalArchive { storage, crypto }
    }

    /// An archive file as stored: in an encrypted repository its header and
    /// its body sealed apart (the header alone is read to list push times),
    /// each bound to the object's name.
    fn seal(&self, object: &str, plain: Vec<u8>) -> Vec<u8> {
        if !self.crypto.is_encrypted() {
            return plain; // no copy on the plain push path
        }
        let (header, body) = plain.split_at(HEADER_LEN);
        let mut out = self.crypto.seal(&aad::wal("header", object), header);
        self.crypto
            .seal_to(&aad::wal("body", object), body, &mut out);
        out
    }

    /// The bytes [`seal`](Self::seal) sealed.
    fn open(&self, object: &str, stored: Vec<u8>) -> Result<Vec<u8>, String> {
        if !self.crypto.is_encrypted() {
            return Ok(stored);
        }
        let split = (HEADER_LEN + crate::crypto::OVERHEAD).min(stored.len());
        let (header, body) = stored.split_at(split);
        let fail = |e: crate::crypto::Unauthentic| format!("archive file {e}");
        let mut plain = self
            .crypto
            .open(&aad::wal("header", object), header)
            .map_err(fail)?
            .into_owned();
        plain.extend_from_slice(
            &self
                .crypto
                .open(&aad::wal("body", object), body)
                .map_err(fail)?,
        );
        Ok(plain)
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
        let stored = self.seal(&object, stored);
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
        self.open(&object, bytes)
            .and_then(|bytes| decode_archived(&bytes))
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
        let sealed_len = HEADER_LEN + self.crypto.overhead();
        let bytes = match self.storage.get_range(&object, 0, sealed_len) {
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
        let bytes = match self.crypto.is_encrypted() {
            true => self
                .crypto
                .open(&aad::wal("header", &object), &bytes)
                .map_err(|e| {
                    RepoError::corrupt(
                        format!("WAL archive file {}", describe()),
                        format!("header {e}"),
                    )
                })?
                .into_owned(),
            false => bytes,
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
