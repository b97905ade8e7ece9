//! Key objects: `keys/<id>.json`, each the repository's master keys wrapped
//! by a key derived from one password with Argon2id (`docs/format.md`,
//! "Key objects"). Several passwords open one repository; each has its own
//! object, salt and parameters.
//!
//! Deriving a wrapping key costs about half a second and 64 MiB by design,
//! which `wal push` would pay for every 16 MiB segment. So a derived key is
//! kept for a while in this machine's cache directory ([`KeyCache`]), only
//! readable by its owner, and checked against the password given.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{CIPHER, MasterKeys, Unauthentic, open_with, random, seal_with};
use crate::crypto::password::Password;
use crate::repo::storage::Storage;

/// Where key objects live.
pub const PREFIX: &str = "keys/";

/// Argon2id cost of a new key object.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl KdfParams {
    /// About half a second and 64 MiB on the 2-core machine this was
    /// measured on (`docs/benchmarks.md`, "Encryption").
    pub const DEFAULT: KdfParams = KdfParams {
        memory_kib: 64 * 1024,
        iterations: 12,
        parallelism: 1,
    };

    /// The cost new keys get: [`DEFAULT`](Self::DEFAULT), or
    /// `REWINDB_KDF=MEMORY_KIB,ITERATIONS` (tests make cheap keys with it;
    /// the cost is recorded in each key object, so any value reads back).
    pub fn for_new_keys() -> Result<KdfParams, String> {
        let Some(text) = std::env::var_os("REWINDB_KDF") else {
            return Ok(Self::DEFAULT);
        };
        let text = text.to_string_lossy();
        let parsed = text
            .split_once(',')
            .and_then(|(m, t)| Some((m.trim().parse().ok()?, t.trim().parse().ok()?)));
        let Some((memory_kib, iterations)) = parsed else {
            return Err(format!(
                "REWINDB_KDF={text}: expected MEMORY_KIB,ITERATIONS"
            ));
        };
        let params = KdfParams {
            memory_kib,
            iterations,
            parallelism: 1,
        };
        params.argon2().map(|_| params)
    }

    fn argon2(&self) -> Result<argon2::Argon2<'static>, String> {
        let params =
            argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
                .map_err(|e| format!("Argon2id parameters {self:?}: {e}"))?;
        Ok(argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            params,
        ))
    }

    /// The wrapping key for `password` and `salt`.
    fn derive(&self, password: &Password, salt: &[u8]) -> Result<Zeroizing<[u8; 32]>, String> {
        if self.memory_kib > 2 << 20 || self.iterations > 64 || self.parallelism > 64 {
            return Err(format!(
                "Argon2id parameters {self:?} are beyond any sane cost"
            ));
        }
        let mut out = Zeroizing::new([0u8; 32]);
        self.argon2()?
            .hash_password_into(password.as_bytes(), salt, out.as_mut())
            .map_err(|e| format!("Argon2id: {e}"))?;
        Ok(out)
    }
}

/// One key object as stored (JSON).
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct KeyObject {
    pub version: u32,
    pub created: jiff::Timestamp,
    pub hostname: String,
    pub username: String,
    pub kdf: String,
    pub params: KdfParams,
    /// 32 random bytes, hex.
    pub salt: String,
    pub cipher: String,
    /// The master keys sealed by the derived key: nonce, ciphertext, tag; hex.
    pub wrapped: String,
}

/// A key object's listing: its id and who made it when.
#[derive(Serialize, Clone, Debug)]
pub struct KeyInfo {
    pub id: String,
    pub created: jiff::Timestamp,
    pub hostname: String,
    pub username: String,
    /// Whether this is the key that opened the repository now.
    pub current: bool,
}

/// Why key objects could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no key object opens the repository with this password")]
    WrongPassword,
    #[error("the repository has no key objects (keys/ is empty or gone)")]
    NoKeys,
    #[error("key object {name}: {detail}")]
    Invalid { name: String, detail: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

/// Decodes a key object's bytes, strictly (the fuzz target's entry).
pub fn decode(bytes: &[u8]) -> Result<KeyObject, String> {
    let key: KeyObject = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if key.version != 1 {
        return Err(format!("version {} (this rewindb reads 1)", key.version));
    }
    if key.kdf != "argon2id" || key.cipher != CIPHER {
        return Err(format!(
            "kdf {:?} / cipher {:?} unknown",
            key.kdf, key.cipher
        ));
    }
    let salt = hex::decode(&key.salt).map_err(|e| format!("salt: {e}"))?;
    let wrapped = hex::decode(&key.wrapped).map_err(|e| format!("wrapped: {e}"))?;
    if salt.len() != 32 || wrapped.len() != 64 + super::OVERHEAD {
        return Err("salt or wrapped keys have the wrong length".into());
    }
    Ok(key)
}

/// Associated data of wrapped master keys: bound to their repository.
fn wrap_aad(repo_id: &str) -> Vec<u8> {
    format!("rewindb key {repo_id}").into_bytes()
}

impl KeyObject {
    /// A new key object holding `master` for `password`.
    pub fn wrap(
        repo_id: &str,
        master: &MasterKeys,
        password: &Password,
        params: KdfParams,
    ) -> Result<KeyObject, String> {
        let mut salt = [0u8; 32];
        random(&mut salt);
        let kek = params.derive(password, &salt)?;
        Ok(KeyObject {
            version: 1,
            created: jiff::Timestamp::now(),
            hostname: crate::pipeline::store::hostname(),
            username: username(),
            kdf: "argon2id".into(),
            params,
            salt: hex::encode(salt),
            cipher: CIPHER.into(),
            wrapped: hex::encode(seal_with(&kek, &wrap_aad(repo_id), master.0.as_ref())),
        })
    }

    /// The master keys, with the wrapping key `kek`.
    fn unwrap_with(&self, repo_id: &str, kek: &[u8; 32]) -> Result<MasterKeys, Unauthentic> {
        use chacha20poly1305::KeyInit;
        let wrapped = hex::decode(&self.wrapped).map_err(|_| Unauthentic)?;
        let cipher = chacha20poly1305::XChaCha20Poly1305::new(kek.into());
        let plain = Zeroizing::new(open_with(&cipher, &wrap_aad(repo_id), &wrapped)?);
        let keys: [u8; 64] = plain.as_slice().try_into().map_err(|_| Unauthentic)?;
        Ok(MasterKeys(Zeroizing::new(keys)))
    }
}

/// This process's user, for messages and the audit log.
pub fn username() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", uid()))
}

fn uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

/// A key object's id, and the object or why it does not decode.
pub type ListedKey = (String, Result<KeyObject, String>);

/// The key objects of a repository: list, open, add, remove.
pub struct KeyRing<'s> {
    storage: &'s dyn Storage,
    repo_id: String,
}

fn object_name(id: &str) -> String {
    format!("{PREFIX}{id}.json")
}

impl<'s> KeyRing<'s> {
    pub fn new(storage: &'s dyn Storage, repo_id: &str) -> KeyRing<'s> {
        KeyRing {
            storage,
            repo_id: repo_id.to_string(),
        }
    }

    fn io(&self, what: &str) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
        let context = format!("{what} {}", self.storage.describe(PREFIX));
        move |source| KeyError::Io { context, source }
    }

    /// Every key object: (id, decoded object or why it does not decode).
    pub fn objects(&self) -> Result<Vec<ListedKey>, KeyError> {
        let listed = self.storage.list(PREFIX).map_err(self.io("listing"))?;
        let mut out = Vec::new();
        for object in listed {
            let Some(id) = object
                .name
                .strip_prefix(PREFIX)
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            let bytes = self.storage.get(&object.name).map_err(self.io("reading"))?;
            out.push((id.to_string(), decode(&bytes)));
        }
        Ok(out)
    }

    /// The master keys and the id of the key object `password` opens.
    /// Tries the derived keys this machine has cached first.
    pub fn open(&self, password: &Password) -> Result<(MasterKeys, String), KeyError> {
        let objects = self.objects()?;
        let valid: Vec<_> = objects
            .iter()
            .filter_map(|(id, k)| Some((id, k.as_ref().ok()?)))
            .collect();
        if valid.is_empty() {
            return match objects.into_iter().next() {
                None => Err(KeyError::NoKeys),
                Some((id, Err(detail))) => Err(KeyError::Invalid {
                    name: self.storage.describe(&object_name(&id)),
                    detail,
                }),
                Some(_) => unreachable!("a valid object would be in `valid`"),
            };
        }
        let cache = KeyCache::new(&self.repo_id);
        for (id, key) in &valid {
            if let Some(kek) = cache.as_ref().and_then(|c| c.get(id, password))
                && let Ok(master) = key.unwrap_with(&self.repo_id, &kek)
            {
                return Ok((master, id.to_string()));
            }
        }
        for (id, key) in valid {
            let salt = hex::decode(&key.salt).expect("checked by decode");
            // A key object with an unusable cost (damaged, or planted to
            // stop everyone) is passed over, not allowed to block the others.
            let kek = match key.params.derive(password, &salt) {
                Ok(kek) => kek,
                Err(why) => {
                    tracing::warn!(
                        "key object {} skipped: {why}",
                        self.storage.describe(&object_name(id))
                    );
                    continue;
                }
            };
            if let Ok(master) = key.unwrap_with(&self.repo_id, &kek) {
                if let Some(cache) = &cache {
                    cache.put(id, password, &kek);
                }
                return Ok((master, id.clone()));
            }
        }
        Err(KeyError::WrongPassword)
    }

    /// Stores a new key object for `password`; returns its id.
    pub fn add(&self, master: &MasterKeys, password: &Password) -> Result<String, KeyError> {
        let params = KdfParams::for_new_keys().map_err(|detail| KeyError::Invalid {
            name: "new key".into(),
            detail,
        })?;
        let key = KeyObject::wrap(&self.repo_id, master, password, params).map_err(|detail| {
            KeyError::Invalid {
                name: "new key".into(),
                detail,
            }
        })?;
        let mut id = [0u8; 8];
        random(&mut id);
        let id = hex::encode(id);
        let bytes = serde_json::to_vec_pretty(&key).expect("serialises");
        self.storage
            .put(&object_name(&id), &bytes)
            .map_err(self.io("writing a key object in"))?;
        Ok(id)
    }

    /// Removes a key object.
    pub fn remove(&self, id: &str) -> Result<(), KeyError> {
        self.storage
            .delete(&object_name(id))
            .map_err(self.io("removing a key object from"))?;
        if let Some(cache) = KeyCache::new(&self.repo_id) {
            cache.forget(id);
        }
        Ok(())
    }
}

/// Derived wrapping keys this machine used recently, so that a command run
/// again and again (`wal push`, per segment) does not pay Argon2id each time:
/// `<cache root>/keys/<repository id>/<key id>`, mode 0600 in a 0700
/// directory, for `REWINDB_KEY_CACHE_SECS` seconds (default 3600; 0 turns it
/// off). An entry holds the derived key and a keyed hash of the password, so
/// another password does not use it.
struct KeyCache {
    dir: PathBuf,
    lifetime: Duration,
}

#[derive(Serialize, Deserialize)]
struct CachedKey {
    expires: i64,
    kek: String,
    check: String,
}

impl KeyCache {
    fn new(repo_id: &str) -> Option<KeyCache> {
        let secs = match std::env::var("REWINDB_KEY_CACHE_SECS") {
            Ok(v) => v.trim().parse().unwrap_or(3600),
            Err(_) => 3600,
        };
        if secs == 0 || !repo_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        Some(KeyCache {
            dir: crate::repo::cache::default_root()
                .join("keys")
                .join(repo_id),
            lifetime: Duration::from_secs(secs),
        })
    }

    fn check(kek: &[u8; 32], password: &Password) -> String {
        blake3::keyed_hash(kek, password.as_bytes())
            .to_hex()
            .to_string()
    }

    fn get(&self, id: &str, password: &Password) -> Option<Zeroizing<[u8; 32]>> {
        let text = Zeroizing::new(std::fs::read(self.dir.join(id)).ok()?);
        let entry: CachedKey = serde_json::from_slice(&text).ok()?;
        let kek_hex = Zeroizing::new(entry.kek);
        if jiff::Timestamp::now().as_second() >= entry.expires {
            self.forget(id);
            return None;
        }
        let mut kek = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(kek_hex.as_bytes(), kek.as_mut()).ok()?;
        (Self::check(&kek, password) == entry.check).then_some(kek)
    }

    fn put(&self, id: &str, password: &Password, kek: &[u8; 32]) {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let entry = CachedKey {
            expires: jiff::Timestamp::now().as_second() + self.lifetime.as_secs() as i64,
            kek: hex::encode(kek),
            check: Self::check(kek, password),
        };
        let text = Zeroizing::new(serde_json::to_vec(&entry).expect("serialises"));
        drop(Zeroizing::new(entry.kek));
        let write = || -> std::io::Result<()> {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)?;
            let tmp = self.dir.join(format!(".{id}.tmp"));
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            std::io::Write::write_all(&mut f, &text)?;
            std::fs::rename(&tmp, self.dir.join(id))
        };
        if let Err(e) = write() {
            tracing::debug!(
                "could not cache a derived key in {}: {e}",
                self.dir.display()
            );
        }
    }

    fn forget(&self, id: &str) {
        let _ = std::fs::remove_file(self.dir.join(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: KdfParams = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn a_key_object_unwraps_with_its_password_only() {
        let master = MasterKeys::generate();
        let pw = Password::new("correct horse".into());
        let key = KeyObject::wrap("abc", &master, &pw, CHEAP).unwrap();
        let bytes = serde_json::to_vec(&key).unwrap();
        let decoded = decode(&bytes).unwrap();
        let salt = hex::decode(&decoded.salt).unwrap();
        let kek = CHEAP.derive(&pw, &salt).unwrap();
        assert_eq!(*decoded.unwrap_with("abc", &kek).unwrap().0, *master.0);
        // Another repository's id, or another password, does not open it.
        assert!(decoded.unwrap_with("abd", &kek).is_err());
        let wrong = CHEAP.derive(&Password::new("wrong".into()), &salt).unwrap();
        assert!(decoded.unwrap_with("abc", &wrong).is_err());
        assert!(!bytes.windows(8).any(|w| w == &master.0[..8]));
    }

    #[test]
    fn a_planted_key_object_with_an_absurd_cost_does_not_block_the_others() {
        use crate::repo::storage::{Storage, memory::Memory};
        let mem = Memory::new();
        let mut repo_id = [0u8; 8];
        random(&mut repo_id);
        let repo_id = hex::encode(repo_id); // this test's own key cache entry
        let pw = Password::new("pw".into());
        let master = MasterKeys::generate();
        let mut planted = KeyObject::wrap(&repo_id, &MasterKeys::generate(), &pw, CHEAP).unwrap();
        planted.params.iterations = 1_000_000;
        let good = KeyObject::wrap(&repo_id, &master, &pw, CHEAP).unwrap();
        for (name, key) in [("0000000000000000", &planted), ("ffffffffffffffff", &good)] {
            let bytes = serde_json::to_vec(key).unwrap();
            mem.put(&object_name(name), &bytes).unwrap();
        }
        let ring = KeyRing::new(&mem, &repo_id);
        let (opened, id) = ring.open(&pw).unwrap();
        assert_eq!((*opened.0, id.as_str()), (*master.0, "ffffffffffffffff"));
        let wrong = ring.open(&Password::new("other".into())).err();
        assert!(matches!(wrong, Some(KeyError::WrongPassword)), "{wrong:?}");
    }

    #[test]
    fn damaged_key_objects_are_refused() {
        let pw = Password::new("pw".into());
        let key = KeyObject::wrap("abc", &MasterKeys::generate(), &pw, CHEAP).unwrap();
        let mut v = serde_json::to_value(&key).unwrap();
        v["wrapped"] = "00".into();
        assert!(decode(&serde_json::to_vec(&v).unwrap()).is_err());
        let mut v = serde_json::to_value(&key).unwrap();
        v["kdf"] = "scrypt".into();
        assert!(decode(&serde_json::to_vec(&v).unwrap()).is_err());
        assert!(decode(b"{}").is_err());
    }
}
