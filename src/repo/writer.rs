//! Storing new blobs: dedup against the index, compress, fill packs, seal them durably.
//!
//! [`BlobWriter::add`] returns a blob's id whether or not the blob was new.
//! Sealed packs are stored durably as they fill;
//! [`BlobWriter::commit`] seals the last one and records them all in the index
//! in one transaction. Only after `commit` returns may a snapshot reference the
//! blobs (invariant 1).

use std::collections::{HashMap, HashSet};

use crate::chunker::ChunkerParams;
use crate::error::{IoContext, RepoError};
use crate::id::ChunkId;
use crate::repo::index::{IndexView, SealedPack};
use crate::repo::pack::{BlobKind, Compression, PackBuilder};
use crate::repo::reader::BlobReader;
use crate::repo::upload::PackUploads;
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
    compressor: zstd::bulk::Compressor<'static>,
    scratch: Vec<u8>,
    pack: PackBuilder,
    /// Uncompressed bytes of the frame being filled, and its blobs.
    frame: Vec<u8>,
    frame_blobs: Vec<(ChunkId, BlobKind, u32, u32)>,
    /// Blobs added by this writer but not yet in the index.
    added: HashSet<ChunkId>,
    sealed: Vec<SealedPack>,
    /// Each delta blob's base, for the index object of a remote repository
    /// (none kept for a local one: 8 MiB after a 4 GiB database's incremental).
    delta_bases: HashMap<ChunkId, ChunkId>,
    uploads: PackUploads,
    stats: WriteStats,
    /// Reads blobs of earlier snapshots (their manifests).
    reader: BlobReader<'r>,
}

impl<'r> BlobWriter<'r> {
    /// Needs a repository opened with the exclusive lock.
    pub fn new(repo: &'r Repository) -> Result<Self, RepoError> {
        assert!(repo.writes_index(), "writing needs a writer's lock");
        let view = repo.index()?.view()?;
        let compressor = zstd::bulk::Compressor::new(repo.config().compression_level)
            .ctx(|| "starting zstd".into())?;
        Ok(BlobWriter {
            repo,
            view,
            compressor,
            scratch: Vec::new(),
            pack: PackBuilder::with_capacity(pack_capacity(repo), repo.crypto().clone()),
            frame: Vec::new(),
            frame_blobs: Vec::new(),
            added: HashSet::new(),
            sealed: Vec::new(),
            delta_bases: HashMap::new(),
            uploads: repo.pack_uploads(),
            stats: WriteStats::default(),
            reader: BlobReader::new(repo)?,
        })
    }

    /// How the repository makes ids (keyed when it is encrypted).
    pub fn crypto(&self) -> &crate::crypto::Crypto {
        self.repo.crypto()
    }

    pub fn chunker(&self) -> ChunkerParams {
        self.repo.config().chunker
    }

    /// Stores `data` unless a blob with its id is already stored; returns the id.
    pub fn add(&mut self, kind: BlobKind, data: &[u8]) -> Result<ChunkId, RepoError> {
        let id = self.repo.crypto().chunk_id(data);
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
        debug_assert_eq!(id, self.repo.crypto().chunk_id(data));
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
                if let Some(base) = delta_base(&stored).filter(|_| self.keeps_bases()) {
                    self.delta_bases.insert(id, base);
                }
                self.pack.add_frame(
                    Compression::ZstdDelta,
                    &stored,
                    &[(id, BlobKind::Data, 0, data.len() as u32)],
                );
                if self.pack.len() as u64 >= self.repo.config().pack_target_bytes {
                    self.seal()?;
                }
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
        debug_assert_eq!(id, self.repo.crypto().chunk_id(data));
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
        debug_assert_eq!(id, self.repo.crypto().chunk_id(data));
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
        if let Some(base) = delta_base(stored)
            .filter(|_| compression == Compression::ZstdDelta && self.keeps_bases())
        {
            for b in blobs {
                self.delta_bases.insert(b.0, base);
            }
        }
        self.stats.chunks += blobs.len() as u64;
        self.stats.bytes_added += stored.len() as u64;
        self.pack.add_frame(compression, stored, blobs);
        if self.pack.len() as u64 >= self.repo.config().pack_target_bytes {
            self.seal()?;
        }
        Ok(())
    }

    /// Seals the last pack and returns every pack written, durable on disk
    /// but not yet in the index (gc records them with what they replace).
    pub fn finish_packs(mut self) -> Result<Vec<SealedPack>, RepoError> {
        self.flush_frame()?;
        self.seal()?;
        self.uploads.finish()?;
        self.store_index_object()?;
        Ok(std::mem::take(&mut self.sealed))
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

    /// Whether delta bases are recorded (for [`store_index_object`](Self::store_index_object)).
    fn keeps_bases(&self) -> bool {
        self.repo.writes_index_objects()
    }

    /// Compresses the frame being filled into the current pack.
    fn flush_frame(&mut self) -> Result<(), RepoError> {
        if self.frame_blobs.is_empty() {
            return Ok(());
        }
        let (compression, stored) =
            encode_frame(&mut self.compressor, &self.frame, &mut self.scratch)
                .ctx(|| "compressing a frame".into())?;
        self.pack.add_frame(compression, stored, &self.frame_blobs);
        self.stats.bytes_added += stored.len() as u64;
        self.frame.clear();
        self.frame_blobs.clear();
        if self.pack.len() as u64 >= self.repo.config().pack_target_bytes {
            self.seal()?;
        }
        Ok(())
    }

    /// Stores the current pack, durably (create-only), or hands it to an
    /// upload thread ([`PackUploads`]): durable by the time `commit` returns.
    fn seal(&mut self) -> Result<(), RepoError> {
        if !self.frame_blobs.is_empty() {
            // flush_frame seals again once the frame is in the pack.
            return self.flush_frame();
        }
        if self.pack.is_empty() {
            return Ok(());
        }
        let builder = std::mem::replace(
            &mut self.pack,
            PackBuilder::with_capacity(pack_capacity(self.repo), self.repo.crypto().clone()),
        );
        let (bytes, id, entries) = builder.finish();
        let len = bytes.len() as u64;
        tracing::debug!(pack = %id.short(), blobs = entries.len(), bytes = len, "sealed pack");
        self.uploads.send(id, bytes)?;
        self.sealed.push(SealedPack { id, len, entries });
        Ok(())
    }

    /// Seals the last pack and records every sealed pack in the index, durably.
    pub fn commit(mut self) -> Result<WriteStats, RepoError> {
        self.flush_frame()?;
        self.seal()?;
        self.uploads.finish()?;
        self.store_index_object()?;
        // Read views must end before the index takes a write transaction.
        drop(self.view);
        drop(self.reader);
        if !self.sealed.is_empty() {
            self.repo.index()?.add_packs(&self.sealed)?;
        }
        Ok(self.stats)
    }

    /// A remote repository's index object for the packs sealed here, once
    /// they are all durable and before anything refers to them.
    fn store_index_object(&self) -> Result<(), RepoError> {
        if !self.repo.writes_index_objects() || self.sealed.is_empty() {
            return Ok(());
        }
        let tables: Vec<index_objects::PackTable> = self
            .sealed
            .iter()
            .map(|p| index_objects::PackTable {
                id: p.id,
                len: p.len,
                entries: p.entries.clone(),
                bases: p
                    .entries
                    .iter()
                    .filter_map(|e| Some((e.id, *self.delta_bases.get(&e.id)?)))
                    .collect(),
            })
            .collect();
        index_objects::store(self.repo.storage(), self.repo.crypto(), &tables)
            .ctx(|| format!("writing an index object to {}", self.repo.location()))?;
        Ok(())
    }

    pub fn stats(&self) -> WriteStats {
        self.stats
    }
}

/// The blobs concatenated in `raw` as a frame's stored bytes: compressed with
/// `compressor` into `scratch`, or `raw` itself when zstd does not make it
/// smaller.
pub fn encode_frame<'a>(
    compressor: &mut zstd::bulk::Compressor<'_>,
    raw: &'a [u8],
    scratch: &'a mut Vec<u8>,
) -> std::io::Result<(Compression, &'a [u8])> {
    scratch.resize(zstd::zstd_safe::compress_bound(raw.len()), 0);
    let n = compressor.compress_to_buffer(raw, &mut scratch[..])?;
    Ok(match n < raw.len() {
        true => (Compression::Zstd, &scratch[..n]),
        false => (Compression::None, raw),
    })
}

/// Room for a whole pack from the start: a pack that grew by doubling would
/// hold twice its target once it passed it.
fn pack_capacity(repo: &Repository) -> usize {
    let config = repo.config();
    (config.pack_target_bytes + 2 * config.frame_target_bytes) as usize + (64 << 10)
}

/// The base a delta frame was encoded against (from its header).
fn delta_base(stored: &[u8]) -> Option<ChunkId> {
    crate::repo::pack::decode_delta_header(stored)
        .ok()
        .map(|(base, _, _)| base)
}
