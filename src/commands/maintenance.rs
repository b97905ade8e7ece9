//! `stats` (what the repository holds) and `repair index` (rebuild the index from the packs).

use serde::Serialize;

use crate::error::RepoError;
use crate::repo::Repository;

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct RepoStats {
    /// The directory or `s3://` URL.
    pub repository: String,
    /// The size a pack is sealed at (`config.json`: larger in object storage).
    pub pack_target_bytes: u64,
    /// `xchacha20poly1305` for an encrypted repository, `none` for a plain one.
    pub encryption: String,
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
        repository: repo.location(),
        pack_target_bytes: repo.config().pack_target_bytes,
        encryption: repo
            .config()
            .encryption
            .as_ref()
            .map_or("none".into(), |e| e.cipher.clone()),
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

pub use crate::repo::rebuild::RepairReport;

/// Rebuilds the index from the packs' own entry tables (invariant 3). The
/// new index is built beside the old one and renamed over it, so a crash
/// midway leaves the old index in place.
pub fn repair_index(repo: &mut Repository) -> Result<RepairReport, RepoError> {
    assert!(repo.is_exclusive(), "repair needs the exclusive lock");
    repo.rebuild_index()
}
