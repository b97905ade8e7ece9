//! Frames on their way into packs, on a thread of the writer's own:
//! compressed, appended to the pack being filled, and the pack sealed and
//! handed to [`PackUploads`] when it reaches its target size.
//!
//! [`BlobWriter`](crate::repo::writer::BlobWriter) decides what is new
//! (index lookups) and gathers frames; compressing them is the heaviest part
//! of storing new data, and here it runs beside the lookups instead of
//! between them. Frames are packed in the order they are sent, so packs are
//! the same bytes as when one thread did both. The channel is bounded: a few
//! frames wait at most.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, SyncSender};
use std::thread::JoinHandle;

use crate::error::{IoContext, RepoError};
use crate::id::ChunkId;
use crate::repo::index::SealedPack;
use crate::repo::pack::{self, BlobKind, Compression, PackBuilder};
use crate::repo::upload::PackUploads;

/// A frame for the pack: raw bytes to compress, or bytes already stored
/// form (a delta, or a frame gc copies as it is).
pub(crate) enum Frame {
    Raw(Vec<u8>, Vec<(ChunkId, BlobKind, u32, u32)>),
    Stored(Compression, Vec<u8>, Vec<(ChunkId, BlobKind, u32, u32)>),
}

/// What the packer wrote, once every pack is durable.
pub(crate) struct Packed {
    pub sealed: Vec<SealedPack>,
    /// Each delta blob's base (for index objects).
    pub delta_bases: HashMap<ChunkId, ChunkId>,
    /// Bytes of frames as stored.
    pub bytes_added: u64,
}

/// The sending end; [`finish`](Self::finish) waits for the packer.
pub(crate) struct Packer {
    frames: Option<SyncSender<Frame>>,
    thread: Option<JoinHandle<Result<Packed, RepoError>>>,
}

/// What the packer thread needs to know of the repository.
pub(crate) struct PackerConfig {
    pub level: i32,
    pub pack_target_bytes: u64,
    pub frame_target_bytes: u64,
}

impl Packer {
    pub(crate) fn start(config: PackerConfig, uploads: PackUploads) -> Result<Packer, RepoError> {
        let compressor =
            zstd::bulk::Compressor::new(config.level).ctx(|| "starting zstd".into())?;
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let thread = std::thread::Builder::new()
            .name("rewindb-packer".into())
            .spawn(move || pack_loop(config, compressor, uploads, rx))
            .ctx(|| "starting the packing thread".into())?;
        Ok(Packer {
            frames: Some(tx),
            thread: Some(thread),
        })
    }

    /// Hands a frame over; fails with the packer's error if it stopped.
    pub(crate) fn send(&mut self, frame: Frame) -> Result<(), RepoError> {
        let sent = self.frames.as_ref().map(|tx| tx.send(frame));
        match sent {
            Some(Ok(())) => Ok(()),
            // It stopped on an error: that error is the one to report.
            _ => Err(self.join().err().unwrap_or_else(stopped)),
        }
    }

    /// Packs what is left, seals the last pack and waits until every pack
    /// is durable.
    pub(crate) fn finish(mut self) -> Result<Packed, RepoError> {
        self.join()
    }

    fn join(&mut self) -> Result<Packed, RepoError> {
        self.frames = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(RepoError::Io {
                context: "packing new data".into(),
                source: std::io::Error::other("the packing thread panicked"),
            }),
            None => Err(stopped()),
        }
    }
}

fn stopped() -> RepoError {
    RepoError::Io {
        context: "packing new data".into(),
        source: std::io::Error::other("the packing thread had already stopped"),
    }
}

impl Drop for Packer {
    fn drop(&mut self) {
        // A writer dropped on an error path: let the thread end.
        let _ = self.join();
    }
}

fn pack_loop(
    config: PackerConfig,
    mut compressor: zstd::bulk::Compressor<'static>,
    mut uploads: PackUploads,
    frames: Receiver<Frame>,
) -> Result<Packed, RepoError> {
    // Room for a whole pack from the start: a pack that grew by doubling
    // would hold twice its target once it passed it.
    let capacity = (config.pack_target_bytes + 2 * config.frame_target_bytes) as usize + (64 << 10);
    let mut pack = PackBuilder::with_capacity(capacity);
    let mut scratch = Vec::new();
    let mut out = Packed {
        sealed: Vec::new(),
        delta_bases: HashMap::new(),
        bytes_added: 0,
    };
    for frame in frames {
        let (compression, stored, blobs) = match &frame {
            Frame::Raw(raw, blobs) => {
                scratch.resize(zstd::zstd_safe::compress_bound(raw.len()), 0);
                let n = compressor
                    .compress_to_buffer(raw, &mut scratch[..])
                    .ctx(|| "compressing a frame".into())?;
                match n < raw.len() {
                    true => (Compression::Zstd, &scratch[..n], blobs),
                    false => (Compression::None, &raw[..], blobs),
                }
            }
            Frame::Stored(compression, stored, blobs) => (*compression, &stored[..], blobs),
        };
        if compression == Compression::ZstdDelta
            && let Ok((base, _, _)) = pack::decode_delta_header(stored)
        {
            out.delta_bases.extend(blobs.iter().map(|b| (b.0, base)));
        }
        pack.add_frame(compression, stored, blobs);
        out.bytes_added += stored.len() as u64;
        if pack.len() as u64 >= config.pack_target_bytes {
            let full = std::mem::replace(&mut pack, PackBuilder::with_capacity(capacity));
            seal(full, &mut uploads, &mut out.sealed)?;
        }
    }
    if !pack.is_empty() {
        seal(pack, &mut uploads, &mut out.sealed)?;
    }
    uploads.finish()?;
    Ok(out)
}

/// Finishes a pack and stores it durably (create-only), or hands it to an
/// upload thread: durable once `uploads.finish()` returns.
fn seal(
    pack: PackBuilder,
    uploads: &mut PackUploads,
    sealed: &mut Vec<SealedPack>,
) -> Result<(), RepoError> {
    let (bytes, id, entries) = pack.finish();
    let len = bytes.len() as u64;
    tracing::debug!(pack = %id.short(), blobs = entries.len(), bytes = len, "sealed pack");
    uploads.send(id, bytes)?;
    sealed.push(SealedPack { id, len, entries });
    Ok(())
}
