//! The read side of the chunk pipeline: a file's chunks, in order, looked up,
//! read, decompressed and verified on several threads, and written to a file
//! with its whole-file blake3. Used by every restore that writes files
//! (SQLite databases, streams, a base backup's large files).

use std::fs;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use crate::error::{RepoError, Result, io_err};
use crate::filehash;
use crate::id::{ChunkId, PackId};
use crate::pipeline::direct::FileSink;
use crate::repo::Repository;
use crate::repo::pack::BlobEntry;
use crate::repo::reader::BlobReader;

/// Bytes per lookup batch handed between the restore threads (whole chunks,
/// at least one). A power of two, so that a batch of equal power-of-two
/// chunks is a piece of the blake3 tree.
const RESTORE_BATCH_BYTES: u64 = 1 << 20;
/// Bytes written between two early `fdatasync`s of a restored file.
const FLUSH_EVERY: u64 = 64 << 20;

/// A batch of chunks located in the index, with its offset in the file.
type Located = (u64, Vec<(PackId, BlobEntry)>);
/// A batch read back, with its piece of the whole-file hash.
type Written = (Vec<u8>, Option<filehash::Piece>);

/// The blake3 of the whole file written so far.
fn hash_written(out: &mut fs::File) -> std::io::Result<blake3::Hash> {
    use std::io::{Seek, SeekFrom};
    out.seek(SeekFrom::Start(0))?;
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(&mut *out)?;
    out.seek(SeekFrom::End(0))?;
    Ok(hasher.finalize())
}

/// Writes the chunks `ids` in order to `out`, in four threads joined by
/// bounded channels: index lookups; two readers on alternate batches
/// (decompress, verify each chunk's blake3, hash the batch's piece of the
/// whole file); then this thread, which writes, past the page cache where the
/// file system allows ([`FileSink`]) unless `keep_cached` (something reads
/// the file next: a SQLite check reading it page by page from the disk took
/// 17 s per GiB instead of 4). Otherwise a fifth thread starts the
/// disk writing early (`fdatasync` every `FLUSH_EVERY` bytes), so the final
/// fsync has little left to do. Returns the whole-file hash and size. Any
/// failure stops all of them; the caller's temporary file is then dropped, so
/// nothing reaches the destination.
///
/// `tiles`: the chunks are whole pages of one power-of-two size, so batches
/// of them tile the blake3 tree (see [`filehash`]); otherwise this thread
/// hashes the file as it writes it.
pub fn write_chunks(
    repo: &Repository,
    ids: &[ChunkId],
    tiles: bool,
    out: &mut fs::File,
    path: &Path,
    keep_cached: bool,
) -> Result<(blake3::Hash, u64)> {
    let (to_read_a, from_lookup_a) = sync_channel::<Located>(4);
    let (to_read_b, from_lookup_b) = sync_channel::<Located>(4);
    let (to_write_a, from_read_a) = sync_channel::<Written>(4);
    let (to_write_b, from_read_b) = sync_channel::<Written>(4);
    let flush_file = out
        .try_clone()
        .map_err(io_err(format!("opening {} again", path.display())))?;
    let (to_flush, flush_requests) = sync_channel::<()>(1);
    std::thread::scope(|scope| {
        let lookup = scope.spawn(move || -> Result<()> {
            let view = repo.index()?.view()?;
            let to_read = [to_read_a, to_read_b];
            let mut turn = 0;
            let (mut offset, mut batch_offset) = (0u64, 0u64);
            let mut located = Vec::new();
            for (n, id) in ids.iter().enumerate() {
                let found = view
                    .get(id)?
                    .ok_or(RepoError::ChunkMissing { chunk: *id })?;
                offset += u64::from(found.1.raw_len);
                located.push(found);
                if offset - batch_offset < RESTORE_BATCH_BYTES && n + 1 < ids.len() {
                    continue;
                }
                let batch = (batch_offset, std::mem::take(&mut located));
                if to_read[turn % 2].send(batch).is_err() {
                    break; // a later stage failed and says why
                }
                turn += 1;
                batch_offset = offset;
            }
            Ok(())
        });
        let read = |from_lookup: Receiver<Located>, to_write: SyncSender<Written>| {
            move || -> Result<()> {
                let mut reader = BlobReader::new(repo)?;
                for (offset, located) in from_lookup.iter() {
                    let len = located.iter().map(|(_, e)| e.raw_len as usize).sum();
                    let mut buf = Vec::with_capacity(len);
                    for (pack, entry) in &located {
                        buf.extend_from_slice(&reader.read_entry(pack, entry)?);
                    }
                    let piece = tiles.then(|| filehash::piece(offset, &buf));
                    if to_write.send((buf, piece)).is_err() {
                        break;
                    }
                }
                Ok(())
            }
        };
        let readers = [
            scope.spawn(read(from_lookup_a, to_write_a)),
            scope.spawn(read(from_lookup_b, to_write_b)),
        ];
        let flusher = scope.spawn(move || -> std::io::Result<()> {
            for () in flush_requests.iter() {
                flush_file.sync_data()?;
            }
            Ok(())
        });
        let mut hasher = blake3::Hasher::new();
        let mut pieces = Vec::new();
        let mut size = 0u64;
        let mut unflushed = 0u64;
        let mut sink = match keep_cached {
            true => FileSink::cached(out),
            false => FileSink::new(out, path),
        };
        let direct = sink.is_direct();
        let mut written = Ok(());
        {
            let from_read = [from_read_a, from_read_b];
            for turn in 0.. {
                let Ok((buf, piece)) = from_read[turn % 2].recv() else {
                    break; // that reader is done (or failed, and says why below)
                };
                match piece {
                    Some(piece) => pieces.push(piece),
                    None => {
                        hasher.update(&buf);
                    }
                }
                size += buf.len() as u64;
                crate::progress::add(buf.len() as u64);
                if let Err(e) = sink.write(&buf) {
                    written = Err(e);
                    break;
                }
                unflushed += buf.len() as u64;
                if !direct && unflushed >= FLUSH_EVERY {
                    // Skipped when the flusher is still busy: the next one
                    // covers these bytes too.
                    if to_flush.try_send(()).is_ok() {
                        unflushed = 0;
                    }
                }
            }
        }
        drop(to_flush);
        let written = written.and_then(|()| sink.finish());
        let readers: Vec<Result<()>> = readers
            .into_iter()
            .map(|t| t.join().expect("a read thread does not panic"))
            .collect();
        let lookup = lookup.join().expect("the lookup thread does not panic");
        let flushed = flusher.join().expect("the flush thread does not panic");
        lookup?;
        for r in readers {
            r?;
        }
        written
            .and(flushed)
            .map_err(io_err(format!("writing {}", path.display())))?;
        let hash = match tiles.then(|| filehash::combine(&pieces)).flatten() {
            Some(hash) => hash,
            None if !tiles => hasher.finalize(),
            // Batches of unequal chunks do not tile the tree: hash what was
            // written (never seen: chunks are whole pages of one size).
            None => {
                debug_assert!(false, "restore batches do not tile the blake3 tree");
                hash_written(out).map_err(io_err(format!("reading {}", path.display())))?
            }
        };
        Ok((hash, size))
    })
}
