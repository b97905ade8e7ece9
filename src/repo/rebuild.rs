//! The index rebuilt from what the repository holds: the packs' own entry
//! tables (invariant 3). `repair index` rebuilds it whole; a cache of a
//! remote repository is brought up to date with the packs other machines
//! added and removed ([`sync`]).

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::crypto::Crypto;
use crate::error::{IoContext, RepoError};
use crate::id::{ChunkId, PackId};
use crate::repo::index::{Index, SealedPack};
use crate::repo::pack::{self, BlobEntry, Compression};
use crate::repo::storage::{self, Storage};

#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairReport {
    pub packs_indexed: usize,
    pub chunks_indexed: u64,
    /// Packs whose entry table could not be read, with why; their blobs are not indexed.
    pub packs_skipped: Vec<(String, String)>,
    /// Delta blobs left out because their base (or its base) is in no readable pack:
    /// indexed, they would make the next backup reference a page it cannot restore.
    pub deltas_dropped: u64,
}

/// Removes delta entries whose base chain does not end in an indexed whole
/// blob, repeating until none is left (a dropped delta may be another's base).
/// `known` are bases an index object gave; the others are read from each
/// delta's 33-byte header.
fn drop_deltas_without_base(
    storage: &dyn Storage,
    crypto: &Crypto,
    sealed: &mut [SealedPack],
    known: HashMap<ChunkId, ChunkId>,
) -> Result<u64, RepoError> {
    let mut present: HashSet<ChunkId> = sealed
        .iter()
        .flat_map(|p| p.entries.iter().map(|e| e.id))
        .collect();
    let mut bases = known;
    for pack in sealed.iter() {
        let unknown = pack
            .entries
            .iter()
            .any(|e| e.compression == Compression::ZstdDelta && !bases.contains_key(&e.id));
        if !unknown {
            continue;
        }
        let file = storage.open(&storage::pack_name(&pack.id)).ctx(|| {
            format!(
                "opening {}",
                storage.describe(&storage::pack_name(&pack.id))
            )
        })?;
        let unread: Vec<&BlobEntry> = pack
            .entries
            .iter()
            .filter(|e| e.compression == Compression::ZstdDelta && !bases.contains_key(&e.id))
            .collect();
        for e in unread {
            let mut header = vec![0u8; pack::delta_header_read_len(crypto, e)];
            let base = file
                .read_at(&mut header, u64::from(e.frame_offset))
                .ok()
                .and_then(|()| pack::delta_base_in(crypto, &header).ok());
            match base {
                Some(base) => {
                    bases.insert(e.id, base);
                }
                None => {
                    present.remove(&e.id); // unreadable header: unusable delta
                }
            }
        }
    }
    // A chunk stored whole anywhere stays present whatever happens to its deltas.
    let whole: HashSet<ChunkId> = sealed
        .iter()
        .flat_map(|p| p.entries.iter())
        .filter(|e| e.compression != Compression::ZstdDelta)
        .map(|e| e.id)
        .collect();
    let mut bad: HashSet<ChunkId> = HashSet::new();
    loop {
        let orphans: Vec<ChunkId> = bases
            .iter()
            .filter(|(id, base)| !bad.contains(*id) && !present.contains(*base))
            .map(|(id, _)| *id)
            .collect();
        if orphans.is_empty() {
            break;
        }
        for id in orphans {
            bad.insert(id);
            if !whole.contains(&id) {
                present.remove(&id);
            }
        }
    }
    let mut dropped = 0;
    for pack in sealed.iter_mut() {
        let before = pack.entries.len();
        pack.entries.retain(|e| {
            e.compression != Compression::ZstdDelta
                || (bases.contains_key(&e.id) && !bad.contains(&e.id))
        });
        dropped += (before - pack.entries.len()) as u64;
    }
    Ok(dropped)
}

/// Every pack in the repository, with its size, by id.
pub fn pack_files(storage: &dyn Storage) -> Result<Vec<(PackId, u64)>, RepoError> {
    let mut out: Vec<(PackId, u64)> = storage
        .list("packs/")
        .ctx(|| format!("listing the packs of {}", storage.location()))?
        .into_iter()
        .filter_map(|o| Some((storage::id_in_name(&o.name, ".pack")?, o.size)))
        .collect();
    out.sort_by_key(|(id, _)| *id);
    Ok(out)
}

/// Reads and validates a pack's entry table without reading its blobs.
pub fn read_pack_table(
    storage: &dyn Storage,
    crypto: &Crypto,
    pack: &PackId,
    len: u64,
) -> Result<Vec<BlobEntry>, String> {
    if len < pack::TRAILER_LEN as u64 {
        return Err("too short to be a pack".into());
    }
    let name = storage::pack_name(pack);
    let trailer = storage
        .get_range(&name, len - pack::TRAILER_LEN as u64, pack::TRAILER_LEN)
        .map_err(|e| e.to_string())?;
    let (table_len, hash) = pack::decode_trailer(len, &trailer, crypto).map_err(|e| e.0)?;
    let table = storage
        .get_range(
            &name,
            len - (pack::TRAILER_LEN + table_len) as u64,
            table_len,
        )
        .map_err(|e| e.to_string())?;
    pack::decode_entries(len, &table, &hash, crypto).map_err(|e| e.0)
}

/// Fills an empty index from every pack's table, leaving out deltas whose
/// base chain ends in no readable pack. With `index_objects` (a cache of a
/// remote repository), a pack an index object describes at its listed size
/// is taken from there, without a request of its own.
pub fn rebuild(
    storage: &dyn Storage,
    crypto: &Crypto,
    index: &Index,
    index_objects: bool,
) -> Result<RepairReport, RepoError> {
    let mut report = RepairReport::default();
    let mut sealed = Vec::new();
    let mut described = match index_objects {
        true => crate::repo::index_objects::load_all(storage, crypto)
            .ctx(|| format!("reading the index objects of {}", storage.location()))?,
        false => HashMap::new(),
    };
    let mut known_bases = HashMap::new();
    for (id, len) in pack_files(storage)? {
        if let Some(table) = described.remove(&id).filter(|t| t.len == len) {
            known_bases.extend(table.bases);
            sealed.push(SealedPack {
                id,
                len,
                entries: table.entries,
            });
            continue;
        }
        match read_pack_table(storage, crypto, &id, len) {
            Ok(entries) => sealed.push(SealedPack { id, len, entries }),
            Err(why) => report
                .packs_skipped
                .push((storage.describe(&storage::pack_name(&id)), why)),
        }
    }
    report.deltas_dropped = drop_deltas_without_base(storage, crypto, &mut sealed, known_bases)?;
    report.packs_indexed = sealed.len();
    report.chunks_indexed = sealed.iter().map(|p| p.entries.len() as u64).sum();
    index.add_packs(&sealed)?;
    Ok(report)
}

/// What bringing a cache up to date did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Synced {
    pub packs_added: usize,
    pub packs_dropped: usize,
}

/// Brings an index up to date with the packs the repository holds: packs
/// that appeared (another machine's backups) are added from their tables,
/// packs that went (its gc) are dropped with every entry pointing into them.
/// A pack whose table cannot be read is left out, as `repair index` would.
pub fn sync(storage: &dyn Storage, crypto: &Crypto, index: &Index) -> Result<Synced, RepoError> {
    let listed: HashMap<PackId, u64> = pack_files(storage)?.into_iter().collect();
    let known: HashMap<PackId, u64> = index.packs()?.into_iter().collect();
    let mut added = Vec::new();
    for (id, len) in &listed {
        if known.contains_key(id) {
            continue;
        }
        match read_pack_table(storage, crypto, id, *len) {
            Ok(entries) => added.push(SealedPack {
                id: *id,
                len: *len,
                entries,
            }),
            Err(why) => tracing::warn!(
                "pack {} left out of the index: {why}",
                storage.describe(&storage::pack_name(id))
            ),
        }
    }
    let gone: HashSet<PackId> = known
        .keys()
        .filter(|p| !listed.contains_key(p))
        .copied()
        .collect();
    let removed: Vec<SealedPack> = gone
        .iter()
        .map(|id| SealedPack {
            id: *id,
            len: 0,
            entries: Vec::new(),
        })
        .collect();
    let dead: Vec<(ChunkId, PackId)> = match gone.is_empty() {
        true => Vec::new(),
        false => index
            .view()?
            .all()?
            .into_iter()
            .filter(|(p, _)| gone.contains(p))
            .map(|(p, e)| (e.id, p))
            .collect(),
    };
    if !added.is_empty() || !removed.is_empty() {
        index.replace_packs(&removed, &dead, &added)?;
    }
    Ok(Synced {
        packs_added: added.len(),
        packs_dropped: removed.len(),
    })
}
