//! `stats` (what the repository holds) and `repair index` (rebuild the index from the packs).

use std::fs;

use serde::Serialize;

use crate::error::{IoContext, RepoError};
use crate::id::ChunkId;
use crate::repo::index::{Index, SealedPack};
use crate::repo::pack::{self, Compression};
use crate::repo::{Repository, fsutil};

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
    let mut other = 0u64;
    let index_len = fs::metadata(repo.index_path())
        .ctx(|| "reading the index size".into())?
        .len();
    other += index_len;
    let snap_dir = repo.root().join("snapshots");
    for f in fs::read_dir(&snap_dir).ctx(|| format!("listing {}", snap_dir.display()))? {
        let f = f.ctx(|| format!("listing {}", snap_dir.display()))?;
        other += f.metadata().map(|m| m.len()).unwrap_or(0);
    }
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
    use std::os::unix::fs::FileExt;
    let mut present: HashSet<ChunkId> = sealed
        .iter()
        .flat_map(|p| p.entries.iter().map(|e| e.id))
        .collect();
    // Each delta's base id, read from its 33-byte header.
    let mut bases: HashMap<ChunkId, ChunkId> = HashMap::new();
    for pack in sealed.iter() {
        let path = repo.pack_path(&pack.id);
        let file = fs::File::open(&path).ctx(|| format!("opening {}", path.display()))?;
        for e in pack
            .entries
            .iter()
            .filter(|e| e.compression == Compression::ZstdDelta)
        {
            let mut header = [0u8; pack::DELTA_HEADER_LEN];
            let base = file
                .read_exact_at(&mut header, u64::from(e.frame_offset))
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
    repo.close_index();
    let building = repo.tmp_dir().join("index.redb.rebuild");
    if building.exists() {
        fs::remove_file(&building).ctx(|| format!("removing {}", building.display()))?;
    }
    let mut report = RepairReport::default();
    let mut sealed = Vec::new();
    for (id, path, len) in repo.pack_files()? {
        match repo.read_pack_table(&id, len) {
            Ok(entries) => sealed.push(SealedPack { id, len, entries }),
            Err(why) => report.packs_skipped.push((path.display().to_string(), why)),
        }
    }
    report.deltas_dropped = drop_deltas_without_base(repo, &mut sealed)?;
    report.packs_indexed = sealed.len();
    report.chunks_indexed = sealed.iter().map(|p| p.entries.len() as u64).sum();
    {
        let index = Index::create(&building)?;
        index.add_packs(&sealed)?;
    }
    let dest = repo.index_path();
    fs::rename(&building, &dest).ctx(|| format!("replacing {}", dest.display()))?;
    fsutil::sync_dir(repo.root()).ctx(|| format!("syncing {}", repo.root().display()))?;
    Ok(report)
}
