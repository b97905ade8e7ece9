//! Delta encoding: a changed page stored as its difference from the page it replaced.
//!
//! [`DeltaEncoder::encode`] compresses a chunk with zstd, using its base (the
//! chunk at the same place of the file in the previous snapshot) as the
//! dictionary. The result is kept only when it is much smaller than the chunk
//! would be in a frame. Byte layout: `docs/format.md`, "Packs".

use crate::error::{IoContext, RepoError};
use crate::id::ChunkId;
use crate::repo::Repository;
use crate::repo::pack;
use crate::repo::reader::BlobReader;

/// A delta is kept only when it is at most this fraction of the chunk's size;
/// otherwise the chunk goes into a frame, where it compresses about 2.5x anyway
/// and costs nothing extra to read.
const DELTA_MAX_FRACTION: usize = 4;
/// zstd level for deltas of single pages: with a 4 KiB base as dictionary,
/// level 1 finds nearly all of level 3's matches (measured: 26.7 MiB either
/// way on the SQLite benchmark's incremental) at less cost. Stream chunks
/// (16–256 KiB, content-defined) use it too; other levels are not measured
/// on them.
pub const FAST_LEVEL: i32 = 1;
/// zstd level for deltas of PostgreSQL chunks of several pages (64 KiB). What the pgbench benchmark's
/// second base backup added to the repository, and its wall time, after a
/// minute of churn at 1,300 / 3,600 transactions a second:
/// level 1 15.2 MiB 2.2 s / -; 2 11.9 MiB 1.8 s / 23.8 MiB 2.3 s;
/// 4 - / 22.1 MiB 3.3 s; 5 11.2 MiB / -; 6 9.2 MiB 3.7 s / 16.2 MiB 4.2 s;
/// 9 - / 16.0 MiB 3.5 s. Level 6 (zstd's lazy matching) is the knee: the
/// deltas grow with the churn while a file-level incremental does not, and
/// the extra seconds are few beside the backup's reading.
pub const MULTI_PAGE_LEVEL: i32 = 6;

/// zstd level for deltas of SQLite chunks, whatever their size: on the 1 GiB
/// benchmark database cut in 64 KiB chunks, after a quarter of its pages
/// changed, level 1 stored a 16 MiB incremental in 1.86 s, level 3 15 MiB in
/// 2.54 s and level 6 15 MiB in 4.11 s (`docs/benchmarks.md`, "Chunks of 64
/// KiB"): nearly every chunk has a changed page, so the backup delta-encodes
/// most of the file, and level 1 already finds the unchanged pages whole.
pub const SQLITE_LEVEL: i32 = FAST_LEVEL;

/// The zstd level for deltas of PostgreSQL chunks of `chunk_len` bytes cut
/// from pages of `page_len` bytes.
pub fn level_for(chunk_len: usize, page_len: usize) -> i32 {
    match chunk_len > page_len {
        true => MULTI_PAGE_LEVEL,
        false => FAST_LEVEL,
    }
}

/// Encodes deltas against blobs already in the repository. Owns its own
/// reader, so it can run on a thread of its own beside the writer.
pub struct DeltaEncoder<'r> {
    reader: BlobReader<'r>,
    cctx: zstd::zstd_safe::CCtx<'static>,
    level: i32,
}

impl<'r> DeltaEncoder<'r> {
    /// An encoder compressing at zstd `level` ([`FAST_LEVEL`] or
    /// [`MULTI_PAGE_LEVEL`]).
    pub fn new(repo: &'r Repository, level: i32) -> Result<Self, RepoError> {
        Ok(DeltaEncoder {
            reader: BlobReader::new(repo)?,
            cctx: zstd::zstd_safe::CCtx::create(),
            level,
        })
    }

    /// Compresses later deltas at zstd `level`.
    pub fn set_level(&mut self, level: i32) {
        self.level = level;
    }

    /// The bytes of a blob that could serve as a base (verified), or `None`
    /// when it cannot be read.
    pub fn base_bytes(&mut self, base: &ChunkId) -> Option<Vec<u8>> {
        self.reader.read(base).ok()
    }

    /// The stored bytes of `data` (whose id is `id`) as a delta from `base`,
    /// or `None` when a delta does not pay, the base cannot be read, or the
    /// chunk is already stored (the writer dedups it: a database put back to
    /// an earlier version costs no encoding).
    pub fn encode(
        &mut self,
        id: ChunkId,
        data: &[u8],
        base: ChunkId,
    ) -> Result<Option<Vec<u8>>, RepoError> {
        if self.reader.contains(&id)? {
            return Ok(None);
        }
        let (base_raw, depth) = match self.reader.read_with_depth(&base) {
            Ok(found) => found,
            Err(e) => {
                // A damaged or missing base only means no delta: store whole.
                tracing::debug!("chunk {id}: base {base} unreadable ({e}); storing whole");
                return Ok(None);
            }
        };
        let (base, base_raw, depth) = match depth < pack::MAX_DELTA_DEPTH {
            true => (base, base_raw, depth),
            // The chain is as deep as reads may go. Rather than store the
            // chunk whole, encode it against the chain's root, an older
            // version stored whole: a larger delta than against the newest
            // version, but a chunk that changes in every backup stays a delta.
            false => match self.reader.chain_root(&base).and_then(|root| {
                let raw = self.reader.read(&root)?;
                Ok((root, raw, 0))
            }) {
                // Back to its oldest stored version: the writer dedups it.
                Ok((root, _, _)) if root == id => return Ok(None),
                Ok(root) => root,
                Err(e) => {
                    tracing::debug!("chunk {id}: root of base {base} unreadable ({e})");
                    return Ok(None);
                }
            },
        };
        // compress_using_dict sizes zstd's tables for this chunk and base; a
        // dictionary loaded into the context would size them for any input
        // (measured: 13% of an incremental backup's time went to that).
        let dict = pack::delta_dictionary(&base_raw);
        let mut frame = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
        self.cctx
            .compress_using_dict(&mut frame, data, &dict, self.level)
            .map_err(|code| std::io::Error::other(zstd::zstd_safe::get_error_name(code)))
            .ctx(|| format!("compressing chunk {id}"))?;
        let stored_len = pack::DELTA_HEADER_LEN + frame.len();
        if stored_len * DELTA_MAX_FRACTION > data.len() {
            return Ok(None);
        }
        let mut stored = Vec::with_capacity(stored_len);
        stored.extend_from_slice(base.as_bytes());
        stored.push(depth + 1);
        stored.extend_from_slice(&frame);
        Ok(Some(stored))
    }
}
