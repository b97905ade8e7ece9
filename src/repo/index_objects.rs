//! Index objects, `index/<hex>.idx`: the entry tables of the packs one run
//! wrote, with each delta's base, so that a machine with an empty cache
//! builds its index from a few objects instead of two ranged reads per pack
//! and one per delta (`docs/format.md`, "Index objects").
//!
//! They are written to remote repositories only, after the packs they
//! describe are durable and before anything refers to those packs. gc
//! writes one object for every pack it keeps, then removes the others. A
//! cold cache trusts an index object's entries for a pack only if the pack
//! is listed with the same size; any other pack is read from its own table,
//! so an index object that is missing, stale or damaged costs requests,
//! never entries.

use std::collections::HashMap;

use crate::crypto::{Crypto, aad};
use crate::id::{ChunkId, PackId};
use crate::repo::pack::{self, BlobEntry, Compression};
use crate::repo::storage::Storage;

const MAGIC: &[u8; 8] = b"RWDBIDX1";
/// Where index objects live.
pub const PREFIX: &str = "index/";

/// One pack as an index object describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackTable {
    pub id: PackId,
    pub len: u64,
    pub entries: Vec<BlobEntry>,
    /// Each delta entry's base.
    pub bases: HashMap<ChunkId, ChunkId>,
}

/// The object name of an index object with these bytes (named by hash).
pub fn name_of(bytes: &[u8]) -> String {
    format!("{PREFIX}{}.idx", blake3::hash(bytes).to_hex())
}

/// Encodes the tables of `packs`.
pub fn encode(packs: &[PackTable]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for p in packs {
        out.extend_from_slice(&p.id.0);
        out.extend_from_slice(&p.len.to_le_bytes());
        out.extend_from_slice(&(p.entries.len() as u32).to_le_bytes());
        out.extend_from_slice(&pack::encode_table(&p.entries));
        let mut bases: Vec<_> = p.bases.iter().collect();
        bases.sort();
        out.extend_from_slice(&(bases.len() as u32).to_le_bytes());
        for (id, base) in bases {
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(base.as_bytes());
        }
    }
    out
}

/// Reads bytes in order, failing on a short input.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn id(&mut self) -> Result<[u8; 32], String> {
        Ok(self.take(32)?.try_into().unwrap())
    }
}

/// Decodes an index object as stored, checking its bytes against its name
/// and, in an encrypted repository, opening them.
pub fn decode(name: &str, bytes: &[u8], crypto: &Crypto) -> Result<Vec<PackTable>, String> {
    if name_of(bytes) != name {
        return Err("contents do not match the object's name (damaged)".into());
    }
    let plain = crypto
        .open(aad::INDEX_OBJECT, bytes)
        .map_err(|e| format!("index object {e}"))?;
    decode_plain(&plain)
}

/// Decodes an index object's (unsealed) bytes.
pub fn decode_plain(bytes: &[u8]) -> Result<Vec<PackTable>, String> {
    let mut c = Cursor(bytes);
    if c.take(MAGIC.len())? != MAGIC {
        return Err("not an index object (magic)".into());
    }
    let count = c.u32()?;
    let mut packs = Vec::new();
    for _ in 0..count {
        let id = PackId(c.id()?);
        let len = u64::from_le_bytes(c.take(8)?.try_into().unwrap());
        let entries = c.u32()? as usize;
        let table = c.take(
            entries
                .checked_mul(pack::ENTRY_LEN)
                .ok_or("too many entries")?,
        )?;
        let entries = pack::decode_entries_within(len, table).map_err(|e| e.0)?;
        let deltas: std::collections::HashSet<ChunkId> = entries
            .iter()
            .filter(|e| e.compression == Compression::ZstdDelta)
            .map(|e| e.id)
            .collect();
        // One base per delta entry, in increasing order of chunk id (as
        // `encode` writes them): anything else is damage.
        let mut bases = HashMap::new();
        let mut previous: Option<ChunkId> = None;
        for _ in 0..c.u32()? {
            let (chunk, base) = (ChunkId(c.id()?), ChunkId(c.id()?));
            if previous.is_some_and(|p| p >= chunk) || !deltas.contains(&chunk) {
                return Err(format!(
                    "pack {id}: bases out of order or not of a delta entry"
                ));
            }
            previous = Some(chunk);
            bases.insert(chunk, base);
        }
        let deltas = deltas.len();
        if bases.len() != deltas {
            return Err(format!(
                "pack {id}: {deltas} delta entries but {} bases",
                bases.len()
            ));
        }
        packs.push(PackTable {
            id,
            len,
            entries,
            bases,
        });
    }
    if !c.0.is_empty() {
        return Err("bytes after the last pack".into());
    }
    Ok(packs)
}

/// Stores an index object for `packs` (create-only; one with the same bytes
/// is already there). Nothing is written for no packs.
pub fn store(
    storage: &dyn Storage,
    crypto: &Crypto,
    packs: &[PackTable],
) -> std::io::Result<Option<String>> {
    if packs.is_empty() {
        return Ok(None);
    }
    let bytes = crypto.seal(aad::INDEX_OBJECT, &encode(packs));
    let name = name_of(&bytes);
    match storage.put(&name, &bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(Some(name)),
    }
}

/// Every readable index object's tables, by pack (the first description of
/// a pack wins; they agree unless one is stale). Unreadable objects are
/// skipped with a warning: their packs are read from their own tables.
pub fn load_all(
    storage: &dyn Storage,
    crypto: &Crypto,
) -> std::io::Result<HashMap<PackId, PackTable>> {
    let mut tables = HashMap::new();
    for object in storage.list(PREFIX)? {
        let decoded = storage
            .get(&object.name)
            .map_err(|e| e.to_string())
            .and_then(|bytes| decode(&object.name, &bytes, crypto));
        match decoded {
            Ok(packs) => {
                for p in packs {
                    tables.entry(p.id).or_insert(p);
                }
            }
            Err(why) => tracing::warn!(
                "index object {} skipped ({why}): its packs are read from their own tables",
                storage.describe(&object.name)
            ),
        }
    }
    Ok(tables)
}

/// gc, under the exclusive lock, after removing packs: removes the index
/// objects that describe no pack still there (and damaged ones, which help
/// nobody). Returns how many went.
pub fn prune(
    storage: &dyn Storage,
    crypto: &Crypto,
    live: &std::collections::HashSet<PackId>,
) -> std::io::Result<usize> {
    let mut gone = Vec::new();
    for object in storage.list(PREFIX)? {
        let useful = storage
            .get(&object.name)
            .map_err(|e| e.to_string())
            .and_then(|bytes| decode(&object.name, &bytes, crypto))
            .is_ok_and(|packs| packs.iter().any(|p| live.contains(&p.id)));
        if !useful {
            gone.push(object.name);
        }
    }
    storage.delete_many(&gone)?;
    Ok(gone.len())
}
