//! Durable file writes: write to a temporary name, fsync, rename, fsync the directory.
//!
//! Every file the repository makes visible goes through [`write_atomic`] or
//! [`persist`], so a crash leaves either the old state or the complete new file,
//! never a torn one.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// fsyncs a directory so that a rename or create inside it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The directory holding `path` (`.` for a bare relative name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `data` to `dest` atomically and durably. The temporary file lives in
/// `tmp_dir`, which must be on the same filesystem as `dest`.
pub fn write_atomic(tmp_dir: &Path, dest: &Path, data: &[u8]) -> io::Result<()> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".rewindb-")
        .tempfile_in(tmp_dir)?;
    tmp.write_all(data)?;
    persist(tmp, dest)
}

/// fsyncs a finished temporary file, renames it to `dest` and fsyncs `dest`'s directory.
pub fn persist(tmp: tempfile::NamedTempFile, dest: &Path) -> io::Result<()> {
    tmp.as_file().sync_all()?;
    tmp.persist(dest).map_err(|e| e.error)?;
    sync_dir(parent_of(dest))
}

/// Creates `dir` (and parents) and fsyncs its parent so the entry is durable.
pub fn create_dir_durable(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    sync_dir(parent_of(dir))
}
