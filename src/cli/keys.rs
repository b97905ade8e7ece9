//! `init`'s choice of plain or encrypted, and `rewindb key list | add |
//! remove | passwd`: the passwords of an encrypted repository.

use std::io::Write;
use std::path::Path;

use super::{Cli, CliError, KeyAction, emit, open};
use crate::crypto::keys::{KeyInfo, KeyRing};
use crate::crypto::password::{self, Password};
use crate::error::{Error, RepoError};
use crate::repo::encryption::key_error;
use crate::repo::lock::LockMode;
use crate::repo::{NewRepository, OpenOptions, Repository};

/// What `init` makes at `path`, and how to call it in its report.
pub(super) fn new_repository(
    path: &Path,
    no_encryption: bool,
    keys_from: Option<&Path>,
) -> Result<(NewRepository, &'static str), Error> {
    if no_encryption {
        return Ok((NewRepository::Plain, "an unencrypted"));
    }
    if let Some(source) = keys_from {
        let other = Repository::open(
            source,
            OpenOptions {
                lock: None,
                lock_wait: std::time::Duration::ZERO,
            },
        )?;
        let Some(master) = other.master_keys() else {
            return Err(Error::Usage(format!(
                "--keys-from {}: that repository is not encrypted; it has no keys to share",
                source.display()
            )));
        };
        let master = crate::crypto::MasterKeys(master.0.clone());
        let password = match new_password_from_file()? {
            Some(p) => p,
            None => password::obtain("password: ", false)
                .map_err(RepoError::Password)?
                .ok_or_else(|| RepoError::PasswordNeeded {
                    path: source.to_path_buf(),
                })?,
        };
        return Ok((
            NewRepository::SharingKeys(master, password),
            "an encrypted (keys shared)",
        ));
    }
    let prompt = format!("password for the new repository {}: ", path.display());
    match password::obtain(&prompt, true).map_err(RepoError::Password)? {
        Some(p) => Ok((NewRepository::Encrypted(p), "an encrypted")),
        None if path.to_str().is_some_and(|p| p.starts_with("s3://")) => {
            Err(Error::Usage(format!(
                "{}: a repository in a bucket is created encrypted: give its password in \
                 REWINDB_PASSWORD_FILE (or REWINDB_PASSWORD, or REWINDB_PASSWORD_COMMAND), or \
                 pass --no-encryption to store it in the clear",
                path.display()
            )))
        }
        None => {
            eprintln!(
                "rewindb: no password given (REWINDB_PASSWORD_FILE, REWINDB_PASSWORD, \
                 REWINDB_PASSWORD_COMMAND): creating an unencrypted repository"
            );
            Ok((NewRepository::Plain, "an unencrypted"))
        }
    }
}

/// `REWINDB_NEW_PASSWORD_FILE`: a new password for `key add`, `key passwd`
/// and `init --keys-from` (the password in use comes from REWINDB_PASSWORD*).
fn new_password_from_file() -> Result<Option<Password>, Error> {
    Ok(password::from_file_variable("REWINDB_NEW_PASSWORD_FILE").map_err(RepoError::Password)?)
}

/// The new password of `key add` / `key passwd`.
fn new_password() -> Result<Password, Error> {
    if let Some(p) = new_password_from_file()? {
        return Ok(p);
    }
    password::ask("new password: ", true)
        .map_err(RepoError::Password)?
        .ok_or_else(|| {
            Error::Usage(
                "no new password: give it in REWINDB_NEW_PASSWORD_FILE, or run from a terminal \
                 to be asked"
                    .into(),
            )
        })
}

/// The key objects of `repo`, the one in use marked.
fn list(repo: &Repository) -> Result<Vec<KeyInfo>, Error> {
    let ring = KeyRing::new(repo.storage(), &repo.config().id);
    let objects = ring.objects().map_err(|e| key_error(repo.storage(), e))?;
    Ok(objects
        .into_iter()
        .filter_map(|(id, key)| {
            let key = key.ok()?;
            Some(KeyInfo {
                current: repo.key_id() == Some(id.as_str()),
                id,
                created: key.created,
                hostname: key.hostname,
                username: key.username,
            })
        })
        .collect())
}

pub(super) fn run(cli: &Cli, w: &mut impl Write, action: &KeyAction) -> Result<(), CliError> {
    let lock = match action {
        KeyAction::List { .. } => None,
        KeyAction::Add => Some(LockMode::Shared),
        KeyAction::Remove { .. } | KeyAction::Passwd => Some(LockMode::Exclusive),
    };
    let repo = open(cli, lock)?;
    let (Some(master), Some(current)) = (repo.master_keys(), repo.key_id()) else {
        return Err(Error::Usage(format!(
            "repository {} is not encrypted: it has no keys",
            repo.location()
        ))
        .into());
    };
    let ring = KeyRing::new(repo.storage(), &repo.config().id);
    let failed = |e| CliError::from(key_error(repo.storage(), e));
    match action {
        KeyAction::List { json } => {
            let keys = list(&repo)?;
            emit(w, cli, *json, &keys, |w| {
                writeln!(w, "  {:<16}  {:<25}  {:<20}  user", "id", "created", "host")?;
                for k in &keys {
                    let mark = if k.current { '*' } else { ' ' };
                    let created = k.created.strftime("%Y-%m-%d %H:%M:%S UTC").to_string();
                    writeln!(
                        w,
                        "{mark} {:<16}  {created:<25}  {:<20}  {}",
                        k.id, k.hostname, k.username
                    )?;
                }
                Ok(())
            })?;
        }
        KeyAction::Add => {
            let id = ring.add(master, &new_password()?).map_err(failed)?;
            emit(w, cli, false, &(), |w| writeln!(w, "added key {id}"))?;
        }
        KeyAction::Remove { id } => {
            let keys = list(&repo)?;
            if !keys.iter().any(|k| k.id == *id) {
                return Err(Error::Usage(format!(
                    "no key {id} in {}; `rewindb key list` shows them",
                    repo.location()
                ))
                .into());
            }
            if keys.len() == 1 {
                return Err(Error::Usage(format!(
                    "key {id} is the repository's last key: without it nothing opens the \
                     repository; add another with `rewindb key add` first"
                ))
                .into());
            }
            if id == current {
                return Err(Error::Usage(format!(
                    "key {id} is the one in use now; open the repository with another \
                     password to remove it (or use `rewindb key passwd` to change it)"
                ))
                .into());
            }
            ring.remove(id).map_err(failed)?;
            emit(w, cli, false, &(), |w| writeln!(w, "removed key {id}"))?;
        }
        KeyAction::Passwd => {
            // The new key is durable before the old one goes: a kill between
            // the two leaves both passwords working, never neither.
            let id = ring.add(master, &new_password()?).map_err(failed)?;
            ring.remove(current).map_err(failed)?;
            emit(w, cli, false, &(), |w| {
                writeln!(w, "password changed: key {id} replaces key {current}")
            })?;
        }
    }
    Ok(())
}
