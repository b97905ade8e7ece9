//! Writing a restored file past the page cache (`O_DIRECT`) where the file
//! system allows it.
//!
//! A restore writes every byte once and then fsyncs: keeping those bytes in
//! the page cache only evicts what the machine was caching (the database
//! server's own pages) and costs the kernel a page allocation and a copy per
//! 4 KiB. [`FileSink`] gathers the bytes into an aligned buffer and writes
//! them with a second handle opened with `O_DIRECT`; the unaligned tail goes
//! through the ordinary handle at the end. Where `O_DIRECT` is refused (tmpfs,
//! some network file systems), at open or at the first write, it writes
//! through the ordinary handle as before. Durability is unchanged: the
//! caller still fsyncs (a direct write may sit in the device's cache).

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Alignment of direct writes: address, offset and length. A multiple of
/// every logical block size in use (512 and 4096 bytes).
const ALIGN: usize = 4096;
/// Bytes gathered before one direct write.
const DIRECT_BYTES: usize = 1 << 20;

/// Bytes appended to a file, written directly when possible. Call
/// [`finish`](Self::finish): dropping a sink loses what it holds.
pub struct FileSink<'f> {
    file: &'f mut File,
    direct: Option<Direct>,
}

struct Direct {
    file: File,
    /// `DIRECT_BYTES + ALIGN` bytes, of which `start..start + DIRECT_BYTES`
    /// is aligned (safe code cannot ask the allocator for alignment).
    buf: Vec<u8>,
    start: usize,
    /// Bytes held in the buffer.
    held: usize,
    /// File offset of the buffer's first byte.
    offset: u64,
}

impl<'f> FileSink<'f> {
    /// A sink appending to `file` (empty, at offset 0), whose path is `path`.
    pub fn new(file: &'f mut File, path: &Path) -> FileSink<'f> {
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok()
            .map(|file| {
                let buf = vec![0u8; DIRECT_BYTES + ALIGN];
                let start = buf.as_ptr().align_offset(ALIGN);
                Direct {
                    file,
                    buf,
                    start,
                    held: 0,
                    offset: 0,
                }
            });
        FileSink { file, direct }
    }

    /// A sink writing through `file` only, into the page cache.
    pub fn cached(file: &'f mut File) -> FileSink<'f> {
        FileSink { file, direct: None }
    }

    /// Whether bytes go past the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let Some(d) = &mut self.direct else {
                return self.file.write_all(data);
            };
            let n = data.len().min(DIRECT_BYTES - d.held);
            let at = d.start + d.held;
            d.buf[at..at + n].copy_from_slice(&data[..n]);
            d.held += n;
            data = &data[n..];
            if d.held == DIRECT_BYTES {
                self.flush_aligned()?;
            }
        }
        Ok(())
    }

    /// Writes the buffer's aligned part directly; keeps the rest. Falls back
    /// to the ordinary handle for good when the file system refuses.
    fn flush_aligned(&mut self) -> io::Result<()> {
        let Some(d) = &mut self.direct else {
            return Ok(());
        };
        let aligned = d.held / ALIGN * ALIGN;
        if aligned == 0 {
            return Ok(());
        }
        let written = d
            .file
            .write_all_at(&d.buf[d.start..d.start + aligned], d.offset);
        if let Err(e) = written {
            if e.raw_os_error() != Some(libc::EINVAL) || d.offset != 0 {
                return Err(e);
            }
            // Refused at the first write: no direct I/O here.
            let held = d.buf[d.start..d.start + d.held].to_vec();
            self.direct = None;
            return self.file.write_all(&held);
        }
        d.buf
            .copy_within(d.start + aligned..d.start + d.held, d.start);
        d.held -= aligned;
        d.offset += aligned as u64;
        Ok(())
    }

    /// Writes what is held and leaves `file` positioned at its end.
    pub fn finish(mut self) -> io::Result<()> {
        self.flush_aligned()?;
        if let Some(d) = self.direct.take() {
            let tail = &d.buf[d.start..d.start + d.held];
            self.file.write_all_at(tail, d.offset)?;
            self.file.seek(SeekFrom::Start(d.offset + d.held as u64))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the lengths of the pieces, the file holds their bytes in
    /// order, and the handle is left at its end.
    #[test]
    fn pieces_of_any_length_land_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut file = File::create(&path).unwrap();
        let mut expected = Vec::new();
        let mut sink = FileSink::new(&mut file, &path);
        for (i, len) in [1usize, 4095, 4097, DIRECT_BYTES, 3 * DIRECT_BYTES + 17, 100]
            .into_iter()
            .enumerate()
        {
            let piece: Vec<u8> = (0..len).map(|n| (n * 7 + i) as u8).collect();
            sink.write(&piece).unwrap();
            expected.extend_from_slice(&piece);
        }
        sink.finish().unwrap();
        assert_eq!(file.stream_position().unwrap(), expected.len() as u64);
        file.write_all(b"end").unwrap();
        expected.extend_from_slice(b"end");
        drop(file);
        assert!(std::fs::read(&path).unwrap() == expected);
    }
}
