//! Pack files: immutable containers of compressed blobs that describe their own contents.
//!
//! A pack is `magic | blob bytes... | entries | trailer` (byte layout in
//! `docs/format.md`). The entry table at the end lists every blob's id, kind,
//! compression, offset and lengths, so the index can be rebuilt from the packs
//! alone. This module only encodes and decodes bytes; reading and writing files
//! is the repository's job.

use std::borrow::Cow;

use crate::crypto::{Crypto, aad};
use crate::id::{ChunkId, PackId};

pub const PACK_MAGIC: &[u8; 8] = b"RWDBPAK1";
pub const PACK_END: &[u8; 8] = b"RWDBEND1";
/// Bytes per entry in the entry table.
pub const ENTRY_LEN: usize = 50;
/// `entry count (u32) | blake3 of the entry table (32) | PACK_END (8)`.
pub const TRAILER_LEN: usize = 4 + 32 + 8;
/// No blob, and no frame, is larger than this, compressed or not; decoders
/// refuse larger lengths instead of allocating them.
pub const MAX_BLOB_LEN: u32 = 16 << 20;
pub const MAX_FRAME_LEN: u32 = 32 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobKind {
    /// Bytes of a backed-up file.
    Data = 0,
    /// Bytes of a manifest (a file's chunk list).
    Meta = 1,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None = 0,
    Zstd = 1,
    /// A single blob stored as a difference from another blob (its base):
    /// `base id (32) | depth (u8) | zstd frame compressed with the base as
    /// dictionary` (see [`delta_dictionary`]).
    ZstdDelta = 2,
}

/// A delta's base may itself be a delta; chains are cut at this depth (the
/// writer encodes against the chain's root, a whole blob, instead), so a read
/// never follows more.
pub const MAX_DELTA_DEPTH: u8 = 4;
pub const DELTA_HEADER_LEN: usize = 33;

/// The zstd dictionary a delta is compressed against: eight zero bytes, then
/// the base. The zeros keep zstd from reading a base that happens to start
/// with its dictionary magic as a structured dictionary.
pub fn delta_dictionary(base: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(8 + base.len());
    d.extend_from_slice(&[0u8; 8]);
    d.extend_from_slice(base);
    d
}

/// Splits a delta blob's stored bytes into base id, depth and zstd frame.
pub fn decode_delta_header(stored: &[u8]) -> Result<(ChunkId, u8, &[u8]), DecodeError> {
    if stored.len() < DELTA_HEADER_LEN {
        return err("delta blob is shorter than its header");
    }
    let base = ChunkId(stored[..32].try_into().unwrap());
    let depth = stored[32];
    if depth == 0 || depth > MAX_DELTA_DEPTH {
        return err(format!(
            "delta depth {depth} is outside 1..={MAX_DELTA_DEPTH}"
        ));
    }
    Ok((base, depth, &stored[DELTA_HEADER_LEN..]))
}

/// Where one blob sits inside its pack and how to turn it back into bytes.
///
/// Blobs are stored in frames: a frame is the concatenation of several blobs'
/// bytes, compressed together (small database pages compress far better in
/// company). A blob is `raw_len` bytes at `offset_in_frame` of its frame's
/// uncompressed bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobEntry {
    pub id: ChunkId,
    pub kind: BlobKind,
    pub compression: Compression,
    /// Where the frame's stored bytes start in the pack, and how many there are.
    pub frame_offset: u32,
    pub frame_len: u32,
    pub offset_in_frame: u32,
    pub raw_len: u32,
}

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(msg.into()))
}

impl BlobEntry {
    /// Encodes everything but the id (the index stores the id as its key).
    pub fn encode_location(&self, out: &mut [u8; 18]) {
        out[0] = self.kind as u8;
        out[1] = self.compression as u8;
        out[2..6].copy_from_slice(&self.frame_offset.to_le_bytes());
        out[6..10].copy_from_slice(&self.frame_len.to_le_bytes());
        out[10..14].copy_from_slice(&self.offset_in_frame.to_le_bytes());
        out[14..18].copy_from_slice(&self.raw_len.to_le_bytes());
    }

    pub fn decode_location(id: ChunkId, b: &[u8; 18]) -> Result<Self, DecodeError> {
        let kind = match b[0] {
            0 => BlobKind::Data,
            1 => BlobKind::Meta,
            k => return err(format!("unknown blob kind {k}")),
        };
        let compression = match b[1] {
            0 => Compression::None,
            1 => Compression::Zstd,
            2 => Compression::ZstdDelta,
            c => return err(format!("unknown compression {c}")),
        };
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let entry = BlobEntry {
            id,
            kind,
            compression,
            frame_offset: u32_at(2),
            frame_len: u32_at(6),
            offset_in_frame: u32_at(10),
            raw_len: u32_at(14),
        };
        let blob_end = u64::from(entry.offset_in_frame) + u64::from(entry.raw_len);
        if entry.frame_len > MAX_FRAME_LEN
            || entry.raw_len > MAX_BLOB_LEN
            || blob_end > u64::from(MAX_FRAME_LEN)
        {
            return err(format!(
                "blob {id} claims a {}-byte frame / {} raw bytes at {}, over the limits",
                entry.frame_len, entry.raw_len, entry.offset_in_frame
            ));
        }
        if entry.compression == Compression::None && blob_end > u64::from(entry.frame_len) {
            return err(format!(
                "uncompressed blob {id} lies past the end of its frame"
            ));
        }
        if entry.compression == Compression::ZstdDelta && entry.offset_in_frame != 0 {
            return err(format!("delta blob {id} does not start its frame"));
        }
        Ok(entry)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.id.as_bytes());
        let mut loc = [0u8; 18];
        self.encode_location(&mut loc);
        out.extend_from_slice(&loc);
    }

    fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let id = ChunkId(b[..32].try_into().unwrap());
        Self::decode_location(id, b[32..ENTRY_LEN].try_into().unwrap())
    }

    /// The byte range this blob's frame occupies in its pack.
    pub fn frame_range(&self) -> std::ops::Range<u64> {
        u64::from(self.frame_offset)..u64::from(self.frame_offset) + u64::from(self.frame_len)
    }
}

/// Collects blobs in memory and produces a finished pack. In an encrypted
/// repository each frame and the entry table are sealed as they are added.
pub struct PackBuilder {
    buf: Vec<u8>,
    /// Bytes the buffer gets room for when the first frame comes (not
    /// before: a writer that seals a pack makes the next builder at once,
    /// and at its commit no frame follows).
    room: usize,
    entries: Vec<BlobEntry>,
    crypto: Crypto,
}

impl Default for PackBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PackBuilder {
    /// A plain pack's builder.
    pub fn new() -> Self {
        Self::with_capacity(1 << 20, Crypto::plain())
    }

    /// A builder whose buffer, once a frame comes, holds `bytes` before it
    /// grows, sealing with `crypto`.
    pub fn with_capacity(bytes: usize, crypto: Crypto) -> Self {
        PackBuilder {
            buf: PACK_MAGIC.to_vec(),
            room: bytes,
            entries: Vec::new(),
            crypto,
        }
    }

    /// Appends a frame whose bytes are already compressed as `compression`
    /// says, holding `blobs`: (id, kind, offset in the frame, length).
    pub fn add_frame(
        &mut self,
        compression: Compression,
        stored: &[u8],
        blobs: &[(ChunkId, BlobKind, u32, u32)],
    ) {
        if self.entries.is_empty() {
            self.buf.reserve(self.room.saturating_sub(self.buf.len()));
        }
        let frame_offset = self.buf.len() as u32;
        self.crypto.seal_to(aad::FRAME, stored, &mut self.buf);
        let frame_len = (self.buf.len() - frame_offset as usize) as u32;
        for &(id, kind, offset_in_frame, raw_len) in blobs {
            self.entries.push(BlobEntry {
                id,
                kind,
                compression,
                frame_offset,
                frame_len,
                offset_in_frame,
                raw_len,
            });
        }
    }

    /// Bytes so far, without the entry table.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends the entry table and trailer; returns the pack's bytes, id and entries.
    pub fn finish(mut self) -> (Vec<u8>, PackId, Vec<BlobEntry>) {
        let table_start = self.buf.len();
        let table = encode_table(&self.entries);
        self.crypto.seal_to(aad::PACK_TABLE, &table, &mut self.buf);
        let table_hash = blake3::hash(&self.buf[table_start..]);
        self.buf
            .extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(table_hash.as_bytes());
        self.buf.extend_from_slice(PACK_END);
        let id = PackId::of(&self.buf);
        (self.buf, id, self.entries)
    }
}

/// Reads the trailer: returns how many bytes the entry table takes (sealed
/// by `crypto`, it is longer by the seal's overhead).
pub fn decode_trailer(
    pack_len: u64,
    trailer: &[u8],
    crypto: &Crypto,
) -> Result<(usize, [u8; 32]), DecodeError> {
    if trailer.len() != TRAILER_LEN || pack_len < (PACK_MAGIC.len() + TRAILER_LEN) as u64 {
        return err(format!("pack of {pack_len} bytes is too short"));
    }
    if &trailer[36..] != PACK_END {
        return err("trailer magic missing (pack truncated or not a pack)");
    }
    let count = u32::from_le_bytes(trailer[..4].try_into().unwrap()) as u64;
    let table_len = count * ENTRY_LEN as u64 + crypto.overhead() as u64;
    if table_len + (PACK_MAGIC.len() + TRAILER_LEN) as u64 > pack_len {
        return err(format!(
            "trailer claims {count} entries, more than a {pack_len}-byte pack holds"
        ));
    }
    Ok((table_len as usize, trailer[4..36].try_into().unwrap()))
}

/// Decodes and validates the entry table of a pack of `pack_len` bytes.
pub fn decode_entries(
    pack_len: u64,
    table: &[u8],
    table_hash: &[u8; 32],
    crypto: &Crypto,
) -> Result<Vec<BlobEntry>, DecodeError> {
    if blake3::hash(table).as_bytes() != table_hash {
        return err("entry table does not match its checksum");
    }
    let blobs_end = pack_len.saturating_sub((table.len() + TRAILER_LEN) as u64);
    let plain = crypto
        .open(aad::PACK_TABLE, table)
        .map_err(|e| DecodeError(format!("entry table {e}")))?;
    decode_table(&plain, blobs_end)
}

/// Entries whose frames must all lie in `PACK_MAGIC.len()..blobs_end`.
fn decode_table(table: &[u8], blobs_end: u64) -> Result<Vec<BlobEntry>, DecodeError> {
    if !table.len().is_multiple_of(ENTRY_LEN) {
        return err("entry table length is not a whole number of entries");
    }
    let entries = table
        .chunks_exact(ENTRY_LEN)
        .map(BlobEntry::decode)
        .collect::<Result<Vec<_>, _>>()?;
    for e in &entries {
        let r = e.frame_range();
        if r.start < PACK_MAGIC.len() as u64 || r.end > blobs_end {
            return err(format!(
                "blob {}'s frame at {}..{} lies outside the pack's data",
                e.id, r.start, r.end
            ));
        }
    }
    Ok(entries)
}

/// Encodes entries as a pack's table holds them.
pub fn encode_table(entries: &[BlobEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_LEN);
    for e in entries {
        e.encode(&mut out);
    }
    out
}

/// Decodes entries kept apart from their pack (an index object's copy of
/// some of a pack's table), checking each lies within a pack of `pack_len`.
pub fn decode_entries_within(pack_len: u64, table: &[u8]) -> Result<Vec<BlobEntry>, DecodeError> {
    decode_table(table, pack_len.saturating_sub(TRAILER_LEN as u64))
}

/// Decodes the entries of a whole pack held in memory, checking the magic.
pub fn decode_pack(bytes: &[u8], crypto: &Crypto) -> Result<Vec<BlobEntry>, DecodeError> {
    if bytes.len() < PACK_MAGIC.len() + TRAILER_LEN || &bytes[..8] != PACK_MAGIC {
        return err("pack magic missing");
    }
    let len = bytes.len() as u64;
    let (table_len, hash) = decode_trailer(len, &bytes[bytes.len() - TRAILER_LEN..], crypto)?;
    let table_start = bytes.len() - TRAILER_LEN - table_len;
    decode_entries(
        len,
        &bytes[table_start..bytes.len() - TRAILER_LEN],
        &hash,
        crypto,
    )
}

/// A frame's bytes as compressed (`stored` itself in a plain repository),
/// once they authenticate.
pub fn open_frame<'a>(crypto: &Crypto, stored: &'a [u8]) -> Result<Cow<'a, [u8]>, DecodeError> {
    crypto
        .open(aad::FRAME, stored)
        .map_err(|e| DecodeError(format!("frame {e}")))
}

/// How many bytes of a delta's frame hold its header: the header itself, or
/// in an encrypted repository the whole sealed frame (it opens only whole).
pub fn delta_header_read_len(crypto: &Crypto, entry: &BlobEntry) -> usize {
    match crypto.is_encrypted() {
        true => entry.frame_len as usize,
        false => DELTA_HEADER_LEN,
    }
}

/// The base of a delta whose frame starts with `stored` (at least
/// [`delta_header_read_len`] bytes).
pub fn delta_base_in(crypto: &Crypto, stored: &[u8]) -> Result<ChunkId, DecodeError> {
    let frame = open_frame(crypto, stored)?;
    decode_delta_header(&frame).map(|(base, _, _)| base)
}

/// Turns a frame's stored bytes back into its uncompressed bytes.
pub fn decode_frame(
    dctx: &mut zstd::bulk::Decompressor<'_>,
    compression: Compression,
    stored: &[u8],
) -> Result<Vec<u8>, DecodeError> {
    match compression {
        Compression::None => Ok(stored.to_vec()),
        Compression::ZstdDelta => err("a delta blob needs its base to be decoded"),
        Compression::Zstd => {
            let size = zstd::zstd_safe::get_frame_content_size(stored)
                .ok()
                .flatten()
                .ok_or_else(|| DecodeError("frame is not a zstd frame with a size".into()))?;
            if size > u64::from(MAX_FRAME_LEN) {
                return err(format!("frame claims {size} bytes, over the limit"));
            }
            dctx.decompress(stored, size as usize)
                .map_err(|e| DecodeError(format!("frame does not decompress: {e}")))
        }
    }
}

/// Cuts a blob out of its frame's uncompressed bytes and verifies it against its id.
pub fn blob_in_frame<'f>(
    entry: &BlobEntry,
    frame: &'f [u8],
    crypto: &Crypto,
) -> Result<&'f [u8], DecodeError> {
    let start = entry.offset_in_frame as usize;
    let Some(raw) = frame.get(start..start + entry.raw_len as usize) else {
        return err(format!("blob {} lies past the end of its frame", entry.id));
    };
    if crypto.chunk_id(raw) != entry.id {
        return err(format!(
            "blob {} does not match its hash (the pack is damaged)",
            entry.id
        ));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKeys;

    /// Decodes the frame that holds `e`.
    fn frame_of(bytes: &[u8], e: &BlobEntry, crypto: &Crypto) -> Result<Vec<u8>, DecodeError> {
        let r = e.frame_range();
        let mut dctx = zstd::bulk::Decompressor::new().unwrap();
        let stored = open_frame(crypto, &bytes[r.start as usize..r.end as usize])?;
        decode_frame(&mut dctx, e.compression, &stored)
    }

    fn sample_pack(crypto: &Crypto) -> (Vec<u8>, PackId, Vec<BlobEntry>) {
        let mut b = PackBuilder::with_capacity(1 << 16, crypto.clone());
        let mut frame = Vec::new();
        let mut blobs = Vec::new();
        for i in 0..5u8 {
            let raw = vec![i; 1000 + i as usize];
            blobs.push((
                crypto.chunk_id(&raw),
                BlobKind::Data,
                frame.len() as u32,
                raw.len() as u32,
            ));
            frame.extend_from_slice(&raw);
        }
        let stored = zstd::bulk::compress(&frame, 3).unwrap();
        b.add_frame(Compression::Zstd, &stored, &blobs);
        let raw = b"meta".to_vec();
        b.add_frame(
            Compression::None,
            &raw,
            &[(crypto.chunk_id(&raw), BlobKind::Meta, 0, raw.len() as u32)],
        );
        b.finish()
    }

    fn both() -> [Crypto; 2] {
        [Crypto::plain(), Crypto::new(&MasterKeys::generate())]
    }

    #[test]
    fn pack_round_trip() {
        for crypto in both() {
            let (bytes, id, entries) = sample_pack(&crypto);
            assert_eq!(id, PackId::of(&bytes));
            let decoded = decode_pack(&bytes, &crypto).unwrap();
            assert_eq!(decoded, entries);
            for e in &decoded {
                let frame = frame_of(&bytes, e, &crypto).unwrap();
                let raw = blob_in_frame(e, &frame, &crypto).unwrap();
                assert_eq!(crypto.chunk_id(raw), e.id);
            }
        }
    }

    #[test]
    fn an_encrypted_pack_shows_no_plaintext_and_needs_its_key() {
        let crypto = Crypto::new(&MasterKeys::generate());
        let (bytes, _, entries) = sample_pack(&crypto);
        assert!(!bytes.windows(4).any(|w| w == b"meta"));
        assert!(
            !bytes
                .windows(8)
                .any(|w| w == &entries[0].id.as_bytes()[..8])
        );
        let other = Crypto::new(&MasterKeys::generate());
        assert!(
            decode_pack(&bytes, &other)
                .unwrap_err()
                .0
                .contains("authenticate")
        );
        assert!(decode_pack(&bytes, &Crypto::plain()).is_err());
        // A flipped bit anywhere in a frame is refused before decompression.
        for at in [0, 23, 24, 30, entries[0].frame_len as usize - 1] {
            let mut damaged = bytes.clone();
            damaged[entries[0].frame_offset as usize + at] ^= 1;
            let e = frame_of(&damaged, &entries[0], &crypto).unwrap_err();
            assert!(e.0.contains("authenticate"), "{e}");
        }
    }

    #[test]
    fn flipped_blob_byte_is_detected() {
        let crypto = Crypto::plain();
        let (mut bytes, _, entries) = sample_pack(&crypto);
        let e = entries[5]; // the uncompressed frame: the flip survives decoding
        bytes[e.frame_offset as usize + 1] ^= 1;
        let frame = frame_of(&bytes, &e, &crypto).unwrap();
        assert!(blob_in_frame(&e, &frame, &crypto).is_err());
        let z = entries[2];
        bytes[z.frame_offset as usize + 20] ^= 1;
        let decoded = frame_of(&bytes, &z, &crypto);
        assert!(decoded.is_err() || blob_in_frame(&z, &decoded.unwrap(), &crypto).is_err());
    }

    #[test]
    fn truncated_or_damaged_table_is_rejected() {
        for crypto in both() {
            let (bytes, _, _) = sample_pack(&crypto);
            assert!(decode_pack(&bytes[..bytes.len() - 1], &crypto).is_err());
            let mut damaged = bytes.clone();
            let at = damaged.len() - TRAILER_LEN - 10;
            damaged[at] ^= 0x40;
            let e = decode_pack(&damaged, &crypto).unwrap_err();
            assert!(e.0.contains("checksum"), "{e}");
        }
    }

    #[test]
    fn huge_entry_count_is_refused_without_allocating() {
        let mut t = vec![0u8; TRAILER_LEN];
        t[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        t[36..].copy_from_slice(PACK_END);
        assert!(decode_trailer(100, &t, &Crypto::plain()).is_err());
    }
}
