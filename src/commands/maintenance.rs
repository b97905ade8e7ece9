//! `stats` (what the repository holds) and `repair index` (rebuild the index from the packs).

use std::fs;

use serde::Serialize;

use crate::error::{IoContext, RepoError};
use crate::repo::index::{Index, SealedPack};
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
            Ok(entries) => {
                report.chunks_indexed += entries.len() as u64;
                sealed.push(SealedPack { id, len, entries });
            }
            Err(why) => report.packs_skipped.push((path.display().to_string(), why)),
        }
    }
    report.packs_indexed = sealed.len();
    {
        let index = Index::create(&building)?;
        index.add_packs(&sealed)?;
    }
    let dest = repo.index_path();
    fs::rename(&building, &dest).ctx(|| format!("replacing {}", dest.display()))?;
    fsutil::sync_dir(repo.root()).ctx(|| format!("syncing {}", repo.root().display()))?;
    Ok(report)
}
