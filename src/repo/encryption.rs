//! Making and opening encrypted repositories: `init` writes the key object
//! and an authenticated `config.json`; opening finds the password, unwraps
//! the master keys and checks the config (`docs/format.md`, "Encryption").

use super::Config;
use crate::crypto::keys::{KeyError, KeyRing};
use crate::crypto::password::{self, Password};
use crate::crypto::{Crypto, MasterKeys};
use crate::error::{IoContext, RepoError};
use crate::repo::storage::Storage;

/// What kind of repository `init` makes.
pub enum NewRepository {
    /// Unencrypted (`init --no-encryption`, or no password given for a
    /// local one).
    Plain,
    /// Encrypted, with fresh master keys opened by this password.
    Encrypted(Password),
    /// Encrypted with another repository's master keys (`init --keys-from`):
    /// the same content gets the same ids there, so `copy` between the two
    /// moves only what is missing.
    SharingKeys(MasterKeys, Password),
}

/// Where an open finds the password of an encrypted repository.
#[derive(Clone, Copy)]
pub enum PasswordSource<'a> {
    /// `REWINDB_PASSWORD*`, else a prompt on a terminal.
    Environment,
    Given(&'a Password),
}

/// An open repository's keys: the master keys and the key object that
/// opened them.
pub(crate) struct Unlocked {
    pub master: MasterKeys,
    pub key_id: String,
}

/// Writes `config.json` (and first, for an encrypted repository, its key
/// object: `config.json` last makes the place a repository).
pub(crate) fn write_config(
    storage: &dyn Storage,
    seed: &str,
    new: NewRepository,
) -> Result<(), RepoError> {
    let keys = match new {
        NewRepository::Plain => None,
        NewRepository::Encrypted(pw) => Some((MasterKeys::generate(), pw)),
        NewRepository::SharingKeys(master, pw) => Some((master, pw)),
    };
    let mut config = Config::new(seed, storage.is_remote(), keys.is_some());
    if let Some((master, password)) = &keys {
        KeyRing::new(storage, &config.id)
            .add(master, password)
            .map_err(|e| key_error(storage, e))?;
        let mac = Crypto::new(master).config_mac(&config.authenticated_bytes());
        config.mac = mac.map(hex::encode);
    }
    let bytes = serde_json::to_vec_pretty(&config).expect("config serialises");
    storage
        .put("config.json", &bytes)
        .ctx(|| format!("writing {}", storage.describe("config.json")))
}

/// The keys of the repository whose config is `config`: `None` for a plain
/// one (refused when a password is given: see [`RepoError::PlainWithPassword`]).
pub(crate) fn unlock(
    storage: &dyn Storage,
    config: &Config,
    source: PasswordSource,
) -> Result<Option<Unlocked>, RepoError> {
    let location = || std::path::PathBuf::from(storage.location());
    if config.encryption.is_none() {
        if matches!(source, PasswordSource::Environment) && password::given() {
            return Err(RepoError::PlainWithPassword { path: location() });
        }
        return Ok(None);
    }
    let owned;
    let password = match source {
        PasswordSource::Given(p) => p,
        PasswordSource::Environment => {
            let prompt = format!("password for repository {}: ", storage.location());
            owned = password::obtain(&prompt, false)
                .map_err(RepoError::Password)?
                .ok_or_else(|| RepoError::PasswordNeeded { path: location() })?;
            &owned
        }
    };
    let (master, key_id) = KeyRing::new(storage, &config.id)
        .open(password)
        .map_err(|e| key_error(storage, e))?;
    let crypto = Crypto::new(&master);
    let expected = crypto
        .config_mac(&config.authenticated_bytes())
        .map(hex::encode);
    if config.mac != expected {
        return Err(RepoError::corrupt(
            storage.describe("config.json"),
            "it does not authenticate with the repository's key (changed by someone without it)",
        ));
    }
    Ok(Some(Unlocked { master, key_id }))
}

/// A key-ring failure as the repository reports it.
pub(crate) fn key_error(storage: &dyn Storage, e: KeyError) -> RepoError {
    match e {
        KeyError::WrongPassword => RepoError::WrongPassword {
            path: storage.location().into(),
        },
        KeyError::Io { context, source } => RepoError::Io { context, source },
        other @ (KeyError::NoKeys | KeyError::Invalid { .. }) => RepoError::corrupt(
            storage.describe(crate::crypto::keys::PREFIX),
            other.to_string(),
        ),
    }
}
