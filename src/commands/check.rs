//! `check`: verify the repository's structure and, with `--read-data`, every byte.
//!
//! Problems are collected, not returned at the first one, and each names the
//! snapshots it affects, so an operator knows which backups are still good.
//! Packs on disk that the index does not know are reported as orphans: a crash
//! between sealing a pack and committing the index leaves them, harmlessly.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::error::RepoError;
use crate::id::{ChunkId, PackId};
use crate::repo::Repository;
use crate::repo::pack::{self, Compression, MAX_DELTA_DEPTH};
use crate::repo::reader::BlobReader;

#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    pub read_data: bool,
    /// With `read_data`: read only this share of the packs and WAL files
    /// (the others get the structural check).
    pub subset: Option<Subset>,
}

/// Which packs (and WAL files) `check --read-data-subset` reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Subset {
    /// Part `n` of `of` (1-based): a pack's part is fixed by its id, so
    /// running 1/M … M/M (say, one a day) reads every pack once.
    Part { n: u32, of: u32 },
    /// This percentage, chosen afresh each run.
    Percent(f64),
}

impl Subset {
    /// `N/M` (1 ≤ N ≤ M) or `P%` (0 < P ≤ 100).
    pub fn parse(text: &str) -> Result<Subset, String> {
        let bad = || format!("{text:?} is not a subset: give N/M (as 2/7) or a percentage (as 5%)");
        if let Some(p) = text.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            return match p > 0.0 && p <= 100.0 {
                true => Ok(Subset::Percent(p)),
                false => Err(bad()),
            };
        }
        let (n, of) = text.split_once('/').ok_or_else(bad)?;
        let (n, of): (u32, u32) = (
            n.trim().parse().map_err(|_| bad())?,
            of.trim().parse().map_err(|_| bad())?,
        );
        match (1..=of).contains(&n) {
            true => Ok(Subset::Part { n, of }),
            false => Err(bad()),
        }
    }

    /// Whether the object named by `key` (a pack id, a WAL name) is read;
    /// `seed` varies the percentage's choice between runs.
    fn takes(&self, key: &[u8], seed: u64) -> bool {
        match *self {
            Subset::Part { n, of } => {
                let at = u32::from_be_bytes(blake3::hash(key).as_bytes()[..4].try_into().unwrap());
                at % of == n - 1
            }
            Subset::Percent(p) => {
                let mut h = blake3::Hasher::new();
                h.update(&seed.to_le_bytes()).update(key);
                let at = u32::from_be_bytes(h.finalize().as_bytes()[..4].try_into().unwrap());
                f64::from(at) < p / 100.0 * 4_294_967_296.0
            }
        }
    }
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Problem {
    pub what: String,
    /// Snapshot ids (full hex) whose data this problem damages.
    pub affected_snapshots: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    pub snapshots: usize,
    pub packs: usize,
    pub orphan_packs: usize,
    /// Chunks snapshots reference (data and manifests).
    pub chunks_referenced: u64,
    /// Those and the delta bases they need: what gc calls live chunks.
    pub chunks_live: u64,
    pub chunks_read: u64,
    pub bytes_read: u64,
    /// WAL archive files looked at (their headers; with --read-data, all of them).
    pub wal_files: u64,
    pub problems: Vec<Problem>,
    /// The WAL archive's timelines and PITR windows, per cluster.
    pub archive: crate::commands::pitr::ArchiveView,
}

impl CheckReport {
    /// Snapshots named by any problem.
    pub fn affected(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .problems
            .iter()
            .flat_map(|p| p.affected_snapshots.iter().cloned())
            .collect();
        all.sort();
        all.dedup();
        all
    }
}

/// Runs the check. Fails only when the check itself cannot proceed (I/O errors
/// listing the repository); damage is reported in the report.
pub fn check(repo: &Repository, opts: &CheckOptions) -> Result<CheckReport, RepoError> {
    let mut report = CheckReport::default();
    let list = repo.snapshots_as_stored()?;
    report.snapshots = list.ok.len() + list.damaged.len();
    for (id, why) in &list.damaged {
        report.problems.push(Problem {
            what: format!("snapshot file {id} is unreadable: {why}"),
            affected_snapshots: vec![id.to_hex()],
        });
    }
    let all_snapshots: Vec<String> = list.ok.iter().map(|(id, _)| id.to_hex()).collect();
    // The small objects that are not data: a protect marker that does not
    // authenticate protects nothing, and a gc.json that does not (or is older
    // than one this machine saw) misleads every cache.
    for name in repo.protect_markers()?.1 {
        report.problems.push(Problem {
            what: format!(
                "protect marker {} does not authenticate (forged or damaged): it protects \
                 nothing; remove it, and protect the snapshot again if it should be",
                repo.describe(&name)
            ),
            affected_snapshots: Vec::new(),
        });
    }
    if let Err(e) = repo.last_gc() {
        report.problems.push(Problem {
            what: e.to_string(),
            affected_snapshots: Vec::new(),
        });
    }
    let index = match repo.index() {
        Ok(i) => i,
        Err(e) => {
            report.problems.push(Problem {
                what: e.to_string(),
                affected_snapshots: all_snapshots,
            });
            return Ok(report);
        }
    };
    let on_disk: HashMap<PackId, u64> = repo.pack_files()?.into_iter().collect();
    let indexed: HashMap<PackId, u64> = index.packs()?.into_iter().collect();
    report.packs = indexed.len();
    report.orphan_packs = on_disk.keys().filter(|p| !indexed.contains_key(p)).count();

    // Packs that cannot serve their blobs, and blobs that are damaged inside good packs.
    let mut reader = BlobReader::new(repo)?;
    let mut bad_packs: HashMap<PackId, String> = HashMap::new();
    let mut bad_chunks: HashMap<ChunkId, String> = HashMap::new();
    for (pack, len) in &indexed {
        let path = repo.describe_pack(pack);
        match on_disk.get(pack) {
            None => {
                bad_packs.insert(*pack, format!("pack {} is missing", path));
            }
            Some(actual) if actual != len => {
                bad_packs.insert(
                    *pack,
                    format!("pack {} is {actual} bytes, the index recorded {len}", path),
                );
            }
            Some(_) if reads(opts, pack.as_bytes()) => {
                match read_whole_pack(repo, &mut reader, pack) {
                    Ok((entries, damaged)) => {
                        report.chunks_read += entries as u64;
                        report.bytes_read += len;
                        for (chunk, why) in damaged {
                            bad_chunks.insert(chunk, format!("pack {}: {why}", path));
                        }
                    }
                    Err(why) => {
                        bad_packs.insert(*pack, format!("pack {}: {why}", path));
                    }
                }
            }
            Some(_) => {
                if let Err(why) = repo.read_pack_table(pack, *len) {
                    bad_packs.insert(*pack, format!("pack {}: {why}", path));
                }
            }
        }
    }

    // Walk every snapshot's files and collect, per problem, who is affected.
    let mut affected: HashMap<String, Vec<String>> = HashMap::new();
    let mut counted: HashSet<ChunkId> = HashSet::new();
    let mut memo: HashMap<ChunkId, Option<String>> = HashMap::new();
    for (sid, snap) in &list.ok {
        let hit = |what: String, affected: &mut HashMap<String, Vec<String>>| {
            let v = affected.entry(what).or_default();
            if v.last() != Some(&sid.to_hex()) {
                v.push(sid.to_hex());
            }
        };
        for file in &snap.files {
            let chunk_ids = match reader.manifest(file) {
                Ok(ids) => ids,
                Err(e) => {
                    hit(
                        format!("manifest of {} in snapshot {}: {e}", file.name, sid.short()),
                        &mut affected,
                    );
                    continue;
                }
            };
            for id in file.manifest.iter().chain(chunk_ids.iter()) {
                if counted.insert(*id) {
                    report.chunks_referenced += 1;
                }
                let damage = Damage {
                    packs: &bad_packs,
                    chunks: &bad_chunks,
                };
                let found = chunk_problem(&mut reader, id, &damage, &mut memo, MAX_DELTA_DEPTH);
                if let Some(why) = found {
                    hit(why, &mut affected);
                }
            }
        }
    }
    // Every chunk looked at, delta bases included: gc's "live chunks".
    report.chunks_live = memo.len() as u64;
    check_wal(repo, &list.ok, opts, &mut report, &mut affected)?;
    // Damage that no snapshot references is still reported.
    for why in bad_packs.values().chain(bad_chunks.values()) {
        affected.entry(why.clone()).or_default();
    }
    let mut problems: Vec<Problem> = affected
        .into_iter()
        .map(|(what, affected_snapshots)| Problem {
            what,
            affected_snapshots,
        })
        .collect();
    problems.sort_by(|a, b| a.what.cmp(&b.what));
    report.problems.extend(problems);
    Ok(report)
}

/// The WAL archive: every file's header (with --read-data its content too),
/// and, for each base backup, the WAL it needs to become consistent. A
/// damaged segment affects the base backups of its cluster that start at or
/// before it (their recovery would have to read it).
fn check_wal(
    repo: &Repository,
    snapshots: &[(crate::id::SnapshotId, crate::repo::snapshot::Snapshot)],
    opts: &CheckOptions,
    report: &mut CheckReport,
    affected: &mut HashMap<String, Vec<String>>,
) -> Result<(), RepoError> {
    use crate::commands::pitr::{ClusterArchive, wal_for_consistency};
    use crate::repo::wal::WalKind;
    let archive = repo.wal();
    let mut clusters: HashMap<u64, ClusterArchive> = HashMap::new();
    for sysid in archive.clusters()? {
        // The segment size of the cluster's base backups (16 MiB without one:
        // only timelines' segment numbers depend on it).
        let seg_size = snapshots
            .iter()
            .filter_map(|(_, s)| s.postgres.as_ref())
            .find(|pg| pg.system_identifier == sysid)
            .map_or(16 << 20, |pg| pg.wal_segment_size);
        let cluster = ClusterArchive::read(&archive, sysid, seg_size)?;
        for name in &cluster.names {
            let result = match reads(opts, name.as_str().as_bytes()) {
                true => archive.read(sysid, name).map(|r| r.is_some()),
                false => archive.header(sysid, name).map(|h| h.is_some()),
            };
            let e = match result {
                Ok(true) => {
                    report.wal_files += 1;
                    continue;
                }
                // Removed since the listing (gc of WAL no backup needs): skip.
                Ok(false) => continue,
                Err(e) => {
                    report.wal_files += 1;
                    e
                }
            };
            let users: Vec<String> = snapshots
                .iter()
                .filter(|(_, s)| {
                    s.postgres.as_ref().is_some_and(|pg| {
                        pg.system_identifier == sysid
                            && (name.kind == WalKind::History
                                || name.segno(pg.wal_segment_size)
                                    >= pg.start_lsn.0 / pg.wal_segment_size)
                    })
                })
                .map(|(id, _)| id.to_hex())
                .collect();
            affected.entry(e.to_string()).or_default().extend(users);
        }
        clusters.insert(sysid, cluster);
    }
    for (id, snap) in snapshots {
        let Some(pg) = &snap.postgres else { continue };
        let gap = match clusters.get(&pg.system_identifier) {
            Some(cluster) => wal_for_consistency(cluster, &archive, pg)?,
            None => Some(format!(
                "no WAL of cluster {} is in the repository",
                pg.system_identifier
            )),
        };
        if let Some(gap) = gap {
            affected
                .entry(format!("base backup {}: {gap}", id.short()))
                .or_default()
                .push(id.to_hex());
        }
    }
    report.archive = crate::commands::pitr::archive_view_of(&archive, snapshots, clusters)?;
    Ok(())
}

/// What the pack pass found wrong.
struct Damage<'a> {
    packs: &'a HashMap<PackId, String>,
    chunks: &'a HashMap<ChunkId, String>,
}

/// Why chunk `id` cannot be read, if it cannot: not indexed, in a bad pack,
/// damaged, or a delta whose base (followed down the chain) has one of those
/// problems. A delta reports its base's problem unchanged, so that every
/// snapshot that needs the lost base is listed under that one problem.
fn chunk_problem(
    reader: &mut BlobReader<'_>,
    id: &ChunkId,
    damage: &Damage<'_>,
    memo: &mut HashMap<ChunkId, Option<String>>,
    depth_left: u8,
) -> Option<String> {
    if let Some(known) = memo.get(id) {
        return known.clone();
    }
    let found = match reader.locate(id) {
        Err(RepoError::ChunkMissing { .. }) => Some(format!("chunk {id} is not in the index")),
        Err(e) => Some(e.to_string()),
        Ok((pack, entry)) => {
            if let Some(why) = damage.packs.get(&pack) {
                Some(why.clone())
            } else if let Some(why) = damage.chunks.get(id) {
                Some(why.clone())
            } else if entry.compression != Compression::ZstdDelta {
                None
            } else if depth_left == 0 {
                Some(format!(
                    "chunk {id}: delta chain deeper than {MAX_DELTA_DEPTH}"
                ))
            } else {
                match reader.delta_base(&pack, &entry) {
                    Ok(base) => chunk_problem(reader, &base, damage, memo, depth_left - 1),
                    Err(e) => Some(e.to_string()),
                }
            }
        }
    };
    memo.insert(*id, found.clone());
    found
}

/// Whether `check` reads the object named by `key` whole (`--read-data`,
/// and in the subset if one was asked for).
fn reads(opts: &CheckOptions, key: &[u8]) -> bool {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| jiff::Timestamp::now().as_nanosecond() as u64);
    opts.read_data && opts.subset.is_none_or(|s| s.takes(key, seed))
}

/// Reads a whole pack, checks its hash, and decodes and verifies every blob.
/// Returns the number of blobs and those that failed.
fn read_whole_pack(
    repo: &Repository,
    reader: &mut BlobReader<'_>,
    pack: &PackId,
) -> Result<(usize, Vec<(ChunkId, String)>), String> {
    let bytes = repo.read_pack(pack).map_err(|e| e.to_string())?;
    let crypto = repo.crypto();
    let entries = pack::decode_pack(&bytes, crypto).map_err(|e| e.0)?;
    let mut damaged = Vec::new();
    // Entries of one frame are consecutive: decompress each frame once.
    let mut frame: Option<(u32, Result<Vec<u8>, String>)> = None;
    let mut dctx = zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?;
    for e in &entries {
        if e.compression == Compression::ZstdDelta {
            // A delta the index does not point to here is garbage (gc removes
            // such blobs' bases and index entries, but rewrites only packs
            // that are mostly garbage): nothing can read it, so it is not damage.
            match reader.locate(&e.id) {
                Ok((p, _)) if p == *pack => {}
                Ok(_) | Err(RepoError::ChunkMissing { .. }) => continue,
                Err(why) => {
                    damaged.push((e.id, why.to_string()));
                    continue;
                }
            }
            // A delta decodes only against its base: the reader follows the chain.
            if let Err(why) = reader.read_entry(pack, e) {
                damaged.push((e.id, why.to_string()));
            }
            continue;
        }
        if frame.as_ref().is_none_or(|(at, _)| *at != e.frame_offset) {
            let r = e.frame_range();
            let stored = &bytes[r.start as usize..r.end as usize];
            frame = Some((
                e.frame_offset,
                pack::open_frame(crypto, stored)
                    .and_then(|stored| pack::decode_frame(&mut dctx, e.compression, &stored))
                    .map_err(|x| x.0),
            ));
        }
        let result = match &frame.as_ref().expect("set above").1 {
            Ok(raw) => pack::blob_in_frame(e, raw, crypto)
                .map(|_| ())
                .map_err(|x| x.0),
            Err(why) => Err(why.clone()),
        };
        if let Err(why) = result {
            damaged.push((e.id, why));
        }
    }
    Ok((entries.len(), damaged))
}

/// Lists snapshot ids for messages.
pub fn short_ids(ids: &[String]) -> String {
    ids.iter()
        .map(|h| h.get(..8).unwrap_or(h))
        .collect::<Vec<_>>()
        .join(", ")
}
