//! The chunk index: chunk id → (pack, place in the pack), kept in redb.
//!
//! The index is a cache of what the packs' own entry tables say (invariant 3 in
//! `docs/ARCHITECTURE.md`): `repair index`
//! ([`crate::commands::maintenance::repair_index`]) recreates it from the
//! packs, so losing it loses no backup. Entries are added only after their pack is
//! durable on disk, in one transaction per backup.

use std::path::{Path, PathBuf};

use redb::{Database, ReadOnlyDatabase, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::RepoError;
use crate::id::{ChunkId, PackId};
use crate::repo::pack::BlobEntry;

/// chunk id → pack id (32 bytes) followed by the blob's location (18 bytes).
const CHUNKS: TableDefinition<&[u8; 32], &[u8; 50]> = TableDefinition::new("chunks");
/// pack id → pack file length in bytes.
const PACKS: TableDefinition<&[u8; 32], u64> = TableDefinition::new("packs");

enum Db {
    ReadWrite(Database),
    ReadOnly(ReadOnlyDatabase),
}

pub struct Index {
    db: Db,
    path: PathBuf,
}

/// A pack that has been written and fsynced, with the blobs it holds.
pub struct SealedPack {
    pub id: PackId,
    pub len: u64,
    pub entries: Vec<BlobEntry>,
}

/// A consistent read view of the index.
pub struct IndexView {
    chunks: redb::ReadOnlyTable<&'static [u8; 32], &'static [u8; 50]>,
    packs: redb::ReadOnlyTable<&'static [u8; 32], u64>,
    path: PathBuf,
}

fn index_err(path: &Path, e: impl std::fmt::Display) -> RepoError {
    RepoError::Index {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// redb's page cache. Its default is 1 GiB, so a process came to hold all of
/// the index it had read: 16 MiB after a 4 GiB database's backups. Misses
/// are reads from the operating system's cache.
const CACHE_BYTES: usize = 4 << 20;

impl Index {
    /// Creates a new, empty index at `path`.
    pub fn create(path: &Path) -> Result<Index, RepoError> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| index_err(path, e))?;
        let txn = db.begin_write().map_err(|e| index_err(path, e))?;
        {
            txn.open_table(CHUNKS).map_err(|e| index_err(path, e))?;
            txn.open_table(PACKS).map_err(|e| index_err(path, e))?;
        }
        txn.commit().map_err(|e| index_err(path, e))?;
        Ok(Index {
            db: Db::ReadWrite(db),
            path: path.to_path_buf(),
        })
    }

    /// Opens the index; `writable` needs the repository's exclusive lock.
    pub fn open(path: &Path, writable: bool) -> Result<Index, RepoError> {
        if !path.exists() {
            return Err(index_err(path, "the file is missing"));
        }
        let db = if writable {
            Db::ReadWrite(
                Database::builder()
                    .set_cache_size(CACHE_BYTES)
                    .open(path)
                    .map_err(|e| index_err(path, e))?,
            )
        } else {
            Db::ReadOnly(
                Database::builder()
                    .set_cache_size(CACHE_BYTES)
                    .open_read_only(path)
                    .map_err(|e| index_err(path, e))?,
            )
        };
        Ok(Index {
            db,
            path: path.to_path_buf(),
        })
    }

    fn begin_read(&self) -> Result<redb::ReadTransaction, RepoError> {
        match &self.db {
            Db::ReadWrite(db) => db.begin_read(),
            Db::ReadOnly(db) => db.begin_read(),
        }
        .map_err(|e| index_err(&self.path, e))
    }

    pub fn view(&self) -> Result<IndexView, RepoError> {
        let txn = self.begin_read()?;
        let chunks = txn
            .open_table(CHUNKS)
            .map_err(|e| index_err(&self.path, e))?;
        let packs = txn
            .open_table(PACKS)
            .map_err(|e| index_err(&self.path, e))?;
        Ok(IndexView {
            chunks,
            packs,
            path: self.path.clone(),
        })
    }

    /// Records durable packs in one durable transaction.
    pub fn add_packs(&self, packs: &[SealedPack]) -> Result<(), RepoError> {
        self.replace_packs(&[], &[], packs)
    }

    /// gc's one durable transaction: drops the `removed` packs and every
    /// chunk entry that still points into one of them, drops the entries of
    /// `dead` blobs (id, the pack it is in) that still point there, then
    /// records the `added` packs (which hold the live blobs moved out of the
    /// removed ones, so their entries replace the old locations).
    pub fn replace_packs(
        &self,
        removed: &[SealedPack],
        dead: &[(ChunkId, PackId)],
        added: &[SealedPack],
    ) -> Result<(), RepoError> {
        let e = |x: &dyn std::fmt::Display| index_err(&self.path, x);
        let Db::ReadWrite(db) = &self.db else {
            return Err(e(&"opened read-only"));
        };
        let txn = db.begin_write().map_err(|x| e(&x))?;
        {
            let mut chunks = txn.open_table(CHUNKS).map_err(|x| e(&x))?;
            let mut pack_table = txn.open_table(PACKS).map_err(|x| e(&x))?;
            let in_removed = removed
                .iter()
                .flat_map(|p| p.entries.iter().map(|entry| (entry.id, p.id)));
            for (id, pack) in in_removed.chain(dead.iter().copied()) {
                let here = chunks
                    .get(id.as_bytes())
                    .map_err(|x| e(&x))?
                    .is_some_and(|v| v.value()[..32] == *pack.as_bytes());
                if here {
                    chunks.remove(id.as_bytes()).map_err(|x| e(&x))?;
                }
            }
            for pack in removed {
                pack_table.remove(pack.id.as_bytes()).map_err(|x| e(&x))?;
            }
            let mut value = [0u8; 50];
            for pack in added {
                pack_table
                    .insert(pack.id.as_bytes(), pack.len)
                    .map_err(|x| e(&x))?;
                value[..32].copy_from_slice(pack.id.as_bytes());
                for entry in &pack.entries {
                    entry.encode_location((&mut value[32..]).try_into().unwrap());
                    chunks
                        .insert(entry.id.as_bytes(), &value)
                        .map_err(|x| e(&x))?;
                }
            }
        }
        txn.commit().map_err(|x| e(&x))?;
        Ok(())
    }

    /// Bytes of the file that redb holds free (left by copy-on-write) and the
    /// file's length.
    pub fn fragmentation(&self) -> Result<(u64, u64), RepoError> {
        let e = |x: &dyn std::fmt::Display| index_err(&self.path, x);
        let Db::ReadWrite(db) = &self.db else {
            return Err(e(&"opened read-only"));
        };
        let txn = db.begin_write().map_err(|x| e(&x))?;
        let stats = txn.stats().map_err(|x| e(&x))?;
        txn.abort().map_err(|x| e(&x))?;
        let len = std::fs::metadata(&self.path).map_err(|x| e(&x))?.len();
        Ok((stats.fragmented_bytes(), len))
    }

    /// Rewrites the file without its free pages (redb's own compaction,
    /// crash-safe). Needs no other transaction open.
    pub fn compact(&mut self) -> Result<(), RepoError> {
        let path = self.path.clone();
        let Db::ReadWrite(db) = &mut self.db else {
            return Err(index_err(&path, "opened read-only"));
        };
        while db.compact().map_err(|x| index_err(&path, x))? {}
        Ok(())
    }

    /// Every pack the index knows, with its recorded length.
    pub fn packs(&self) -> Result<Vec<(PackId, u64)>, RepoError> {
        let e = |x: &dyn std::fmt::Display| index_err(&self.path, x);
        let table = self.begin_read()?.open_table(PACKS).map_err(|x| e(&x))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|x| e(&x))? {
            let (k, v) = row.map_err(|x| e(&x))?;
            out.push((PackId(*k.value()), v.value()));
        }
        Ok(out)
    }
}

impl IndexView {
    /// Where the blob with this id is stored, if anywhere.
    pub fn get(&self, id: &ChunkId) -> Result<Option<(PackId, BlobEntry)>, RepoError> {
        let Some(v) = self
            .chunks
            .get(id.as_bytes())
            .map_err(|e| index_err(&self.path, e))?
        else {
            return Ok(None);
        };
        let v = v.value();
        let pack = PackId(v[..32].try_into().unwrap());
        let entry = BlobEntry::decode_location(*id, v[32..].try_into().unwrap())
            .map_err(|e| index_err(&self.path, format!("entry for chunk {id}: {e}")))?;
        Ok(Some((pack, entry)))
    }

    /// A pack's size as recorded when it was indexed.
    pub fn pack_len(&self, id: &PackId) -> Result<Option<u64>, RepoError> {
        Ok(self
            .packs
            .get(&id.0)
            .map_err(|e| index_err(&self.path, e))?
            .map(|v| v.value()))
    }

    pub fn contains(&self, id: &ChunkId) -> Result<bool, RepoError> {
        Ok(self
            .chunks
            .get(id.as_bytes())
            .map_err(|e| index_err(&self.path, e))?
            .is_some())
    }

    /// Every indexed blob with its pack.
    pub fn all(&self) -> Result<Vec<(PackId, BlobEntry)>, RepoError> {
        let mut out = Vec::new();
        for row in self.chunks.iter().map_err(|e| index_err(&self.path, e))? {
            let (k, v) = row.map_err(|e| index_err(&self.path, e))?;
            let (id, v) = (ChunkId(*k.value()), v.value());
            let pack = PackId(v[..32].try_into().unwrap());
            let entry = BlobEntry::decode_location(id, v[32..].try_into().unwrap())
                .map_err(|e| index_err(&self.path, format!("entry for chunk {id}: {e}")))?;
            out.push((pack, entry));
        }
        Ok(out)
    }
}
