//! `copy --to OTHER [SNAPSHOT…]`: snapshots from this repository into another
//! (a local repository to a bucket, the usual off-site pattern, or back).
//!
//! Only chunks the destination lacks are sent; each is read and verified here
//! and stored whole there (a delta's base may not be in the destination, so
//! deltas are not copied as they are). Snapshots keep their ids and times:
//! a snapshot's bytes are copied unchanged, after every chunk it references is
//! durable in the destination (invariant 1), so a copy cut off leaves nothing
//! visible there, and running it again completes it (what was sent is
//! deduplicated). The WAL archive files of copied base backups and their
//! protect markers come along.

use std::collections::HashSet;

use serde::Serialize;

use crate::error::{RepoError, Result};
use crate::id::ChunkId;
use crate::repo::Repository;
use crate::repo::pack::BlobKind;
use crate::repo::reader::BlobReader;
use crate::repo::writer::BlobWriter;

#[derive(Clone, Debug, Default, Serialize)]
pub struct CopyReport {
    /// Snapshots copied now (their short ids).
    pub copied: Vec<String>,
    /// Snapshots the destination already had.
    pub already_there: usize,
    pub chunks_sent: u64,
    pub bytes_sent: u64,
    pub wal_files_sent: u64,
}

/// Copies the snapshots named by `specs` (all when empty) from `src` (opened
/// with a shared lock) into `dst` (opened to write).
pub fn copy(src: &Repository, dst: &Repository, specs: &[String]) -> Result<CopyReport> {
    if !src.crypto().same_ids(dst.crypto()) {
        return Err(crate::error::Error::Usage(format!(
            "{} and {} do not share keys (chunk ids are keyed per repository), so a copy \
             would store everything again under other ids; create the destination with \
             `rewindb --repo {} init --keys-from {}` and copy into that",
            src.location(),
            dst.location(),
            dst.location(),
            src.location()
        )));
    }
    let list = src.snapshots()?;
    let chosen: Vec<_> = match specs.is_empty() {
        true => list.ok.iter().collect(),
        false => specs
            .iter()
            .map(|s| list.find(s))
            .collect::<std::result::Result<_, RepoError>>()?,
    };
    let have: HashSet<_> = dst.snapshots()?.ok.into_iter().map(|(id, _)| id).collect();
    let protected = src.protected()?;
    let protected_there = dst.protected()?;
    let mut report = CopyReport::default();
    let mut clusters = HashSet::new();
    for (id, snap) in chosen {
        if let Some(pg) = &snap.postgres {
            clusters.insert(pg.system_identifier);
        }
        // A protect marker follows its snapshot, also into a destination
        // that got the snapshot from a copy killed before its marker.
        let protect = protected.contains(id) && !protected_there.contains(id);
        if have.contains(id) {
            report.already_there += 1;
            if protect {
                dst.set_protected(id, true)?;
            }
            continue;
        }
        // Every chunk first (durable, indexed), the snapshot last.
        let mut reader = BlobReader::new(src)?;
        let mut writer = BlobWriter::new(dst)?;
        let mut seen: HashSet<ChunkId> = HashSet::new();
        for file in &snap.files {
            for meta in &file.manifest {
                if seen.insert(*meta) {
                    let data = reader.read(meta)?;
                    if writer.add_with_id(*meta, BlobKind::Meta, &data)? {
                        report.chunks_sent += 1;
                        report.bytes_sent += data.len() as u64;
                    }
                }
            }
            for chunk in reader.manifest(file)? {
                if seen.insert(chunk) && !writer.has(&chunk)? {
                    let data = reader.read(&chunk)?;
                    writer.add_with_id(chunk, BlobKind::Data, &data)?;
                    report.chunks_sent += 1;
                    report.bytes_sent += data.len() as u64;
                }
            }
        }
        drop(reader);
        writer.commit()?;
        let copied = dst.commit_snapshot(snap)?;
        assert_eq!(copied, *id, "a snapshot's bytes are copied unchanged");
        if protect {
            dst.set_protected(id, true)?;
        }
        report.copied.push(id.short());
    }
    for sysid in clusters {
        report.wal_files_sent += src.wal().copy_missing(sysid, &dst.wal())?;
    }
    Ok(report)
}
