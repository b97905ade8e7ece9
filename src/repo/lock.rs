//! The repository lock: one writer, or any number of readers.
//!
//! An OS file lock (`std::fs::File::lock`) on `<repo>/lock`. The kernel drops it
//! when the process dies, so a run killed with SIGKILL never leaves a lock that
//! blocks the next one.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{IoContext, RepoError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// Removers and rewriters: forget, gc, repair, `run`. Excludes everyone else.
    Exclusive,
    /// Backups: add objects and write the index. Where the index lives with
    /// the objects (a local repository) this is `Exclusive`; where each
    /// machine has its own index cache (object storage) it excludes only
    /// `Exclusive` holders on the repository, and other writers of the same
    /// cache.
    Append,
    /// Readers: restore, check, stats. Exclude writers only.
    Shared,
}

impl LockMode {
    /// Whether the holder may write the index.
    pub fn writes_index(self) -> bool {
        matches!(self, LockMode::Exclusive | LockMode::Append)
    }
}

/// Held for as long as the value lives.
#[derive(Debug)]
pub struct RepoLock {
    _file: File,
}

impl RepoLock {
    /// Takes the lock, waiting up to `wait` for another process to release it.
    pub fn acquire(repo: &Path, mode: LockMode, wait: Duration) -> Result<RepoLock, RepoError> {
        let path = repo.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ctx(|| format!("opening lock file {}", path.display()))?;
        let start = Instant::now();
        let mut announced = false;
        loop {
            let attempt = match mode {
                LockMode::Exclusive | LockMode::Append => file.try_lock(),
                LockMode::Shared => file.try_lock_shared(),
            };
            match attempt {
                Ok(()) => return Ok(RepoLock { _file: file }),
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => {
                    return Err(e).ctx(|| format!("locking {}", path.display()));
                }
            }
            if start.elapsed() >= wait {
                return Err(RepoError::Locked {
                    path: repo.to_path_buf(),
                    waited_secs: wait.as_secs(),
                });
            }
            if !announced && start.elapsed() >= Duration::from_secs(1) {
                tracing::info!(
                    "waiting up to {}s for another rewindb process to release {}",
                    wait.as_secs(),
                    path.display()
                );
                announced = true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
