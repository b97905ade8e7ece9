//! One module per subcommand family; each decides (plans) and acts, but never prints.

pub mod backup;
pub mod check;
pub mod copy;
pub mod forget;
pub mod gc;
pub mod maintenance;
pub mod pg_backup;
pub mod pg_check;
pub mod pg_restore;
pub mod pitr;
pub mod restore;
pub mod restore_plan;
pub mod run;
pub mod status;
pub mod stream;
pub mod wal;

use crate::repo::lock::LockMode;

/// What an operation does to the repository, which decides the lock it takes
/// (one place, so that a caller other than the CLI takes the same ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// A backup of any source: adds packs and a snapshot and writes the index.
    Backup,
    /// `forget`, `protect`, `gc`, `repair`, and `run` (which applies
    /// retention and runs gc): removes or rewrites what others read.
    Maintain,
    /// `restore`, `check`, `stats`, `forget --dry-run`: read the index, which
    /// a writer must not change under them.
    Read,
    /// `snapshots`, `status`, `check postgres`, `wal push`/`fetch`: read or
    /// write only objects that are written whole and never changed
    /// (snapshots, WAL files), so they take no lock.
    List,
}

impl Operation {
    /// The lock to open the repository with (`None`: no lock).
    pub fn lock(self) -> Option<LockMode> {
        match self {
            Operation::Backup => Some(LockMode::Append),
            Operation::Maintain => Some(LockMode::Exclusive),
            Operation::Read => Some(LockMode::Shared),
            Operation::List => None,
        }
    }
}
