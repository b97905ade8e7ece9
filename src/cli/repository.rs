//! Which repository a command uses (`--repo`, `$REWINDB_REPOSITORY`, a
//! config's `repository`, or the default under `$XDG_DATA_HOME`), and opening
//! it. The default is created only by a backup run from a terminal.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, RepoError};
use crate::repo::lock::LockMode;
use crate::repo::{NewRepository, OpenOptions, Repository};

use super::{Cli, CliError};

/// The repository path and whether it is the built-in default.
pub fn repo_path(cli: &Cli) -> (PathBuf, bool) {
    if let Some(p) = &cli.repo {
        return (p.clone(), false);
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    (data.join("rewindb").join("repository"), true)
}

/// Creates the default repository on a backup's first use, only when run
/// from a terminal (and says so): from cron or a script, a forgotten
/// `--repo` must fail loudly rather than fill a home directory unnoticed.
pub fn create_default_repository(cli: &Cli) -> Result<(), CliError> {
    let (path, is_default) = repo_path(cli);
    if !is_default || Repository::exists_at(&path) {
        return Ok(());
    }
    if !io::IsTerminal::is_terminal(&io::stdin()) {
        return Err(no_repository(&path).into());
    }
    let new = match crate::crypto::password::from_environment().map_err(RepoError::Password)? {
        Some(password) => NewRepository::Encrypted(password),
        None => NewRepository::Plain,
    };
    Repository::init(&path, new)?;
    eprintln!(
        "rewindb: created the default repository at {} (set --repo or REWINDB_REPOSITORY to \
         use another)",
        path.display()
    );
    Ok(())
}

/// The error for a command that needs a repository when none is configured
/// and the default does not exist.
fn no_repository(default: &std::path::Path) -> Error {
    Error::Usage(format!(
        "no repository: neither --repo nor REWINDB_REPOSITORY names one, and the default {} \
         is not a repository yet. Create one with `rewindb init` (or `rewindb --repo DIR \
         init`), or name an existing one with --repo DIR or REWINDB_REPOSITORY",
        default.display()
    ))
}

pub fn open(cli: &Cli, lock: Option<LockMode>) -> Result<Repository, Error> {
    let (path, is_default) = repo_path(cli);
    if is_default && !Repository::exists_at(&path) {
        return Err(no_repository(&path));
    }
    let repo = Repository::open_cached(
        &path,
        cli.cache_dir.as_deref(),
        OpenOptions {
            lock,
            lock_wait: Duration::from_secs(cli.lock_wait),
        },
    )?;
    super::audit::opened(&repo);
    Ok(repo)
}

/// The repository a `run` uses: the config's, unless `--repo` (or the
/// environment) names another one.
pub fn run_repository(cfg: &crate::config::Loaded, cli: &Cli) -> PathBuf {
    crate::commands::run::repository_for(cfg, cli.repo.as_deref())
        .unwrap_or_else(|| repo_path(cli).0)
}
