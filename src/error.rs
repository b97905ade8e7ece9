//! Errors of each layer and the exit code each maps to.
//!
//! [`RepoError`] is the repository layer's, [`SourceError`] the sources', and
//! [`Error`] what commands return. Every message names the file, snapshot or
//! chunk involved and, where there is one, what the user should do next. The
//! exit codes are documented in `docs/ARCHITECTURE.md` and `rewindb --help`.

use std::io;
use std::path::PathBuf;

use crate::id::{ChunkId, PackId};

/// Process exit codes. Stable: scripts and monitors depend on them.
pub mod exit {
    pub const OK: i32 = 0;
    /// Something failed (I/O, a source that could not be read).
    pub const FAILURE: i32 = 1;
    /// The command line or an input named on it is wrong.
    pub const USAGE: i32 = 2;
    /// Another rewindb process holds the repository lock.
    pub const LOCKED: i32 = 3;
    /// Data failed verification: corruption found by `check`, or a restore
    /// whose result did not verify.
    pub const VERIFY: i32 = 4;
    /// `status --max-age`: a source's newest backup is older than that.
    pub const STALE: i32 = 5;
    /// The password given opens none of an encrypted repository's keys.
    pub const WRONG_PASSWORD: i32 = 6;
}

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(
        "no rewindb repository at {path}: {reason}; create one with `rewindb --repo {path} init`",
        path = path.display()
    )]
    NotFound { path: PathBuf, reason: String },
    #[error("{} is not a rewindb repository: {reason}", path.display())]
    NotARepository { path: PathBuf, reason: String },
    #[error("{} already exists and is not empty; choose another path", path.display())]
    AlreadyExists { path: PathBuf },
    #[error(
        "repository {} has format version {found}, this rewindb reads up to {supported}; upgrade rewindb",
        path.display()
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "repository {} is locked by another rewindb process (waited {waited_secs}s); \
         try again later or raise --lock-wait",
        path.display()
    )]
    Locked { path: PathBuf, waited_secs: u64 },
    #[error(
        "index {} cannot be used: {reason}; rebuild it from the packs with `rewindb repair index`",
        path.display()
    )]
    Index { path: PathBuf, reason: String },
    #[error(
        "chunk {chunk} is not in the index (its pack is lost or the index is stale); \
         `rewindb check` lists the snapshots affected: restore another one"
    )]
    ChunkMissing { chunk: ChunkId },
    #[error(
        "pack {pack} is missing from {}; `rewindb check` lists the snapshots affected: \
         restore another one",
        path.display()
    )]
    PackMissing { pack: PackId, path: PathBuf },
    #[error(
        "corrupt {what}: {detail}; `rewindb check --read-data` lists the snapshots affected: \
         restore another one"
    )]
    Corrupt { what: String, detail: String },
    #[error(
        "WAL file {name} is already archived with different content ({detail}); \
         nothing was overwritten: check that only one cluster archives into {}",
        path.display()
    )]
    WalConflict {
        name: String,
        path: PathBuf,
        detail: String,
    },
    #[error("WAL file {name} is not in the repository ({detail})")]
    WalMissing { name: String, detail: String },
    #[error(
        "repository {} is encrypted and no password was given: set REWINDB_PASSWORD_FILE \
         (or REWINDB_PASSWORD, or REWINDB_PASSWORD_COMMAND), or run from a terminal to be asked",
        path.display()
    )]
    PasswordNeeded { path: PathBuf },
    #[error(
        "the password does not open repository {}: no key object there accepts it; check \
         the password (a repository has only the passwords `rewindb key list` shows)",
        path.display()
    )]
    WrongPassword { path: PathBuf },
    #[error("password: {0}; nothing was changed")]
    Password(String),
    #[error(
        "repository {} is not encrypted, but a password was given ({}); unset it to use this \
         plain repository, or check that --repo names the repository you meant (an encrypted \
         repository never turns plain: a plain config.json where an encrypted one was is \
         tampering)",
        path.display(), crate::crypto::password::VARIABLES.join(", ")
    )]
    PlainWithPassword { path: PathBuf },
    #[error("no snapshot matches {0:?}; list them with `rewindb snapshots`")]
    UnknownSnapshot(String),
    #[error("snapshot prefix {0:?} matches several snapshots; give more digits")]
    AmbiguousSnapshot(String),
    #[error("{context}: {source}{}", disk_full_hint(source))]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

/// What to do when the repository's filesystem is full (or the file size or
/// quota limit is reached): the one I/O failure an operator can fix at once.
fn disk_full_hint(e: &io::Error) -> &'static str {
    const ENOSPC: i32 = 28;
    const EFBIG: i32 = 27;
    const EDQUOT: i32 = 122;
    let full = matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::FileTooLarge | io::ErrorKind::QuotaExceeded
    ) || matches!(e.raw_os_error(), Some(ENOSPC | EFBIG | EDQUOT));
    if full {
        " (the repository's filesystem is full: snapshots saved earlier are intact; free \
         space and run again, and `rewindb gc` removes what this run left behind)"
    } else {
        ""
    }
}

impl RepoError {
    pub fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Self {
        RepoError::Corrupt {
            what: what.into(),
            detail: detail.into(),
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            RepoError::NotFound { .. }
            | RepoError::NotARepository { .. }
            | RepoError::AlreadyExists { .. }
            | RepoError::UnsupportedVersion { .. }
            | RepoError::UnknownSnapshot(_)
            | RepoError::PasswordNeeded { .. }
            | RepoError::Password(_)
            | RepoError::PlainWithPassword { .. }
            | RepoError::AmbiguousSnapshot(_) => exit::USAGE,
            RepoError::WrongPassword { .. } => exit::WRONG_PASSWORD,
            RepoError::Locked { .. } => exit::LOCKED,
            RepoError::ChunkMissing { .. }
            | RepoError::PackMissing { .. }
            | RepoError::Corrupt { .. } => exit::VERIFY,
            RepoError::Index { .. }
            | RepoError::Io { .. }
            | RepoError::WalConflict { .. }
            | RepoError::WalMissing { .. } => exit::FAILURE,
        }
    }
}

/// Errors reading a backup source (a SQLite database).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{}: no such file", path.display())]
    Missing { path: PathBuf },
    #[error("{}: not a SQLite database ({reason})", path.display())]
    NotSqlite { path: PathBuf, reason: String },
    #[error("{}: SQLite error: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl SourceError {
    pub fn exit_code(&self) -> i32 {
        match self {
            SourceError::Missing { .. } | SourceError::NotSqlite { .. } => exit::USAGE,
            SourceError::Sqlite { .. } | SourceError::Io { .. } => exit::FAILURE,
        }
    }
}

/// What a command returns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The user asked for something that cannot be done as asked.
    #[error("{0}")]
    Usage(String),
    /// Restored or checked data did not verify.
    #[error("{0}")]
    Verification(String),
    /// Something rewindb ran or relied on failed (a backup command that
    /// exited non-zero, say); the message says what.
    #[error("{0}")]
    Failed(String),
    /// A restore of several files failed after restoring some of them.
    #[error("{source}; before that failure these were already restored: {restored}")]
    Partial {
        restored: String,
        #[source]
        source: Box<Error>,
    },
    /// I/O outside the repository (a restore destination, say).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Repo(e) => e.exit_code(),
            Error::Source(e) => e.exit_code(),
            Error::Usage(_) => exit::USAGE,
            Error::Verification(_) => exit::VERIFY,
            Error::Failed(_) => exit::FAILURE,
            Error::Io { .. } => exit::FAILURE,
            Error::Partial { source, .. } => source.exit_code(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps an I/O error outside the repository with what was being done.
pub fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// Attaches a description of what was being done to an I/O error.
pub trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, RepoError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, RepoError> {
        self.map_err(|source| RepoError::Io {
            context: context(),
            source,
        })
    }
}
