//! Reading blobs back: index lookup, positioned read from the pack, decompress, verify.
//!
//! Every blob returned by [`BlobReader`] has been checked against its blake3 id
//! (invariant 4); a mismatch is an error naming the chunk and pack, never bytes.

use std::collections::HashMap;

use crate::error::{IoContext, RepoError};
use crate::id::{ChunkId, PackId};
use crate::repo::Repository;
use crate::repo::index::IndexView;
use crate::repo::pack::{self, BlobEntry, Compression};
use crate::repo::snapshot::{FileEntry, decode_manifest};
use crate::repo::storage::Object;

/// Open pack files kept at once; more are closed oldest-first.
const MAX_OPEN_PACKS: usize = 64;
/// Bytes of decompressed frames kept (and always the last one): a file's
/// chunks are read in order, and the chunks of one frame were written in
/// order, so a few frames suffice (4 of 1 MiB, 64 of 64 KiB).
const CACHED_FRAME_BYTES: usize = 4 << 20;

pub struct BlobReader<'r> {
    repo: &'r Repository,
    view: IndexView,
    open: HashMap<PackId, Box<dyn Object>>,
    order: Vec<PackId>,
    /// Most recently used last.
    frames: Vec<((PackId, u32), Vec<u8>)>,
    /// Their total length.
    frame_bytes: usize,
    delta: zstd::zstd_safe::DCtx<'static>,
    dctx: zstd::bulk::Decompressor<'static>,
}

impl<'r> BlobReader<'r> {
    pub fn new(repo: &'r Repository) -> Result<Self, RepoError> {
        Ok(BlobReader {
            repo,
            view: repo.index()?.view()?,
            open: HashMap::new(),
            order: Vec::new(),
            frames: Vec::new(),
            frame_bytes: 0,
            delta: zstd::zstd_safe::DCtx::create(),
            dctx: zstd::bulk::Decompressor::new().ctx(|| "starting zstd".into())?,
        })
    }

    /// Where a blob is stored, or `ChunkMissing`.
    pub fn locate(&self, id: &ChunkId) -> Result<(PackId, BlobEntry), RepoError> {
        self.view
            .get(id)?
            .ok_or(RepoError::ChunkMissing { chunk: *id })
    }

    fn pack_file(&mut self, pack: &PackId) -> Result<&dyn Object, RepoError> {
        if !self.open.contains_key(pack) {
            // Its size from the index spares a remote storage a request.
            let len = self.view.pack_len(pack)?;
            let file = self.repo.open_pack(pack, len)?;
            if self.order.len() >= MAX_OPEN_PACKS {
                let oldest = self.order.remove(0);
                self.open.remove(&oldest);
            }
            self.order.push(*pack);
            self.open.insert(*pack, file);
        }
        Ok(self.open[pack].as_ref())
    }

    /// Whether the index holds `id`.
    pub fn contains(&self, id: &ChunkId) -> Result<bool, RepoError> {
        self.view.contains(id)
    }

    /// Reads, decompresses and verifies one blob.
    pub fn read(&mut self, id: &ChunkId) -> Result<Vec<u8>, RepoError> {
        let (pack, entry) = self.locate(id)?;
        self.read_entry(&pack, &entry)
    }

    /// Reads a blob and tells how many deltas deep it is stored (0: whole).
    pub fn read_with_depth(&mut self, id: &ChunkId) -> Result<(Vec<u8>, u8), RepoError> {
        let (pack, entry) = self.locate(id)?;
        self.read_entry_depth(&pack, &entry, pack::MAX_DELTA_DEPTH)
    }

    /// Reads a blob whose location is already known.
    pub fn read_entry(&mut self, pack: &PackId, entry: &BlobEntry) -> Result<Vec<u8>, RepoError> {
        Ok(self.read_entry_depth(pack, entry, pack::MAX_DELTA_DEPTH)?.0)
    }

    fn read_entry_depth(
        &mut self,
        pack: &PackId,
        entry: &BlobEntry,
        depth_left: u8,
    ) -> Result<(Vec<u8>, u8), RepoError> {
        if entry.compression == Compression::ZstdDelta {
            return self.read_delta(pack, entry, depth_left);
        }
        let key = (*pack, entry.frame_offset);
        let pos = match self.frames.iter().position(|(k, _)| *k == key) {
            Some(pos) => pos,
            None => {
                let frame = self.load_frame(pack, entry)?;
                while !self.frames.is_empty() && self.frame_bytes + frame.len() > CACHED_FRAME_BYTES
                {
                    self.frame_bytes -= self.frames.remove(0).1.len();
                }
                self.frame_bytes += frame.len();
                self.frames.push((key, frame));
                self.frames.len() - 1
            }
        };
        let blob =
            pack::blob_in_frame(entry, &self.frames[pos].1, self.repo.crypto()).map_err(|e| {
                RepoError::corrupt(format!("pack {}", self.repo.describe_pack(pack)), e.0)
            })?;
        Ok((blob.to_vec(), 0))
    }

    /// Decodes a delta blob: reads its base (itself perhaps a delta, to a
    /// bounded depth), then decompresses against it and verifies the result.
    fn read_delta(
        &mut self,
        pack: &PackId,
        entry: &BlobEntry,
        depth_left: u8,
    ) -> Result<(Vec<u8>, u8), RepoError> {
        let repo = self.repo;
        let corrupt = |detail: String| {
            RepoError::corrupt(format!("pack {}", repo.describe_pack(pack)), detail)
        };
        let sealed = self.read_stored(pack, entry)?;
        let stored = pack::open_frame(repo.crypto(), &sealed)
            .map_err(|e| corrupt(format!("chunk {}: {}", entry.id, e.0)))?;
        let (base, depth, frame) = pack::decode_delta_header(&stored)
            .map_err(|e| corrupt(format!("chunk {}: {}", entry.id, e.0)))?;
        if depth > depth_left {
            return Err(corrupt(format!(
                "chunk {}: delta chain deeper than {}",
                entry.id,
                pack::MAX_DELTA_DEPTH
            )));
        }
        let (base_pack, base_entry) = self.locate(&base)?;
        let (base_raw, _) = self.read_entry_depth(&base_pack, &base_entry, depth - 1)?;
        let mut raw = Vec::with_capacity(entry.raw_len as usize);
        self.delta
            .decompress_using_dict(&mut raw, frame, &pack::delta_dictionary(&base_raw))
            .map_err(|code| {
                corrupt(format!(
                    "chunk {}: delta does not decompress: {}",
                    entry.id,
                    zstd::zstd_safe::get_error_name(code)
                ))
            })?;
        if raw.len() != entry.raw_len as usize || repo.crypto().chunk_id(&raw) != entry.id {
            return Err(corrupt(format!(
                "blob {} does not match its hash (the pack is damaged)",
                entry.id
            )));
        }
        Ok((raw, depth))
    }

    /// The whole blob at the end of `id`'s chain of delta bases (`id` itself
    /// when it is stored whole).
    pub fn chain_root(&mut self, id: &ChunkId) -> Result<ChunkId, RepoError> {
        let mut at = *id;
        for _ in 0..=pack::MAX_DELTA_DEPTH {
            let (pack, entry) = self.locate(&at)?;
            if entry.compression != Compression::ZstdDelta {
                return Ok(at);
            }
            at = self.delta_base(&pack, &entry)?;
        }
        Err(RepoError::corrupt(
            format!("chunk {id}"),
            format!("delta chain deeper than {}", pack::MAX_DELTA_DEPTH),
        ))
    }

    /// The base a delta blob was encoded against (reads only its header).
    pub fn delta_base(&mut self, pack: &PackId, entry: &BlobEntry) -> Result<ChunkId, RepoError> {
        // gc calls this for every live delta: the path is formatted only for errors.
        let repo = self.repo;
        let mut header = vec![0u8; pack::delta_header_read_len(repo.crypto(), entry)];
        self.pack_file(pack)?
            .read_at(&mut header, u64::from(entry.frame_offset))
            .map_err(|e| repo.pack_error(pack, e))?;
        pack::delta_base_in(repo.crypto(), &header).map_err(|e| {
            RepoError::corrupt(
                format!("pack {}", repo.describe_pack(pack)),
                format!("chunk {}: {}", entry.id, e.0),
            )
        })
    }

    /// The stored bytes of an entry's frame, as they are in the pack.
    fn read_stored(&mut self, pack: &PackId, entry: &BlobEntry) -> Result<Vec<u8>, RepoError> {
        let mut buf = vec![0u8; entry.frame_len as usize];
        let repo = self.repo;
        let file = self.pack_file(pack)?;
        // The pack's name is formatted only for errors (this is the restore loop).
        match file.read_at(&mut buf, u64::from(entry.frame_offset)) {
            Ok(()) => Ok(buf),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(RepoError::corrupt(
                format!("pack {}", repo.describe_pack(pack)),
                format!("truncated: chunk {} lies past its end", entry.id),
            )),
            Err(e) => Err(repo.pack_error(pack, e)),
        }
    }

    fn load_frame(&mut self, pack: &PackId, entry: &BlobEntry) -> Result<Vec<u8>, RepoError> {
        let sealed = self.read_stored(pack, entry)?;
        pack::open_frame(self.repo.crypto(), &sealed)
            .and_then(|stored| pack::decode_frame(&mut self.dctx, entry.compression, &stored))
            .map_err(|e| {
                RepoError::corrupt(
                    format!("pack {}", self.repo.describe_pack(pack)),
                    format!("chunk {}: {}", entry.id, e.0),
                )
            })
    }

    /// Loads the chunk list of a backed-up file.
    pub fn manifest(&mut self, file: &FileEntry) -> Result<Vec<ChunkId>, RepoError> {
        let mut bytes = Vec::with_capacity(file.chunk_count as usize * 32);
        for id in &file.manifest {
            bytes.extend_from_slice(&self.read(id)?);
        }
        decode_manifest(&bytes, file.chunk_count)
            .map_err(|e| RepoError::corrupt(format!("manifest of {}", file.name), e))
    }
}
