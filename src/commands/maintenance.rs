//! `stats` (what the repository holds) and `repair index` (rebuild the index from the packs).

use serde::Serialize;

use crate::error::RepoError;
use crate::id::ChunkId;
use crate::repo::Repository;
use crate::repo::index::SealedPack;
use crate::repo::pack::{self, Compression};

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct RepoStats {
    pub snapshots: usize,
    pub packs: usize,
    pub chunks: u64,
    /// Bytes on disk: packs, index and snapshot files.
    pub stored_bytes: u64,
    pub pack_bytes: u64,
    /// Uncompressed bytes of all stored chunks.
    pub unique_bytes: u64,
    /// Sum of every snapshot's file sizes: what restoring them all would write.
    pub logical_bytes: u64,
    /// logical / stored.
    pub dedup_ratio: f64,
}

pub fn stats(repo: &Repository) -> Result<RepoStats, RepoError> {
    let list = repo.snapshots()?;
    let index = repo.index()?;
    let packs = index.packs()?;
    let all = index.view()?.all()?;
    let pack_bytes: u64 = packs.iter().map(|(_, len)| len).sum();
    let other = repo.index_len()? + repo.stored_bytes("snapshots/")?;
    let logical: u64 = list.ok.iter().map(|(_, s)| s.logical_size()).sum();
    let stored = pack_bytes + other;
    Ok(RepoStats {
        snapshots: list.ok.len(),
        packs: packs.len(),
        chunks: all.len() as u64,
        stored_bytes: stored,
        pack_bytes,
        unique_bytes: all.iter().map(|(_, e)| u64::from(e.raw_len)).sum(),
        logical_bytes: logical,
        dedup_ratio: if stored == 0 {
            0.0
        } else {
            logical as f64 / stored as f64
        },
    })
}

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
fn drop_deltas_without_base(
    repo: &Repository,
    sealed: &mut [SealedPack],
) -> Result<u64, RepoError> {
    use std::collections::{HashMap, HashSet};
    let mut present: HashSet<ChunkId> = sealed
        .iter()
        .flat_map(|p| p.entries.iter().map(|e| e.id))
        .collect();
    // Each delta's base id, read from its 33-byte header.
    let mut bases: HashMap<ChunkId, ChunkId> = HashMap::new();
    for pack in sealed.iter() {
        let file = repo.open_pack(&pack.id)?;
        for e in pack
            .entries
            .iter()
            .filter(|e| e.compression == Compression::ZstdDelta)
        {
            let mut header = [0u8; pack::DELTA_HEADER_LEN];
            let base = file
                .read_at(&mut header, u64::from(e.frame_offset))
                .ok()
                .and_then(|()| pack::decode_delta_header(&header).ok())
                .map(|(base, _, _)| base);
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

/// Rebuilds `index.redb` from the packs' own entry tables (invariant 3). The
/// new index is built beside the old one and renamed over it, so a crash
/// midway leaves the old index in place.
pub fn repair_index(repo: &mut Repository) -> Result<RepairReport, RepoError> {
    assert!(repo.is_exclusive(), "repair needs the exclusive lock");
    let mut report = RepairReport::default();
    let mut sealed = Vec::new();
    for (id, len) in repo.pack_files()? {
        match repo.read_pack_table(&id, len) {
            Ok(entries) => sealed.push(SealedPack { id, len, entries }),
            Err(why) => report.packs_skipped.push((repo.describe_pack(&id), why)),
        }
    }
    report.deltas_dropped = drop_deltas_without_base(repo, &mut sealed)?;
    report.packs_indexed = sealed.len();
    report.chunks_indexed = sealed.iter().map(|p| p.entries.len() as u64).sum();
    repo.replace_index(|index| index.add_packs(&sealed))?;
    Ok(report)
}
