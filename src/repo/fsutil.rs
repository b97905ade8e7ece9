//! Durable file writes: write to a temporary name, fsync, rename, fsync the directory.
//!
//! Every file the repository makes visible goes through [`write_atomic`] or
//! [`persist`], so a crash leaves either the old state or the complete new file,
//! never a torn one.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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

/// Whether the user `uid` (in group `gid`) may do `want` (an rwx mask of
/// 4/2/1) on `path`, from its mode bits (ACLs are not consulted).
pub fn may(path: &Path, uid: u32, gid: u32, want: u32) -> bool {
    let Ok(m) = std::fs::metadata(path) else {
        return false;
    };
    if uid == 0 {
        return true;
    }
    let bits = if m.uid() == uid {
        m.mode() >> 6
    } else if m.gid() == gid {
        m.mode() >> 3
    } else {
        m.mode()
    } & 7;
    bits & want == want
}

/// Whether every directory above `path` can be entered by `uid`/`gid`.
pub fn may_reach(path: &Path, uid: u32, gid: u32) -> Option<PathBuf> {
    path.ancestors()
        .skip(1)
        .find(|dir| !dir.as_os_str().is_empty() && !may(dir, uid, gid, 1))
        .map(Path::to_path_buf)
}
