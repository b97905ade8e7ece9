//! Storing new blobs: dedup against the index and gather frames; the packer
//! (`packer.rs`, a thread of its own) compresses them and fills and seals packs.
//!
//! [`BlobWriter::add`] returns a blob's id whether or not the blob was new.
//! Sealed packs are stored durably as they fill;
//! [`BlobWriter::commit`] seals the last one and records them all in the index
//! in one transaction. Only after `commit` returns may a snapshot reference the
//! blobs (invariant 1).

use std::collections::HashSet;

use crate::chunker::ChunkerParams;
use crate::error::{IoContext, RepoError};
use crate::id::ChunkId;
use crate::repo::index::{IndexView, SealedPack};
use crate::repo::pack::{BlobKind, Compression};
use crate::repo::packer::{Frame, Packed, Packer, PackerConfig};
use crate::repo::reader::BlobReader;
use crate::repo::{Repository, index_objects};

/// What a writer stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    pub chunks: u64,
    pub chunks_new: u64,
    /// New chunks stored as deltas against their base.
    pub chunks_delta: u64,
    pub bytes_in: u64,
    pub bytes_new: u64,
    /// Compressed bytes of the new blobs as stored in packs.
    pub bytes_added: u64,
}

pub struct BlobWriter<'r> {
    repo: &'r Repository,
    view: IndexView,
    /// Compresses frames and fills and seals packs, on its own thread.
    packer: Packer,
    /// Uncompressed bytes of the frame being filled, and its blobs.
    frame: Vec<u8>,
    frame_blobs: Vec<(ChunkId, BlobKind, u32, u32)>,
    /// Blobs added by this writer but not yet in the index.
    added: HashSet<ChunkId>,
    stats: WriteStats,
    /// Reads blobs of earlier snapshots (their manifests).
    reader: BlobReader<'r>,
}

impl<'r> BlobWriter<'r> {
    /// Needs a repository opened with the exclusive lock.
    pub fn new(repo: &'r Repository) -> Result<Self, RepoError> {
        assert!(repo.writes_index(), "writing needs a writer's lock");
        let view = repo.index()?.view()?;
        let config = repo.config();
        let packer = Packer::start(
            PackerConfig {
                level: config.compression_level,
                pack_target_bytes: config.pack_target_bytes,
                frame_target_bytes: config.frame_target_bytes,
            },
            repo.pack_uploads(),
        )?;
        Ok(BlobWriter {
            repo,
            view,
            packer,
            frame: Vec::new(),
            frame_blobs: Vec::new(),
            added: HashSet::new(),
            stats: WriteStats::default(),
            reader: BlobReader::new(repo)?,
        })
    }

    pub fn chunker(&self) -> ChunkerParams {
        self.repo.config().chunker
    }

    /// Stores `data` unless a blob with its id is already stored; returns the id.
    pub fn add(&mut self, kind: BlobKind, data: &[u8]) -> Result<ChunkId, RepoError> {
        let id = ChunkId::of(data);
        self.add_with_id(id, kind, data)?;
        Ok(id)
    }

    /// As [`add`](Self::add) for file data. `delta` is this chunk encoded
    /// against its base (the chunk at the same place of the file in the
    /// previous snapshot) by a [`DeltaEncoder`](crate::repo::delta::DeltaEncoder),
    /// when that paid. A new chunk is stored as the delta if there is one.
    /// `id` must be the blake3 of `data` (the caller hashes on another thread).
    pub fn add_with_base(
        &mut self,
        id: ChunkId,
        data: &[u8],
        delta: Option<Vec<u8>>,
    ) -> Result<ChunkId, RepoError> {
        debug_assert_eq!(id, ChunkId::of(data));
        // No shortcut for `base == Some(id)` (unchanged since the previous
        // snapshot): the index lookup is what lets a backup store again the
        // pages of a lost pack once `repair index` has dropped them (measured:
        // no slower on the benchmark's incremental).
        debug_assert!(
            delta.as_ref().is_none_or(|d| d[..32] != *id.as_bytes()),
            "a delta of chunk {id} against itself"
        );
        match delta {
            Some(stored) if !(self.added.contains(&id) || self.view.contains(&id)?) => {
                self.stats.chunks += 1;
                self.stats.bytes_in += data.len() as u64;
                self.stats.chunks_new += 1;
                self.stats.chunks_delta += 1;
                self.stats.bytes_new += data.len() as u64;
                self.stats.bytes_added += stored.len() as u64;
                self.added.insert(id);
                self.packer.send(Frame::Stored(
                    Compression::ZstdDelta,
                    stored,
                    vec![(id, BlobKind::Data, 0, data.len() as u32)],
                ))?;
            }
            _ => {
                self.add_with_id(id, BlobKind::Data, data)?;
            }
        }
        Ok(id)
    }

    /// Whether the repository (or this writer) already has blob `id`.
    pub fn has(&self, id: &ChunkId) -> Result<bool, RepoError> {
        Ok(self.added.contains(id) || self.view.contains(id)?)
    }

    /// Reads blobs already in the repository (a previous snapshot's manifest, say).
    pub fn reader(&mut self) -> &mut BlobReader<'r> {
        &mut self.reader
    }

    /// As [`add`](Self::add), for a caller that already hashed `data` (the id must be its blake3).
    pub fn add_with_id(
        &mut self,
        id: ChunkId,
        kind: BlobKind,
        data: &[u8],
    ) -> Result<bool, RepoError> {
        debug_assert_eq!(id, ChunkId::of(data));
        self.stats.chunks += 1;
        self.stats.bytes_in += data.len() as u64;
        if self.added.contains(&id) || self.view.contains(&id)? {
            return Ok(false);
        }
        self.frame_blobs
            .push((id, kind, self.frame.len() as u32, data.len() as u32));
        self.frame.extend_from_slice(data);
        self.stats.chunks_new += 1;
        self.stats.bytes_new += data.len() as u64;
        self.added.insert(id);
        if self.frame.len() as u64 >= self.repo.config().frame_target_bytes {
            self.flush_frame()?;
        }
        Ok(true)
    }

    /// gc: stores a blob that is already in the repository (in a pack about
    /// to be removed) again, without the dedup lookup.
    pub fn copy_blob(&mut self, id: ChunkId, kind: BlobKind, data: &[u8]) -> Result<(), RepoError> {
        debug_assert_eq!(id, ChunkId::of(data));
        if !self.added.insert(id) {
            return Ok(());
        }
        self.frame_blobs
            .push((id, kind, self.frame.len() as u32, data.len() as u32));
        self.frame.extend_from_slice(data);
        self.stats.chunks += 1;
        self.stats.bytes_in += data.len() as u64;
        if self.frame.len() as u64 >= self.repo.config().frame_target_bytes {
            self.flush_frame()?;
        }
        Ok(())
    }

    /// gc: copies a frame as it is stored (its blobs all live, or a delta),
    /// without decompressing it.
    pub fn copy_frame(
        &mut self,
        compression: Compression,
        stored: &[u8],
        blobs: &[(ChunkId, BlobKind, u32, u32)],
    ) -> Result<(), RepoError> {
        if blobs.iter().all(|b| self.added.contains(&b.0)) {
            return Ok(());
        }
        self.added.extend(blobs.iter().map(|b| b.0));
        self.stats.chunks += blobs.len() as u64;
        self.stats.bytes_added += stored.len() as u64;
        self.packer
            .send(Frame::Stored(compression, stored.to_vec(), blobs.to_vec()))
    }

    /// Seals the last pack and returns every pack written, durable on disk
    /// but not yet in the index (gc records them with what they replace).
    pub fn finish_packs(mut self) -> Result<Vec<SealedPack>, RepoError> {
        self.flush_frame()?;
        let packed = self.packer.finish()?;
        store_index_object(self.repo, &packed)?;
        Ok(packed.sealed)
    }

    /// Stores a manifest (the ordered chunk ids of one file) as content-defined
    /// meta blobs, so that consecutive snapshots of a file share most of them.
    pub fn add_manifest(&mut self, ids: &[ChunkId]) -> Result<Vec<ChunkId>, RepoError> {
        let bytes = crate::repo::snapshot::encode_manifest(ids);
        let params = self.chunker();
        let mut out = Vec::new();
        for piece in params.cdc_chunks(&bytes) {
            out.push(self.add(BlobKind::Meta, piece)?);
        }
        Ok(out)
    }

    /// Hands the frame being filled to the packer, which compresses it.
    fn flush_frame(&mut self) -> Result<(), RepoError> {
        if self.frame_blobs.is_empty() {
            return Ok(());
        }
        let capacity = self.repo.config().frame_target_bytes as usize * 2;
        let frame = std::mem::replace(&mut self.frame, Vec::with_capacity(capacity));
        let blobs = std::mem::take(&mut self.frame_blobs);
        self.packer.send(Frame::Raw(frame, blobs))
    }

    /// Seals the last pack and records every sealed pack in the index, durably.
    pub fn commit(mut self) -> Result<WriteStats, RepoError> {
        self.flush_frame()?;
        let packed = self.packer.finish()?;
        store_index_object(self.repo, &packed)?;
        // Read views must end before the index takes a write transaction.
        drop(self.view);
        drop(self.reader);
        if !packed.sealed.is_empty() {
            self.repo.index()?.add_packs(&packed.sealed)?;
        }
        // Every frame as stored, the compressed ones included.
        self.stats.bytes_added = packed.bytes_added;
        Ok(self.stats)
    }

    /// What this writer has stored so far (`bytes_added` counts compressed
    /// frames only once `commit` has packed them all).
    pub fn stats(&self) -> WriteStats {
        self.stats
    }
}

/// A remote repository's index object for the packs a writer sealed, once
/// they are all durable and before anything refers to them.
fn store_index_object(repo: &Repository, packed: &Packed) -> Result<(), RepoError> {
    if !repo.writes_index_objects() || packed.sealed.is_empty() {
        return Ok(());
    }
    let tables: Vec<index_objects::PackTable> = packed
        .sealed
        .iter()
        .map(|p| index_objects::PackTable {
            id: p.id,
            len: p.len,
            entries: p.entries.clone(),
            bases: p
                .entries
                .iter()
                .filter_map(|e| Some((e.id, *packed.delta_bases.get(&e.id)?)))
                .collect(),
        })
        .collect();
    index_objects::store(repo.storage(), &tables)
        .ctx(|| format!("writing an index object to {}", repo.location()))?;
    Ok(())
}
