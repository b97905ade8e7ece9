//! `gc`: reclaim what no snapshot needs: chunks (mark and sweep over packs)
//! and PostgreSQL WAL older than every retained base backup.
//!
//! **Mark.** Every snapshot's manifests are read; each chunk they list is
//! live. A live delta whose base no snapshot lists (the base is an old
//! version of the page that only forgotten snapshots read) is *re-encoded*:
//! decoded through its chain and stored whole, so the base and its chain go
//! too. A live delta whose base is listed keeps its base, which is live. A
//! chunk's *live instance* is the copy the index points to; other copies
//! (left by a killed gc, by a backup killed before its index commit, or the
//! delta a re-encoded chunk leaves behind) are garbage.
//!
//! **Sweep.** Re-encoded chunks are written to new packs first. A pack
//! without a live instance is deleted. A pack whose live
//! share is below `repack_threshold` is rewritten: frames whose blobs are all
//! live, and deltas, are copied as stored (whole blobs verified first); the live blobs of
//! partly dead frames are re-compressed into new frames. Then one redb
//! transaction points the index at the new packs and drops the old ones;
//! only after that are the old pack files deleted. A kill at any instant
//! leaves either the old packs (and some unindexed new ones) or the new ones
//! (and some unindexed old ones) serving every snapshot; the next gc removes
//! the leftovers.
//!
//! **Concurrency.** gc holds the repository's exclusive lock, as every
//! `backup` does for its whole run, so no backup can be between writing a
//! pack and committing its snapshot while gc decides what is garbage. `wal
//! push` takes no lock; gc deletes only WAL files that sort before every
//! retained base backup's start, which a running server no longer pushes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, IoContext, RepoError, Result};
use crate::id::{ChunkId, PackId};
use crate::repo::index::SealedPack;
use crate::repo::pack::{self, BlobEntry, BlobKind, Compression};
use crate::repo::reader::BlobReader;
use crate::repo::wal::{WalKind, WalName};
use crate::repo::writer::BlobWriter;
use crate::repo::{Repository, SnapshotList};

/// Packs whose live share is below this are rewritten unless `--repack-threshold` says otherwise.
pub const DEFAULT_REPACK_THRESHOLD: f64 = 0.8;

/// The index is compacted when at least this share of its file is free.
const COMPACT_INDEX_AT: f64 = 0.2;

#[derive(Clone, Debug)]
pub struct GcOptions {
    pub dry_run: bool,
    /// A pack whose live share (by stored bytes) is below this is rewritten;
    /// 0 never rewrites, 1 rewrites every pack holding any garbage. Packs with
    /// nothing live are deleted whatever this is.
    pub repack_threshold: f64,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            dry_run: false,
            repack_threshold: DEFAULT_REPACK_THRESHOLD,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub snapshots: usize,
    pub live_chunks: u64,
    /// Live deltas stored whole because their base was needed by forgotten
    /// snapshots only (with `dry_run`: that would be).
    pub chunks_reencoded: u64,
    pub packs_before: usize,
    pub packs_deleted: usize,
    pub packs_rewritten: usize,
    pub packs_written: usize,
    pub pack_bytes_before: u64,
    /// With `dry_run`, an estimate (rewritten packs keep their live share).
    pub pack_bytes_after: u64,
    pub wal_files_removed: u64,
    pub wal_bytes_removed: u64,
    /// Pack and WAL bytes given back (estimated with `dry_run`).
    pub reclaimed_bytes: u64,
    /// The index file's length before and after, when it was compacted.
    pub index_compacted: Option<(u64, u64)>,
    /// Things left alone, and why.
    pub notes: Vec<String>,
    pub duration_secs: f64,
}

/// One pack file on disk and what gc does with it.
struct PackPlan {
    id: PackId,
    len: u64,
    entries: Vec<BlobEntry>,
    action: Action,
    /// Stored bytes attributed to live blobs (a partly live frame counts by
    /// the live share of its uncompressed bytes).
    live_bytes: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Action {
    Keep,
    Delete,
    Rewrite,
}

impl GcOptions {
    /// Checked before the repository is opened (and so before any lock wait).
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.repack_threshold) {
            return Err(Error::Usage(format!(
                "--repack-threshold must be between 0 and 1, not {}",
                self.repack_threshold
            )));
        }
        Ok(())
    }
}

pub fn gc(repo: &mut Repository, opts: &GcOptions) -> Result<GcReport> {
    assert!(repo.is_exclusive(), "gc needs the exclusive lock");
    opts.validate()?;
    // A gc.json that does not authenticate, or is older than one this
    // machine saw, stops gc before it changes anything.
    repo.last_gc()?;
    let started = Instant::now();
    let list = repo.snapshots()?;
    if let Some((id, why)) = list.damaged.first() {
        return Err(Error::Failed(format!(
            "snapshot file {id} is unreadable ({why}), so gc cannot tell which chunks it \
             needs; nothing was removed. Run `rewindb check`; if the snapshot is lost, \
             remove snapshots/{id}.json by hand, then run gc again"
        )));
    }
    let mut report = GcReport {
        dry_run: opts.dry_run,
        snapshots: list.ok.len(),
        ..GcReport::default()
    };
    let Marked { live, reencode } = mark(repo, &list)?;
    report.live_chunks = live.len() as u64;
    report.chunks_reencoded = reencode.len() as u64;
    // A re-encoded chunk's delta is not its live instance any more: its pack
    // is judged without it.
    let mut in_place = live.clone();
    for (id, _, _) in &reencode {
        in_place.remove(id);
    }
    let mut plans = plan_packs(repo, &in_place, opts.repack_threshold, &mut report.notes)?;
    report.packs_before = plans.len();
    report.pack_bytes_before = plans.iter().map(|p| p.len).sum();
    report.packs_deleted = plans.iter().filter(|p| p.action == Action::Delete).count();
    report.packs_rewritten = plans.iter().filter(|p| p.action == Action::Rewrite).count();
    let wal = wal_garbage(repo, &list, &mut report.notes)?;
    report.wal_files_removed = wal.len() as u64;
    report.wal_bytes_removed = wal.iter().map(|(_, len)| len).sum();

    if opts.dry_run {
        // Re-encoded chunks counted at half their size (whole pages compress
        // about 2.5x in frames): an estimate.
        let reencoded: u64 = reencode
            .iter()
            .map(|(_, _, e)| u64::from(e.raw_len) / 2)
            .sum();
        report.pack_bytes_after = reencoded
            + plans
                .iter()
                .map(|p| match p.action {
                    Action::Keep => p.len,
                    Action::Delete => 0,
                    Action::Rewrite => p.live_bytes,
                })
                .sum::<u64>();
    } else {
        let written = rewrite(repo, &plans, &in_place, &reencode)?;
        report.packs_written = written.len();
        // A pack written now may be byte-identical to one a killed gc left:
        // it is then the new home of its blobs, not garbage.
        let new_ids: HashSet<PackId> = written.iter().map(|p| p.id).collect();
        plans.retain(|p| !new_ids.contains(&p.id) || p.action == Action::Keep);
        let removed: Vec<SealedPack> = plans
            .iter_mut()
            .filter(|p| p.action != Action::Keep)
            .map(|p| SealedPack {
                id: p.id,
                len: p.len,
                entries: std::mem::take(&mut p.entries),
            })
            .collect();
        // Every dead blob leaves the index, wherever it is (a kept pack, one
        // whose table is unreadable): a later backup must store such a chunk
        // again rather than dedup against a copy whose delta base may be gone.
        let dead: Vec<(ChunkId, PackId)> = repo
            .index()?
            .view()?
            .all()?
            .into_iter()
            .filter(|(_, e)| !live.contains_key(&e.id))
            .map(|(pack, e)| (e.id, pack))
            .collect();
        repo.index()?.replace_packs(&removed, &dead, &written)?;
        repo.delete_packs(&removed.iter().map(|p| p.id).collect::<Vec<_>>())?;
        let wal_names: Vec<(u64, WalName)> = wal.iter().map(|(f, _)| f.clone()).collect();
        repo.wal().remove(&wal_names)?;
        // Killed pushes' uploads (an hour old: a running push removes its own).
        report.wal_bytes_removed += repo.remove_abandoned_uploads()?;
        let packs_after = repo.pack_files()?;
        report.pack_bytes_after = packs_after.iter().map(|(_, len)| len).sum();
        if repo.writes_index_objects() {
            let live: HashSet<PackId> = packs_after.iter().map(|(id, _)| *id).collect();
            repo.prune_index_objects(&live)?;
        }
        // Only after entries went (a compaction of an unchanged index gains
        // nothing measurable and costs about a second per 60 MiB).
        if !removed.is_empty() || !dead.is_empty() {
            report.index_compacted = repo.compact_index(COMPACT_INDEX_AT)?;
        }
        repo.record_gc(jiff::Timestamp::now())?;
    }
    report.reclaimed_bytes = report
        .pack_bytes_before
        .saturating_sub(report.pack_bytes_after)
        + report.wal_bytes_removed;
    report.duration_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Live chunks, each with the pack the index points to (its live instance).
type Live = HashMap<ChunkId, PackId>;

/// What marking found: the live chunks, and the live deltas to store whole
/// (each with its pack and entry), because their base is listed by no
/// snapshot.
struct Marked {
    live: Live,
    reencode: Vec<(ChunkId, PackId, BlobEntry)>,
}

/// Every chunk some snapshot needs: the meta blobs of its manifests and the
/// chunks they list. A delta among them whose base is not among them is to
/// be re-encoded (its base is then needed by nothing); one whose base is
/// keeps it. Refuses (and so removes nothing) when a snapshot's chunks
/// cannot all be found: what they reference would be unknown.
fn mark(repo: &Repository, list: &SnapshotList) -> Result<Marked> {
    let view = repo.index()?.view()?;
    let mut reader = BlobReader::new(repo)?;
    let mut listed: HashSet<ChunkId> = HashSet::new();
    let cannot = |what: String| {
        Error::Failed(format!(
            "{what}; gc cannot tell what the repository still needs, so nothing was removed. \
             Run `rewindb check` to see which snapshots are damaged, then `rewindb repair \
             index` or forget those snapshots"
        ))
    };
    for (sid, snap) in &list.ok {
        for file in &snap.files {
            listed.extend(file.manifest.iter().copied());
            let ids = reader.manifest(file).map_err(|e| {
                cannot(format!(
                    "snapshot {}: the manifest of {} cannot be read ({e})",
                    sid.short(),
                    file.name
                ))
            })?;
            listed.extend(ids);
        }
    }
    let mut live: Live = HashMap::with_capacity(listed.len());
    let mut reencode = Vec::new();
    for id in &listed {
        let Some((pack, entry)) = view.get(id)? else {
            return Err(cannot(format!(
                "chunk {id} is referenced but not in the index"
            )));
        };
        live.insert(*id, pack);
        if entry.compression == Compression::ZstdDelta {
            let base = reader
                .delta_base(&pack, &entry)
                .map_err(|e| cannot(e.to_string()))?;
            if !listed.contains(&base) {
                reencode.push((*id, pack, entry));
            }
        }
    }
    // In pack order: the re-encoding reads each pack's frames together.
    reencode.sort_by_key(|(_, pack, entry)| (*pack, entry.frame_offset));
    Ok(Marked { live, reencode })
}

/// What becomes of one pack, and its live share in stored bytes: deleted
/// when no blob in it is live (the index points elsewhere for a blob stored
/// twice), rewritten when the live share is below `threshold`, else kept.
/// A frame's stored bytes count as live in proportion to its live raw bytes.
fn judge(pack: &PackId, entries: &[BlobEntry], live: &Live, threshold: f64) -> (Action, u64) {
    let is_live: Vec<bool> = entries
        .iter()
        .map(|e| live.get(&e.id) == Some(pack))
        .collect();
    // Per frame: stored length, uncompressed bytes, live uncompressed bytes.
    let mut frames: BTreeMap<u32, (u64, u64, u64)> = BTreeMap::new();
    for (e, &l) in entries.iter().zip(&is_live) {
        let f = frames
            .entry(e.frame_offset)
            .or_insert((u64::from(e.frame_len), 0, 0));
        f.1 += u64::from(e.raw_len);
        if l {
            f.2 += u64::from(e.raw_len);
        }
    }
    let total: u64 = frames.values().map(|f| f.0).sum();
    let live_bytes: u64 = frames
        .values()
        .map(|&(stored, raw, live_raw)| {
            if raw == 0 {
                0
            } else {
                (stored as u128 * live_raw as u128 / raw as u128) as u64
            }
        })
        .sum();
    let action = if !is_live.contains(&true) {
        Action::Delete
    } else if (live_bytes as f64) < threshold * total as f64 {
        Action::Rewrite
    } else {
        Action::Keep
    };
    (action, live_bytes)
}

/// Decides, for every pack on disk, whether it is kept, deleted or rewritten.
fn plan_packs(
    repo: &Repository,
    live: &Live,
    threshold: f64,
    notes: &mut Vec<String>,
) -> Result<Vec<PackPlan>> {
    let mut plans = Vec::new();
    for (id, len) in repo.pack_files()? {
        let entries = match repo.read_pack_table(&id, len) {
            Ok(e) => e,
            Err(why) => {
                // Left as it is: its live blobs (if the index points into it)
                // stay served from it, and its dead ones leave the index.
                notes.push(format!(
                    "pack {} left alone: its entry table is unreadable ({why})",
                    repo.describe_pack(&id)
                ));
                continue;
            }
        };
        let (action, live_bytes) = judge(&id, &entries, live, threshold);
        plans.push(PackPlan {
            id,
            len,
            entries,
            action,
            live_bytes,
        });
    }
    Ok(plans)
}

/// Copies the live blobs of the packs to rewrite into new packs (durable,
/// not yet indexed). Whole blobs are verified against their ids before they
/// are copied; deltas only have their header checked (decoding needs the
/// base; `check --read-data` verifies them).
fn rewrite(
    repo: &Repository,
    plans: &[PackPlan],
    live: &Live,
    reencode: &[(ChunkId, PackId, BlobEntry)],
) -> Result<Vec<SealedPack>> {
    let mut writer = BlobWriter::new(repo)?;
    reencode_whole(repo, &mut writer, reencode)?;
    let mut dctx = zstd::bulk::Decompressor::new().ctx(|| "starting zstd".into())?;
    for plan in plans.iter().filter(|p| p.action == Action::Rewrite) {
        let bytes = repo.read_pack(&plan.id)?;
        let corrupt = |detail: String| {
            Error::Repo(RepoError::corrupt(
                format!("pack {}", repo.describe_pack(&plan.id)),
                format!("{detail}; gc stopped before changing anything"),
            ))
        };
        let mut frames: BTreeMap<u32, Vec<&BlobEntry>> = BTreeMap::new();
        for e in &plan.entries {
            frames.entry(e.frame_offset).or_default().push(e);
        }
        for entries in frames.values() {
            let mut live_here = Vec::new();
            for e in entries {
                if live.get(&e.id) == Some(&plan.id) {
                    live_here.push(*e);
                }
            }
            if live_here.is_empty() {
                continue;
            }
            let first = entries[0];
            let sealed = bytes
                .get(first.frame_range().start as usize..first.frame_range().end as usize)
                .ok_or_else(|| corrupt(format!("chunk {} lies past its end", first.id)))?;
            // Opened here, sealed again (with a new nonce) by the writer.
            let stored = &pack::open_frame(repo.crypto(), sealed)
                .map_err(|e| corrupt(format!("chunk {}: {}", first.id, e.0)))?;
            let layout: Vec<(ChunkId, BlobKind, u32, u32)> = entries
                .iter()
                .map(|e| (e.id, e.kind, e.offset_in_frame, e.raw_len))
                .collect();
            if first.compression == Compression::ZstdDelta {
                // Its base is live too (marking followed it); the blob is
                // verified whenever it is read against that base.
                pack::decode_delta_header(stored)
                    .map_err(|e| corrupt(format!("chunk {}: {}", first.id, e.0)))?;
                writer.copy_frame(Compression::ZstdDelta, stored, &layout)?;
                continue;
            }
            let raw = pack::decode_frame(&mut dctx, first.compression, stored)
                .map_err(|e| corrupt(format!("chunk {}: {}", first.id, e.0)))?;
            for e in &live_here {
                pack::blob_in_frame(e, &raw, repo.crypto()).map_err(|x| corrupt(x.0))?;
            }
            if live_here.len() == entries.len() {
                writer.copy_frame(first.compression, stored, &layout)?;
            } else {
                for e in &live_here {
                    let blob =
                        pack::blob_in_frame(e, &raw, repo.crypto()).map_err(|x| corrupt(x.0))?;
                    writer.copy_blob(e.id, e.kind, blob)?;
                }
            }
        }
    }
    Ok(writer.finish_packs()?)
}

/// Stores the chunks to re-encode whole. Two threads each take a contiguous
/// half (the list is in pack order, so each reads its own packs): they decode
/// their chunks through their chains (while every base is still there; each
/// verified against its id) and compress them into frames; this thread puts
/// the frames into packs. Decoding and compressing a GiB of chunks is
/// seconds of work on each core. Stops at the first chunk that does not
/// decode, before anything is indexed.
fn reencode_whole(
    repo: &Repository,
    writer: &mut BlobWriter<'_>,
    reencode: &[(ChunkId, PackId, BlobEntry)],
) -> Result<()> {
    if reencode.is_empty() {
        return Ok(());
    }
    let (tx, rx) = std::sync::mpsc::sync_channel::<EncodedFrame>(4);
    let halves = reencode.split_at(reencode.len().div_ceil(2));
    std::thread::scope(|scope| {
        let workers = [halves.0, halves.1].map(|half| {
            let tx = tx.clone();
            scope.spawn(move || encode_whole(repo, half, tx))
        });
        drop(tx);
        let mut stored: Result<()> = Ok(());
        for (compression, frame, blobs) in rx {
            if let Err(e) = writer.copy_frame(compression, &frame, &blobs) {
                stored = Err(e.into());
                break; // dropping the receiver stops the workers
            }
        }
        let decoded: Vec<Result<()>> = workers
            .into_iter()
            .map(|w| w.join().expect("a re-encoding thread does not panic"))
            .collect();
        stored?;
        decoded.into_iter().collect()
    })
}

/// A frame ready for a pack: its compression, stored bytes, and blobs (id,
/// kind, offset in the frame, length).
type EncodedFrame = (Compression, Vec<u8>, Vec<(ChunkId, BlobKind, u32, u32)>);

/// One re-encoding thread: decodes `chunks` and sends them in frames of the
/// repository's frame size.
fn encode_whole(
    repo: &Repository,
    chunks: &[(ChunkId, PackId, BlobEntry)],
    tx: std::sync::mpsc::SyncSender<EncodedFrame>,
) -> Result<()> {
    let mut reader = BlobReader::new(repo)?;
    let mut compressor = zstd::bulk::Compressor::new(repo.config().compression_level)
        .ctx(|| "starting zstd".into())?;
    let (mut raw, mut blobs, mut scratch) = (Vec::new(), Vec::new(), Vec::new());
    for (n, (id, pack, entry)) in chunks.iter().enumerate() {
        let data = reader.read_entry(pack, entry).map_err(|e| {
            Error::Failed(format!(
                "chunk {id} cannot be decoded to store it whole ({e}); gc stopped \
                 before changing anything: run `rewindb check --read-data`"
            ))
        })?;
        blobs.push((*id, entry.kind, raw.len() as u32, data.len() as u32));
        raw.extend_from_slice(&data);
        if (raw.len() as u64) < repo.config().frame_target_bytes && n + 1 < chunks.len() {
            continue;
        }
        let (compression, stored) =
            crate::repo::writer::encode_frame(&mut compressor, &raw, &mut scratch)
                .ctx(|| "compressing a frame".into())?;
        let frame = (compression, stored.to_vec(), std::mem::take(&mut blobs));
        if tx.send(frame).is_err() {
            break; // the pack writer stopped; it reports why
        }
        raw.clear();
    }
    Ok(())
}

/// WAL archive files no retained base backup needs, with their sizes. A
/// file on timeline T at segment S is needed when some base backup on
/// timeline T or an earlier one (timelines only branch to higher numbers)
/// started at or before S; history files are always kept. A cluster with no
/// base backup keeps all its WAL (a first backup may be under way).
fn wal_garbage(
    repo: &Repository,
    list: &SnapshotList,
    notes: &mut Vec<String>,
) -> Result<Vec<((u64, WalName), u64)>> {
    let archive = repo.wal();
    let mut out = Vec::new();
    for cluster in archive.clusters()? {
        let backups: Vec<(u32, u64, u64)> = list
            .ok
            .iter()
            .filter_map(|(_, s)| s.postgres.as_ref())
            .filter(|pg| pg.system_identifier == cluster)
            .map(|pg| {
                (
                    pg.timeline,
                    pg.start_lsn.0.checked_div(pg.wal_segment_size).unwrap_or(0),
                    pg.wal_segment_size,
                )
            })
            .collect();
        if backups.iter().any(|b| b.2 == 0) {
            notes.push(format!(
                "a base backup of cluster {cluster} records a WAL segment size of 0 (a damaged \
                 snapshot file?): its WAL is kept; run `rewindb check`"
            ));
            continue;
        }
        let files = archive.sizes(cluster)?;
        let Some(&(_, _, seg_size)) = backups.first() else {
            if !files.is_empty() {
                notes.push(format!(
                    "cluster {cluster} has no base backup in the repository: its {} WAL \
                     file(s) are kept; if the cluster is gone, remove {} by hand",
                    files.len(),
                    archive.describe_cluster(cluster)
                ));
            }
            continue;
        };
        for (name, len) in files {
            if name.kind == WalKind::History {
                continue;
            }
            let segno = name.segno(seg_size);
            let needed = backups
                .iter()
                .any(|&(tl, start, _)| tl <= name.timeline && segno >= start);
            if !needed {
                out.push(((cluster, name), len));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_are_judged_by_their_live_share() {
        let pack = PackId::of(b"p");
        let other = PackId::of(b"q");
        let id = |n: u8| ChunkId::of(&[n]);
        // Two frames: 0..100 holding chunks 1 and 2 (raw 300 + 100),
        // 100..400 holding chunk 3 (raw 600).
        let entry = |n: u8, frame_offset: u32, frame_len: u32, raw_len: u32| BlobEntry {
            id: id(n),
            kind: BlobKind::Data,
            compression: Compression::Zstd,
            frame_offset,
            frame_len,
            offset_in_frame: 0,
            raw_len,
        };
        let entries = [
            entry(1, 0, 100, 300),
            entry(2, 0, 100, 100),
            entry(3, 100, 300, 600),
        ];
        let live =
            |ids: &[(u8, PackId)]| -> Live { ids.iter().map(|&(n, p)| (id(n), p)).collect() };
        // All live: kept, all 400 stored bytes live.
        let all = live(&[(1, pack), (2, pack), (3, pack)]);
        assert_eq!(judge(&pack, &entries, &all, 0.8), (Action::Keep, 400));
        // Chunk 3 dead: 75 of the first frame's 100 bytes live (300 of 400 raw).
        let some = live(&[(1, pack)]);
        assert_eq!(judge(&pack, &entries, &some, 0.8), (Action::Rewrite, 75));
        assert_eq!(judge(&pack, &entries, &some, 0.1), (Action::Keep, 75));
        // Live, but the index serves them from another pack: nothing here is.
        let elsewhere = live(&[(1, other), (2, other), (3, other)]);
        assert_eq!(judge(&pack, &entries, &elsewhere, 0.0), (Action::Delete, 0));
        assert_eq!(
            judge(&pack, &entries, &Live::new(), 0.8),
            (Action::Delete, 0)
        );
        // A threshold of 1 rewrites any pack with a dead byte.
        let most = live(&[(1, pack), (3, pack)]);
        assert_eq!(judge(&pack, &entries, &most, 1.0), (Action::Rewrite, 375));
    }

    #[test]
    fn threshold_is_validated_before_anything_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        Repository::init(&root, crate::repo::NewRepository::Plain).unwrap();
        let mut repo = Repository::open(
            &root,
            crate::repo::OpenOptions {
                lock: Some(crate::repo::lock::LockMode::Exclusive),
                lock_wait: std::time::Duration::from_secs(1),
            },
        )
        .unwrap();
        let opts = GcOptions {
            dry_run: true,
            repack_threshold: 1.5,
        };
        assert!(matches!(gc(&mut repo, &opts), Err(Error::Usage(_))));
        let report = gc(&mut repo, &GcOptions::default()).unwrap();
        assert_eq!(report.packs_before, 0);
        assert_eq!(report.reclaimed_bytes, 0);
    }
}
