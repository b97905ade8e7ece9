//! Encryption at rest: what turns a repository's bytes into ciphertext and
//! its content ids into keyed hashes (`docs/format.md`, "Encryption").
//!
//! A repository created with a password has two random master keys, kept
//! in key objects ([`keys`]) wrapped by keys derived from its passwords:
//!
//! - the **encryption key** seals every object (XChaCha20-Poly1305, a fresh
//!   random 192-bit nonce per message, so nonces never repeat in practice);
//! - the **id key** makes chunk and snapshot ids keyed blake3 hashes, so the
//!   same data in two repositories gets different ids, and someone who can
//!   list a bucket cannot test whether a known page is in it.
//!
//! [`Crypto`] is what the rest of the code holds: for a plain repository it
//! hashes with plain blake3 and seals nothing, so the callers read the same
//! either way. Each sealed message names what it is (its associated data),
//! so a frame cannot be passed off as a snapshot, or one WAL file as another.

pub mod keys;
pub mod password;

use std::borrow::Cow;
use std::sync::Arc;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::id::{ChunkId, SnapshotId};

/// Bytes of a nonce, written before each sealed message.
pub const NONCE_LEN: usize = 24;
/// Bytes of the authentication tag, written after it.
pub const TAG_LEN: usize = 16;
/// What sealing adds to a message.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// The name of the cipher in `config.json` and key objects.
pub const CIPHER: &str = "xchacha20poly1305";

/// Associated data of each kind of sealed message (`docs/format.md`).
pub mod aad {
    pub const FRAME: &[u8] = b"rewindb frame";
    pub const PACK_TABLE: &[u8] = b"rewindb pack table";
    pub const SNAPSHOT: &[u8] = b"rewindb snapshot";
    pub const GC: &[u8] = b"rewindb gc.json";
    pub const INDEX_OBJECT: &[u8] = b"rewindb index object";

    /// A protect marker, bound to the snapshot it protects.
    pub fn marker(name: &str) -> Vec<u8> {
        [b"rewindb marker ".as_slice(), name.as_bytes()].concat()
    }

    /// A WAL archive file's header or body, bound to its object name.
    pub fn wal(part: &str, name: &str) -> Vec<u8> {
        format!("rewindb wal {part} {name}").into_bytes()
    }
}

/// The two master keys of a repository: encryption key, then id key.
pub struct MasterKeys(pub(crate) Zeroizing<[u8; 64]>);

impl MasterKeys {
    /// Fresh random keys for a new repository.
    pub fn generate() -> MasterKeys {
        let mut keys = Zeroizing::new([0u8; 64]);
        random(keys.as_mut());
        MasterKeys(keys)
    }

    /// Keys from their 64 bytes (fuzzing and tests: a real repository's
    /// come from [`generate`](Self::generate) and its key objects).
    pub fn from_bytes(bytes: [u8; 64]) -> MasterKeys {
        MasterKeys(Zeroizing::new(bytes))
    }

    fn encryption(&self) -> &[u8] {
        &self.0[..32]
    }

    fn id(&self) -> [u8; 32] {
        self.0[32..].try_into().expect("32 bytes")
    }
}

/// Fills `buf` from the operating system's random source.
pub fn random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the operating system's random source failed");
}

/// Why a sealed message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "does not authenticate: damaged, or altered by someone without the key \
     (or sealed by another repository)"
)]
pub struct Unauthentic;

struct Keys {
    cipher: XChaCha20Poly1305,
    id_key: Zeroizing<[u8; 32]>,
    mac_key: Zeroizing<[u8; 32]>,
}

/// How a repository hashes content into ids and seals its objects: plain
/// blake3 and no sealing, or keyed ids and XChaCha20-Poly1305.
#[derive(Clone, Default)]
pub struct Crypto(Option<Arc<Keys>>);

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.write_str(match self.0 {
            Some(_) => "Crypto(encrypted)",
            None => "Crypto(plain)",
        })
    }
}

impl Crypto {
    /// A plain repository's: blake3 ids, nothing sealed.
    pub fn plain() -> Crypto {
        Crypto(None)
    }

    /// An encrypted repository's, from its master keys.
    pub fn new(master: &MasterKeys) -> Crypto {
        let id_key = Zeroizing::new(master.id());
        let mac_key = Zeroizing::new(blake3::derive_key(
            "rewindb 2026-12 config authentication",
            master.encryption(),
        ));
        Crypto(Some(Arc::new(Keys {
            cipher: XChaCha20Poly1305::new(master.encryption().into()),
            id_key,
            mac_key,
        })))
    }

    pub fn is_encrypted(&self) -> bool {
        self.0.is_some()
    }

    /// Bytes sealing adds to each message (0 when plain).
    pub fn overhead(&self) -> usize {
        match self.0 {
            Some(_) => OVERHEAD,
            None => 0,
        }
    }

    /// The content hash ids are made of: blake3, keyed when encrypted.
    pub fn hash(&self, data: &[u8]) -> [u8; 32] {
        match &self.0 {
            Some(k) => *blake3::keyed_hash(&k.id_key, data).as_bytes(),
            None => *blake3::hash(data).as_bytes(),
        }
    }

    /// A chunk's id.
    pub fn chunk_id(&self, data: &[u8]) -> ChunkId {
        ChunkId(self.hash(data))
    }

    /// A snapshot's id: the hash of its (unsealed) JSON.
    pub fn snapshot_id(&self, json: &[u8]) -> SnapshotId {
        SnapshotId(self.hash(json))
    }

    /// Whether two repositories give the same content the same ids (`copy`
    /// moves chunks by id, so only between such repositories).
    pub fn same_ids(&self, other: &Crypto) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => *a.id_key == *b.id_key,
            _ => false,
        }
    }

    /// Authenticates `config.json`'s text (the key that seals nothing else).
    pub fn config_mac(&self, data: &[u8]) -> Option<[u8; 32]> {
        self.0
            .as_ref()
            .map(|k| *blake3::keyed_hash(&k.mac_key, data).as_bytes())
    }

    /// `plain` sealed: `nonce | ciphertext | tag`; unchanged when plain.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plain.len() + self.overhead());
        self.seal_to(aad, plain, &mut out);
        out
    }

    /// As [`seal`](Self::seal), appended to `out`.
    pub fn seal_to(&self, aad: &[u8], plain: &[u8], out: &mut Vec<u8>) {
        match &self.0 {
            Some(keys) => seal_into(&keys.cipher, aad, plain, out),
            None => out.extend_from_slice(plain),
        }
    }

    /// The message `stored` seals, if it authenticates with `aad`;
    /// `stored` itself when plain.
    pub fn open<'a>(&self, aad: &[u8], stored: &'a [u8]) -> Result<Cow<'a, [u8]>, Unauthentic> {
        let Some(keys) = &self.0 else {
            return Ok(Cow::Borrowed(stored));
        };
        open_with(&keys.cipher, aad, stored).map(Cow::Owned)
    }
}

/// Opens a sealed message with `cipher`.
fn open_with(
    cipher: &XChaCha20Poly1305,
    aad: &[u8],
    stored: &[u8],
) -> Result<Vec<u8>, Unauthentic> {
    if stored.len() < OVERHEAD {
        return Err(Unauthentic);
    }
    let (nonce, rest) = stored.split_at(NONCE_LEN);
    let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
    let mut plain = body.to_vec();
    cipher
        .decrypt_in_place_detached(XNonce::from_slice(nonce), aad, &mut plain, tag.into())
        .map_err(|_| Unauthentic)?;
    Ok(plain)
}

/// Appends `nonce | ciphertext | tag` of `plain` to `out`, the nonce fresh
/// from the operating system's random source.
fn seal_into(cipher: &XChaCha20Poly1305, aad: &[u8], plain: &[u8], out: &mut Vec<u8>) {
    let mut nonce = [0u8; NONCE_LEN];
    random(&mut nonce);
    out.extend_from_slice(&nonce);
    let start = out.len();
    out.extend_from_slice(plain);
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(&nonce), aad, &mut out[start..])
        .expect("messages are far below the cipher's limit");
    out.extend_from_slice(&tag);
}

/// Seals with a key that is not a repository's master key (a key object's
/// wrapping key).
fn seal_with(key: &[u8; 32], aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plain.len() + OVERHEAD);
    seal_into(&XChaCha20Poly1305::new(key.into()), aad, plain, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encrypted() -> Crypto {
        Crypto::new(&MasterKeys::generate())
    }

    #[test]
    fn sealed_messages_open_only_with_their_key_and_aad() {
        let c = encrypted();
        let sealed = c.seal(aad::FRAME, b"page bytes");
        assert_eq!(sealed.len(), 10 + OVERHEAD);
        assert_eq!(c.open(aad::FRAME, &sealed).unwrap().as_ref(), b"page bytes");
        assert_eq!(c.open(aad::SNAPSHOT, &sealed), Err(Unauthentic));
        assert_eq!(encrypted().open(aad::FRAME, &sealed), Err(Unauthentic));
        for i in 0..sealed.len() {
            let mut flipped = sealed.clone();
            flipped[i] ^= 1;
            assert_eq!(c.open(aad::FRAME, &flipped), Err(Unauthentic), "byte {i}");
        }
        for len in 0..sealed.len() {
            assert_eq!(c.open(aad::FRAME, &sealed[..len]), Err(Unauthentic));
        }
    }

    #[test]
    fn each_seal_has_its_own_nonce() {
        let c = encrypted();
        let a = c.seal(aad::FRAME, b"same");
        let b = c.seal(aad::FRAME, b"same");
        assert_ne!(a[..NONCE_LEN], b[..NONCE_LEN]);
    }

    #[test]
    fn ids_are_keyed_per_repository_and_plain_ones_are_blake3() {
        let (a, b) = (encrypted(), encrypted());
        assert_ne!(a.chunk_id(b"page"), b.chunk_id(b"page"));
        assert_eq!(a.chunk_id(b"page"), a.chunk_id(b"page"));
        assert_eq!(Crypto::plain().chunk_id(b"page"), ChunkId::of(b"page"));
        assert!(!a.same_ids(&b) && a.same_ids(&a.clone()));
        assert_eq!(
            Crypto::plain().open(aad::FRAME, b"x").unwrap().as_ref(),
            b"x"
        );
    }
}
