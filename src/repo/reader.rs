//! Reading blobs back: index lookup, positioned read from the pack, decompress, verify.
//!
//! Every blob returned by [`BlobReader`] has been checked against its blake3 id
//! (invariant 4); a mismatch is an error naming the chunk and pack, never bytes.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::error::{IoContext, RepoError};
use crate::id::{ChunkId, PackId};
use crate::repo::Repository;
use crate::repo::index::IndexView;
use crate::repo::pack::{self, BlobEntry};
use crate::repo::snapshot::{FileEntry, decode_manifest};

/// Open pack files kept at once; more are closed oldest-first.
const MAX_OPEN_PACKS: usize = 64;

pub struct BlobReader<'r> {
    repo: &'r Repository,
    view: IndexView,
    open: HashMap<PackId, File>,
    order: Vec<PackId>,
    buf: Vec<u8>,
}

impl<'r> BlobReader<'r> {
    pub fn new(repo: &'r Repository) -> Result<Self, RepoError> {
        Ok(BlobReader {
            repo,
            view: repo.index()?.view()?,
            open: HashMap::new(),
            order: Vec::new(),
            buf: Vec::new(),
        })
    }

    /// Where a blob is stored, or `ChunkMissing`.
    pub fn locate(&self, id: &ChunkId) -> Result<(PackId, BlobEntry), RepoError> {
        self.view
            .get(id)?
            .ok_or(RepoError::ChunkMissing { chunk: *id })
    }

    fn pack_file(&mut self, pack: &PackId) -> Result<&File, RepoError> {
        if !self.open.contains_key(pack) {
            let path = self.repo.pack_path(pack);
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(RepoError::PackMissing { pack: *pack, path });
                }
                Err(e) => return Err(e).ctx(|| format!("opening pack {}", path.display())),
            };
            if self.order.len() >= MAX_OPEN_PACKS {
                let oldest = self.order.remove(0);
                self.open.remove(&oldest);
            }
            self.order.push(*pack);
            self.open.insert(*pack, file);
        }
        Ok(&self.open[pack])
    }

    /// Reads, decompresses and verifies one blob.
    pub fn read(&mut self, id: &ChunkId) -> Result<Vec<u8>, RepoError> {
        let (pack, entry) = self.locate(id)?;
        self.read_entry(&pack, &entry)
    }

    /// Reads a blob whose location is already known.
    pub fn read_entry(&mut self, pack: &PackId, entry: &BlobEntry) -> Result<Vec<u8>, RepoError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(entry.stored_len as usize, 0);
        let path = self.repo.pack_path(pack);
        let file = self.pack_file(pack)?;
        match file.read_exact_at(&mut buf, entry.offset) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(RepoError::corrupt(
                    format!("pack {}", path.display()),
                    format!("truncated: chunk {} lies past its end", entry.id),
                ));
            }
            Err(e) => return Err(e).ctx(|| format!("reading pack {}", path.display())),
        }
        let result = pack::decode_blob(entry, &buf)
            .map_err(|e| RepoError::corrupt(format!("pack {}", path.display()), e.0));
        self.buf = buf;
        result
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
