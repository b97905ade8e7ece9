//! The write side of the chunk pipeline, shared by every source: a file's
//! pages (or a small file in memory) cut into chunks, hashed, delta-encoded
//! against the previous capture, deduplicated and stored through a
//! [`BlobWriter`]; then [`Run::commit`] makes it all durable and commits the
//! snapshot last, and [`settle_index`] tidies the index afterwards.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::filehash;
use crate::id::{ChunkId, SnapshotId};
use crate::repo::Repository;
use crate::repo::delta::DeltaEncoder;
use crate::repo::snapshot::{
    BackupStats, FileEntry, PgBackupInfo, SNAPSHOT_VERSION, Snapshot, SourceKind, StreamInfo,
};
use crate::repo::writer::BlobWriter;

/// After a backup, the index is compacted when at least this share of its
/// file is free. redb is copy-on-write: a commit rewrites every page of the
/// tree that its new entries touch, and the old pages stay in the file as
/// free space. While the index is small, one backup's entries touch most of
/// it and the file doubles (pgbench benchmark: 3.5 MiB of live index in an
/// 8.3 MiB file after the second base backup; compacting took 0.03 s). In
/// a large index a backup touches a small share, and redb reuses it.
pub const COMPACT_AFTER_BACKUP: f64 = 0.5;

/// Compacts the index after a committed backup, when worth it. The snapshot
/// is saved whatever happens here, so a failure is only a warning.
pub fn settle_index(repo: &mut Repository) {
    match repo.compact_index(COMPACT_AFTER_BACKUP) {
        Ok(Some((before, after))) => tracing::debug!("index compacted: {before} -> {after} bytes"),
        Ok(None) => {}
        Err(e) => tracing::warn!(
            "the snapshot is saved, but compacting the index afterwards failed: {e}; \
             `rewindb repair compact-index` retries it"
        ),
    }
}

/// One backup run, from its start to its snapshot.
pub struct Run {
    pub started: Instant,
    pub time: jiff::Timestamp,
    pub source: SourceKind,
    pub label: Option<String>,
    pub name: Option<String>,
}

impl Run {
    /// Makes the run's blobs durable and indexed, then commits its snapshot.
    pub fn commit(
        self,
        repo: &Repository,
        writer: BlobWriter<'_>,
        files: Vec<FileEntry>,
        postgres: Option<PgBackupInfo>,
        stream: Option<StreamInfo>,
    ) -> Result<(SnapshotId, Snapshot)> {
        let written = writer.commit()?;
        tracing::debug!(elapsed = ?self.started.elapsed(), "packs sealed, index committed");
        let snapshot = Snapshot {
            version: SNAPSHOT_VERSION,
            time: self.time,
            source: self.source,
            label: self.label,
            name: self.name,
            hostname: hostname(),
            stats: BackupStats {
                bytes_read: files.iter().map(|f| f.size).sum(),
                chunks: written.chunks,
                chunks_new: written.chunks_new,
                chunks_delta: written.chunks_delta,
                bytes_new: written.bytes_new,
                bytes_added: written.bytes_added,
                duration_secs: self.started.elapsed().as_secs_f64(),
            },
            files,
            postgres,
            stream,
        };
        let id = repo.commit_snapshot(&snapshot)?;
        Ok((id, snapshot))
    }
}

/// Chunks cut by the reading thread, hashed and delta-encoded by a worker,
/// stored by the calling thread.
struct Batch {
    /// Index in the file of the batch's first chunk.
    first: usize,
    /// Offset in the file of the batch's first byte.
    offset: u64,
    data: Vec<u8>,
    /// End offset in `data` of each chunk, in order.
    ends: Vec<usize>,
    /// Per chunk, its id (filled by the worker).
    ids: Vec<ChunkId>,
    /// Per chunk, its delta from its base when one paid (filled by the worker).
    deltas: Vec<Option<Vec<u8>>>,
    /// The batch's share of the whole-file blake3 (filled by the worker).
    piece: Option<filehash::Piece>,
    /// zstd level of the batch's deltas (from its chunk and page lengths).
    delta_level: i32,
}

/// Bytes per batch (whole chunks, at least one): large enough to amortise the
/// channel, small enough that the threads overlap. With chunks of a
/// power-of-two size, a batch is a power of two bytes long, as [`filehash`]
/// needs.
const BATCH_BYTES: usize = 1 << 20;

/// A file as stored: its chunk ids in order, whole-file blake3 and size.
pub struct StoredFile {
    pub ids: Vec<ChunkId>,
    pub blake3: blake3::Hash,
    pub size: u64,
}

/// Hands a file's pages, in order, to the sink it is given.
pub type PageSink<'a> = &'a mut dyn FnMut(&[u8]) -> Result<()>;

/// Stores one file whose pages `read` produces, in four threads joined by
/// bounded channels (memory stays at a few batches whatever the size):
/// reading (`read`, page copies) → two workers (chunk ids, the batch's piece
/// of the whole-file hash, changed chunks delta-encoded against their base)
/// → storing (this thread: dedup lookup, frames, packs). `bases` are the
/// chunk ids of the previous capture of the same file; `chunk_len` gives the
/// length of a chunk from the length of the file's first page (a power of
/// two, a multiple of the page). Returns what `read` returned beside the
/// stored file.
/// How a page-structured file is cut, decided from its first page's size:
/// the chunk length (whole pages) and the zstd level of a changed chunk's
/// delta.
#[derive(Clone, Copy, Debug)]
pub struct ChunkShape {
    pub len: usize,
    pub delta_level: i32,
}

pub fn store_pages<R: Send>(
    writer: &mut BlobWriter<'_>,
    repo: &Repository,
    bases: &[ChunkId],
    shape: impl FnOnce(usize) -> ChunkShape + Send,
    read: impl FnOnce(PageSink<'_>) -> Result<R> + Send,
) -> Result<(StoredFile, R)> {
    // Hashing and delta encoding (reading bases back, decompressing their
    // frames) are the heaviest stages, so two workers take alternate batches;
    // a batch's bases sit in frames of their own, so the workers' caches do
    // not compete. The reading thread only copies pages: measured, it was the
    // bottleneck while it also hashed.
    let (to_delta_a, from_reader_a) = sync_channel::<Batch>(2);
    let (to_delta_b, from_reader_b) = sync_channel::<Batch>(2);
    let (to_store_a, from_delta_a) = sync_channel::<Batch>(2);
    let (to_store_b, from_delta_b) = sync_channel::<Batch>(2);
    let (returned, size, ids, pieces) = std::thread::scope(|scope| {
        let reading = scope.spawn(move || cut_pages(read, shape, [to_delta_a, to_delta_b]));
        let encoding = [
            scope.spawn(move || hash_and_encode(repo, bases, from_reader_a, to_store_a)),
            scope.spawn(move || hash_and_encode(repo, bases, from_reader_b, to_store_b)),
        ];
        let from_delta = [from_delta_a, from_delta_b];
        let mut ids: Vec<ChunkId> = Vec::new();
        let mut pieces: Vec<filehash::Piece> = Vec::new();
        let mut stored: Result<()> = Ok(());
        // Batches alternate between the workers: take them back in turn.
        'batches: for turn in 0.. {
            let Ok(mut batch) = from_delta[turn % 2].recv() else {
                break; // that worker is done (or failed, and says why below)
            };
            pieces.extend(batch.piece);
            crate::progress::add(batch.data.len() as u64);
            let mut start = 0;
            for ((&end, &id), delta) in batch.ends.iter().zip(&batch.ids).zip(&mut batch.deltas) {
                let data = &batch.data[start..end];
                if let Err(e) = writer.add_with_base(id, data, delta.take()) {
                    stored = Err(e.into());
                    break 'batches; // dropping the receivers stops the other threads
                }
                ids.push(id);
                start = end;
            }
        }
        drop(from_delta);
        let encoded: Vec<Result<()>> = encoding
            .into_iter()
            .map(|t| t.join().expect("a delta thread does not panic"))
            .collect();
        let read = reading.join().expect("the reading thread does not panic");
        // The first stage to fail caused the others to stop: report the
        // storing thread's error first, then the workers', then the reader's.
        stored?;
        for e in encoded {
            e?;
        }
        read.map(|(returned, size)| (returned, size, ids, pieces))
    })?;
    // Pages are a power of two bytes long, so batches tile the hash tree.
    let blake3 = filehash::combine(&pieces).ok_or_else(|| {
        Error::Usage(
            "pages of unequal or odd sizes cannot be hashed in batches; please report this".into(),
        )
    })?;
    Ok((StoredFile { ids, blake3, size }, returned))
}

/// Stores a small file held in memory, on this thread: cut in chunks of
/// `chunk_len` bytes, each delta-encoded against its base when that pays.
/// For the many small files of a PostgreSQL data directory, where four
/// threads per file would cost more than they save.
pub fn store_small(
    writer: &mut BlobWriter<'_>,
    encoder: &mut DeltaEncoder<'_>,
    data: &[u8],
    chunk_len: usize,
    bases: &[ChunkId],
) -> Result<StoredFile> {
    let mut ids = Vec::with_capacity(data.len().div_ceil(chunk_len));
    let crypto = writer.crypto().clone();
    for (index, page) in data.chunks(chunk_len).enumerate() {
        let id = crypto.chunk_id(page);
        let delta = match bases.get(index) {
            Some(base) if *base != id => encoder.encode(id, page, *base)?,
            _ => None,
        };
        writer.add_with_base(id, page, delta)?;
        ids.push(id);
    }
    Ok(StoredFile {
        ids,
        blake3: blake3::hash(data),
        size: data.len() as u64,
    })
}

/// A worker: hashes each chunk and the batch, encodes each changed chunk
/// against its base.
fn hash_and_encode(
    repo: &Repository,
    bases: &[ChunkId],
    from_reader: Receiver<Batch>,
    to_store: SyncSender<Batch>,
) -> Result<()> {
    let mut encoder = DeltaEncoder::new(repo, crate::repo::delta::FAST_LEVEL)?;
    let crypto = repo.crypto();
    for mut batch in from_reader.iter() {
        encoder.set_level(batch.delta_level);
        batch.piece = Some(filehash::piece(batch.offset, &batch.data));
        let mut start = 0;
        for (index, &end) in (batch.first..).zip(&batch.ends) {
            let data = &batch.data[start..end];
            let id = crypto.chunk_id(data);
            let delta = match bases.get(index) {
                Some(base) if *base != id => encoder.encode(id, data, *base)?,
                _ => None,
            };
            batch.ids.push(id);
            batch.deltas.push(delta);
            start = end;
        }
        if to_store.send(batch).is_err() {
            break; // the storing thread stopped; it reports why
        }
    }
    Ok(())
}

/// The reading thread: pages → page-aligned chunks, in batches.
fn cut_pages<R>(
    read: impl FnOnce(PageSink<'_>) -> Result<R>,
    shape_for: impl FnOnce(usize) -> ChunkShape,
    tx: [SyncSender<Batch>; 2],
) -> Result<(R, u64)> {
    let mut sent = 0usize;
    let mut chunks_sent = 0usize;
    let mut size = 0u64;
    // Set from the first page: (chunk length, chunks per batch, delta level).
    let mut shape: Option<(usize, usize, i32)> = None;
    let mut shape_for = Some(shape_for);
    let new_batch = |(chunk_len, per_batch, delta_level): (usize, usize, i32)| Batch {
        first: 0,
        offset: 0,
        data: Vec::with_capacity(chunk_len * per_batch),
        ends: Vec::with_capacity(per_batch),
        ids: Vec::with_capacity(per_batch),
        deltas: Vec::with_capacity(per_batch),
        piece: None,
        delta_level,
    };
    let mut batch = new_batch((0, 0, 0));
    let mut send = |mut full: Batch, size: u64| {
        full.first = chunks_sent;
        full.offset = size - full.data.len() as u64;
        chunks_sent += full.ends.len();
        let to = &tx[sent % 2];
        sent += 1;
        to.send(full)
            .map_err(|_| Error::Usage("backup stopped while reading".into()))
    };
    let returned = read(&mut |page: &[u8]| {
        let this = *shape.get_or_insert_with(|| {
            let ChunkShape {
                len: chunk_len,
                delta_level: level,
            } = shape_for.take().expect("called once")(page.len());
            let per_batch = (BATCH_BYTES / chunk_len).max(1);
            batch = new_batch((chunk_len, per_batch, level));
            (chunk_len, per_batch, level)
        });
        let (chunk_len, per_batch, _) = this;
        size += page.len() as u64;
        batch.data.extend_from_slice(page);
        let chunk_start = batch.ends.last().copied().unwrap_or(0);
        if batch.data.len() - chunk_start >= chunk_len {
            batch.ends.push(batch.data.len());
            if batch.ends.len() >= per_batch {
                send(std::mem::replace(&mut batch, new_batch(this)), size)?;
            }
        }
        Ok(())
    })?;
    if batch.data.len() > batch.ends.last().copied().unwrap_or(0) {
        batch.ends.push(batch.data.len());
    }
    if !batch.ends.is_empty() {
        send(batch, size)?;
    }
    Ok((returned, size))
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
