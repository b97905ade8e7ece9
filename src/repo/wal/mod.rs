//! The WAL archive: PostgreSQL's WAL segments, `.partial`, `.backup` and
//! `.history` files, one archive file each under `wal/<system id>/`.
//!
//! Why not the chunk store: `wal push` runs once per 16 MiB segment while a
//! base backup or gc may hold the repository lock, and PostgreSQL waits for
//! it. An archive file is written to a temporary name, fsynced, and
//! hard-linked to its final name, which fails if the name exists, so two
//! pushes never overwrite each other and no lock is needed. A WAL segment's
//! bytes are written once and never repeat in other segments, so chunk-level
//! dedup would find little (see `docs/ARCHITECTURE.md`).
//!
//! Archive file layout (`docs/format.md`, "WAL archive"): a 64-byte header
//! (magic, compression, raw length, blake3 of the raw file, push time) then
//! the file's bytes, zstd-compressed.

mod archive;

use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use jiff::Timestamp;

pub use archive::{Pushed, WalArchive};

use crate::filehash;

const MAGIC: &[u8; 8] = b"RWDBWAL1";
const HEADER_LEN: usize = 64;
const COMPRESSION_NONE: u8 = 0;
const COMPRESSION_ZSTD: u8 = 1;
/// zstd level for WAL: `wal push` is paid per segment, and level 1 keeps it
/// fast (see `docs/benchmarks.md`).
const WAL_ZSTD_LEVEL: i32 = 1;
/// Larger than any real WAL file (segments are at most 1 GiB).
const MAX_WAL_FILE: u64 = 1 << 30;

/// What kind of WAL file a name denotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WalKind {
    /// `TTTTTTTTXXXXXXXXYYYYYYYY`: a complete segment.
    Segment,
    /// `...YYYYYYYY.partial`: the last, incomplete segment of a timeline.
    Partial,
    /// `...YYYYYYYY.OOOOOOOO.backup`: a base backup's history file.
    Backup,
    /// `TTTTTTTT.history`: a timeline's history.
    History,
}

/// A validated WAL file name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WalName {
    pub timeline: u32,
    /// `(log, seg)` of the name's segment part; zero for history files.
    pub log: u32,
    pub seg: u32,
    pub kind: WalKind,
    name: String,
}

impl fmt::Display for WalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

fn hex8(s: &str) -> Option<u32> {
    (s.len() == 8
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase()))
    .then(|| u32::from_str_radix(s, 16).ok())
    .flatten()
}

impl WalName {
    /// Parses a WAL file name as PostgreSQL writes it (upper-case hex).
    pub fn parse(name: &str) -> Result<WalName, String> {
        let bad = || {
            format!(
                "{name:?} is not a WAL file name (expected 24 hex digits like \
                 000000010000000000000001, optionally .partial, or \
                 ...00000028.backup, or 00000002.history)"
            )
        };
        let (stem, kind) = if let Some(s) = name.strip_suffix(".partial") {
            (s, WalKind::Partial)
        } else if let Some(s) = name.strip_suffix(".history") {
            let timeline = hex8(s).ok_or_else(bad)?;
            return Ok(WalName {
                timeline,
                log: 0,
                seg: 0,
                kind: WalKind::History,
                name: name.to_string(),
            });
        } else if let Some(s) = name.strip_suffix(".backup") {
            let (stem, offset) = s.split_at_checked(24).ok_or_else(bad)?;
            offset.strip_prefix('.').and_then(hex8).ok_or_else(bad)?;
            (stem, WalKind::Backup)
        } else {
            (name, WalKind::Segment)
        };
        // ASCII first: slicing a multi-byte character would panic (found by
        // the wal_decode fuzz target).
        if stem.len() != 24 || !stem.is_ascii() {
            return Err(bad());
        }
        let (timeline, log, seg) = (
            hex8(&stem[..8]).ok_or_else(bad)?,
            hex8(&stem[8..16]).ok_or_else(bad)?,
            hex8(&stem[16..]).ok_or_else(bad)?,
        );
        Ok(WalName {
            timeline,
            log,
            seg,
            kind,
            name: name.to_string(),
        })
    }

    /// The segment file name for segment number `segno` on `timeline`.
    pub fn segment(timeline: u32, segno: u64, seg_size: u64) -> WalName {
        let per_log = 0x1_0000_0000 / seg_size;
        let (log, seg) = ((segno / per_log) as u32, (segno % per_log) as u32);
        WalName {
            timeline,
            log,
            seg,
            kind: WalKind::Segment,
            name: format!("{timeline:08X}{log:08X}{seg:08X}"),
        }
    }

    /// The segment number of a segment (or partial or backup) name.
    pub fn segno(&self, seg_size: u64) -> u64 {
        u64::from(self.log) * (0x1_0000_0000 / seg_size) + u64::from(self.seg)
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }
}

/// What the first page of a WAL segment says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub timeline: u32,
    pub page_addr: u64,
    pub system_identifier: u64,
    pub seg_size: u32,
}

/// Reads the long page header at the start of a WAL segment (PostgreSQL's
/// `XLogLongPageHeaderData`: magic, info, timeline, page address, remaining
/// length, then system identifier, segment size and block size).
pub fn segment_header(data: &[u8]) -> Result<SegmentHeader, String> {
    const XLP_LONG_HEADER: u16 = 0x0002;
    if data.len() < 40 {
        return Err(format!("{} bytes, too short for a WAL segment", data.len()));
    }
    let u16_at = |o: usize| u16::from_le_bytes(data[o..o + 2].try_into().unwrap());
    let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(data[o..o + 8].try_into().unwrap());
    let magic = u16_at(0);
    if !(0xD000..=0xD1FF).contains(&magic) || u16_at(2) & XLP_LONG_HEADER == 0 {
        return Err(format!(
            "no WAL page header at its start (magic {magic:#06x}): not a WAL segment"
        ));
    }
    let header = SegmentHeader {
        timeline: u32_at(4),
        page_addr: u64_at(8),
        system_identifier: u64_at(24),
        seg_size: u32_at(32),
    };
    let seg_size = u64::from(header.seg_size);
    if !seg_size.is_power_of_two() || !(1 << 20..=1 << 30).contains(&seg_size) {
        return Err(format!(
            "WAL segment size {seg_size} in its header is not valid"
        ));
    }
    Ok(header)
}

/// The system identifier in a data directory's `global/pg_control` (its
/// first eight bytes).
pub fn control_system_identifier(pgdata: &Path) -> std::io::Result<u64> {
    let mut id = [0u8; 8];
    File::open(pgdata.join("global/pg_control"))?.read_exact_at(&mut id, 0)?;
    Ok(u64::from_le_bytes(id))
}

/// The header of an archive file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchivedHeader {
    pub compression: u8,
    pub raw_len: u64,
    pub blake3: [u8; 32],
    pub pushed_at: Timestamp,
}

impl ArchivedHeader {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..8].copy_from_slice(MAGIC);
        h[8] = self.compression;
        h[16..24].copy_from_slice(&self.raw_len.to_le_bytes());
        h[24..56].copy_from_slice(&self.blake3);
        let nanos = self.pushed_at.as_nanosecond() as i64;
        h[56..64].copy_from_slice(&nanos.to_le_bytes());
        h
    }

    fn decode(h: &[u8]) -> Result<ArchivedHeader, String> {
        if h.len() < HEADER_LEN || &h[..8] != MAGIC {
            return Err("not a rewindb WAL archive file (bad magic)".into());
        }
        let compression = h[8];
        if compression > COMPRESSION_ZSTD || h[9..16].iter().any(|&b| b != 0) {
            return Err(format!("unknown compression {compression}"));
        }
        let raw_len = u64::from_le_bytes(h[16..24].try_into().unwrap());
        if raw_len > MAX_WAL_FILE {
            return Err(format!("raw length {raw_len} is too large"));
        }
        let nanos = i64::from_le_bytes(h[56..64].try_into().unwrap());
        Ok(ArchivedHeader {
            compression,
            raw_len,
            blake3: h[24..56].try_into().unwrap(),
            pushed_at: Timestamp::from_nanosecond(i128::from(nanos))
                .map_err(|e| format!("push time: {e}"))?,
        })
    }
}

/// Largest archive file decoded in one call (its output allocated at once).
const BULK_DECODE_MAX: u64 = 64 << 20;

/// Decodes a whole archive file: header, payload, and the blake3 check.
/// Output is allocated at once up to [`BULK_DECODE_MAX`]; beyond, it grows
/// as it is decoded and stops one byte past the length the header promises,
/// so a damaged header cannot make it allocate much more than that.
pub fn decode_archived(bytes: &[u8]) -> Result<(ArchivedHeader, Vec<u8>), String> {
    use std::io::Read;
    let header = ArchivedHeader::decode(bytes)?;
    let payload = &bytes[HEADER_LEN..];
    let raw = match header.compression {
        COMPRESSION_NONE => payload.to_vec(),
        // Up to 64 MiB (any usual segment size) in one call, which fetch
        // measured 13 % faster; beyond, as a stream.
        _ if header.raw_len <= BULK_DECODE_MAX => {
            zstd::bulk::decompress(payload, header.raw_len as usize)
                .map_err(|e| format!("does not decompress: {e}"))?
        }
        _ => {
            let mut raw = Vec::new();
            zstd::stream::read::Decoder::new(payload)
                .and_then(|d| d.take(header.raw_len + 1).read_to_end(&mut raw))
                .map_err(|e| format!("does not decompress: {e}"))?;
            raw
        }
    };
    if raw.len() as u64 != header.raw_len || *blake3::hash(&raw).as_bytes() != header.blake3 {
        return Err("its content does not match its blake3".into());
    }
    Ok((header, raw))
}

/// Positional reads: a file, or bytes in memory.
pub trait ReadAt {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.read_exact_at(buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(std::io::Error::other)?;
        let part = self
            .get(start..start + buf.len())
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(part);
        Ok(())
    }
}

/// Bytes read at a time by each half of [`pack`]: a small buffer, reused,
/// costs far less than faulting in a 16 MiB one (measured: reading a segment
/// into a fresh buffer took 25 ms of a 40 ms push).
const PACK_BLOCK: usize = 1 << 20;

/// The blake3 of the `len` bytes `source` holds and their stored form,
/// after `reserve` zero bytes (room for a header): zstd when it pays,
/// otherwise the bytes as they are. The two halves are read, hashed and
/// compressed on two threads (`wal push` is paid per segment, see
/// `docs/benchmarks.md`); the payload is a run of zstd frames, one per block,
/// which zstd decompresses as one.
fn pack(
    source: &(impl ReadAt + Sync + ?Sized),
    len: u64,
    reserve: usize,
) -> std::io::Result<(blake3::Hash, u8, Vec<u8>)> {
    let stored_as_is = || -> std::io::Result<Vec<u8>> {
        let mut out = vec![0u8; reserve + len as usize];
        source.read_at(&mut out[reserve..], 0)?;
        Ok(out)
    };
    if len < 2 * blake3::CHUNK_LEN as u64 {
        let raw = stored_as_is()?;
        let data = &raw[reserve..];
        let packed = zstd::bulk::compress(data, WAL_ZSTD_LEVEL)?;
        let hash = blake3::hash(data);
        if packed.len() >= data.len() {
            return Ok((hash, COMPRESSION_NONE, raw));
        }
        let mut out = vec![0u8; reserve];
        out.extend_from_slice(&packed);
        return Ok((hash, COMPRESSION_ZSTD, out));
    }
    // The left half a power of two, so that both are subtrees of blake3's tree.
    let split = blake3::hazmat::left_subtree_len(len);
    let half = |offset: u64, part: u64| -> std::io::Result<(filehash::Piece, Vec<u8>)> {
        use blake3::hazmat::HasherExt;
        let mut hasher = blake3::Hasher::new();
        hasher.set_input_offset(offset);
        // One zstd frame per block, through one reused context: measured
        // faster than a streaming encoder, which copies its input into a
        // window and takes zstd's slower external-dictionary path.
        let mut compressor = zstd::bulk::Compressor::new(WAL_ZSTD_LEVEL)?;
        let mut buf = vec![0u8; PACK_BLOCK.min(part as usize)];
        let mut frame = Vec::with_capacity(zstd::zstd_safe::compress_bound(buf.len()));
        let mut out = match offset {
            0 => vec![0u8; reserve],
            _ => Vec::new(),
        };
        let mut done = 0u64;
        while done < part {
            let n = (part - done).min(buf.len() as u64) as usize;
            source.read_at(&mut buf[..n], offset + done)?;
            hasher.update(&buf[..n]);
            compressor.compress_to_buffer(&buf[..n], &mut frame)?;
            out.extend_from_slice(&frame);
            done += n as u64;
        }
        Ok((filehash::piece_from_hasher(&hasher, offset, part), out))
    };
    let (left, right) = std::thread::scope(|s| {
        let right = s.spawn(|| half(split, len - split));
        (
            half(0, split),
            right.join().expect("compression does not panic"),
        )
    });
    let ((left_piece, mut packed), (right_piece, right_packed)) = (left?, right?);
    packed.extend_from_slice(&right_packed);
    let hash = filehash::combine(&[left_piece, right_piece]).expect("two halves tile the tree");
    Ok(match ((packed.len() - reserve) as u64) < len {
        true => (hash, COMPRESSION_ZSTD, packed),
        false => (hash, COMPRESSION_NONE, stored_as_is()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let s = WalName::parse("000000010000000A000000FF").unwrap();
        assert_eq!(
            (s.timeline, s.log, s.seg, s.kind),
            (1, 10, 255, WalKind::Segment)
        );
        assert_eq!(s.segno(16 << 20), 10 * 256 + 255);
        assert_eq!(WalName::segment(1, 10 * 256 + 255, 16 << 20), s);
        let p = WalName::parse("000000020000000000000003.partial").unwrap();
        assert_eq!((p.timeline, p.kind), (2, WalKind::Partial));
        let b = WalName::parse("000000010000000000000002.00000028.backup").unwrap();
        assert_eq!((b.seg, b.kind), (2, WalKind::Backup));
        let h = WalName::parse("0000000A.history").unwrap();
        assert_eq!((h.timeline, h.kind), (10, WalKind::History));
        for bad in [
            "",
            "00000001000000000000000",
            "0000000100000000000000001",
            "00000001000000000000000g",
            "000000010000000000000001.gz",
            "00000001000000000000000a",
            "0000001.history",
            "000000010000000000000002.0000028.backup",
            "../00000001.history",
            "0000000\u{c430}000'\0\0\0\0\0\0\x00001",
        ] {
            assert!(WalName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn packed_files_read_back_and_hash_like_b3sum() {
        use crate::error::RepoError;
        use crate::repo::storage::{Storage, local::LocalDir};
        // On both a local directory and memory: the same bytes come back.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        let local = LocalDir::new(dir.path());
        let memory = crate::repo::storage::memory::Memory::new();
        for storage in [&local as &dyn Storage, &memory] {
            let plain = crate::crypto::Crypto::plain();
            let archive = WalArchive::new(storage, &plain);
            for (i, len) in [0usize, 1, 1500, 4096, 16 << 20].into_iter().enumerate() {
                let data: Vec<u8> = (0..len).map(|j| (j / 7 % 251) as u8).collect();
                let (hash, _, _) = pack(data.as_slice(), len as u64, 0).unwrap();
                assert_eq!(hash, blake3::hash(&data), "len {len}");
                let name = WalName::parse(&format!("{:08X}.history", i + 1)).unwrap();
                let push = |d: &[u8]| archive.push(1, &name, d, d.len() as u64);
                assert_eq!(push(&data).unwrap(), Pushed::Stored);
                assert_eq!(archive.read(1, &name).unwrap().unwrap(), data);
                assert_eq!(push(&data).unwrap(), Pushed::AlreadyArchived);
                let mut other = data.clone();
                other.push(1);
                assert!(matches!(push(&other), Err(RepoError::WalConflict { .. })));
            }
            // Random bytes do not compress: stored as they are, read back the same.
            let mut noise = vec![0u8; 100_000];
            blake3::Hasher::new().finalize_xof().fill(&mut noise);
            let name = WalName::parse("0000000A.history").unwrap();
            archive
                .push(1, &name, noise.as_slice(), noise.len() as u64)
                .unwrap();
            assert_eq!(archive.read(1, &name).unwrap().unwrap(), noise);
            let header = archive.header(1, &name).unwrap().unwrap();
            assert_eq!(header.compression, COMPRESSION_NONE);
            // Past BULK_DECODE_MAX, decoding streams; the result is the same.
            let big = vec![7u8; (BULK_DECODE_MAX + 4096) as usize];
            let name = WalName::parse("0000000B.history").unwrap();
            archive
                .push(1, &name, big.as_slice(), big.len() as u64)
                .unwrap();
            assert!(archive.read(1, &name).unwrap().unwrap() == big);
            assert_eq!(archive.clusters().unwrap(), vec![1]);
            assert_eq!(archive.list(1).unwrap().len(), 7);
            let missing = WalName::parse("0000000C.history").unwrap();
            assert_eq!(archive.read(1, &missing).unwrap(), None);
            assert_eq!(archive.header(1, &missing).unwrap(), None);
        }
    }

    #[test]
    fn header_round_trip_and_damage() {
        let h = ArchivedHeader {
            compression: COMPRESSION_ZSTD,
            raw_len: 16 << 20,
            blake3: [7; 32],
            pushed_at: Timestamp::from_second(1_700_000_000).unwrap(),
        };
        assert_eq!(ArchivedHeader::decode(&h.encode()), Ok(h));
        let mut bad = h.encode();
        bad[0] ^= 1;
        assert!(ArchivedHeader::decode(&bad).is_err());
        let mut bad = h.encode();
        bad[8] = 9;
        assert!(ArchivedHeader::decode(&bad).is_err());
        assert!(ArchivedHeader::decode(&h.encode()[..40]).is_err());
    }
}
