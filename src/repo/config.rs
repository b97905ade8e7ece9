//! `config.json`: a repository's format and parameters, written once by `init`.

use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::repo::pack;

/// The newest repository format this build reads and writes. Version 2
/// added `pg_chunk` to the chunker parameters: a build that knows only
/// version 1 would ignore it and cut PostgreSQL files differently from the
/// repository's earlier backups, so it must refuse the repository. Version 1
/// repositories are read and written as they are (single-page chunks).
pub const FORMAT_VERSION: u32 = 2;
pub const CONFIG_FORMAT: &str = "rewindb-repository";

/// The pack size of a repository on this machine's disks.
pub const LOCAL_PACK_BYTES: u64 = 16 << 20;
/// The pack size of a repository in object storage: each PUT and each
/// index entry covers twice as much, and a restore still reads packs in
/// windows, not whole.
pub const REMOTE_PACK_BYTES: u64 = 32 << 20;
/// The frame size of a repository on this machine's disks: zstd finds more
/// in 1 MiB than in 64 KiB (the 1 GiB SQLite benchmark database: 346 MiB of
/// packs in 64 KiB frames, 325 in 256 KiB, 312 in 1 MiB; `docs/benchmarks.md`,
/// "Frames of 1 MiB"). Reads decompress a whole frame, but chunks are read
/// in file order and readers keep recent frames, so each is decompressed once.
pub const LOCAL_FRAME_BYTES: u64 = 1 << 20;
/// The frame size of a repository in object storage: a restore fetches whole
/// frames, and a snapshot after many incrementals reads pages scattered over
/// many of them, so a frame stays small.
pub const REMOTE_FRAME_BYTES: u64 = 64 << 10;

/// `config.json`: written once by `init`, never changed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Config {
    pub format: String,
    pub version: u32,
    pub id: String,
    pub chunker: ChunkerParams,
    /// zstd level for new blobs.
    pub compression_level: i32,
    /// New blobs are compressed together in frames of about this many bytes.
    pub frame_target_bytes: u64,
    /// A pack is sealed once its frames reach this many bytes.
    pub pack_target_bytes: u64,
    /// How objects are sealed and ids keyed; absent in a plain repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// An encrypted repository's keyed hash (hex) of this file's JSON
    /// without this field: a change to any parameter is detected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// `config.json`'s `encryption`: the algorithms of an encrypted repository.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    /// `xchacha20poly1305`.
    pub cipher: String,
    /// `blake3-keyed`: chunk and snapshot ids are blake3 keyed with the id key.
    pub ids: String,
    /// `argon2id`: how key objects derive their wrapping keys.
    pub kdf: String,
}

impl Encryption {
    pub fn current() -> Encryption {
        Encryption {
            cipher: crate::crypto::CIPHER.into(),
            ids: "blake3-keyed".into(),
            kdf: "argon2id".into(),
        }
    }
}

impl Config {
    /// A new repository's parameters; `remote` when its objects travel over
    /// a network, where a pack is [`REMOTE_PACK_BYTES`] (half the requests).
    pub(crate) fn new(location: &str, remote: bool, encrypted: bool) -> Config {
        let seed = format!(
            "{}|{}|{}",
            location,
            std::process::id(),
            jiff::Timestamp::now()
        );
        Config {
            format: CONFIG_FORMAT.into(),
            version: FORMAT_VERSION,
            id: blake3::hash(seed.as_bytes()).to_hex()[..16].to_string(),
            chunker: ChunkerParams {
                // A bucket stores changed chunks whole (no base downloads):
                // there a changed page must cost a page, not 64 KiB.
                page_chunk_min: match remote {
                    true => 4096,
                    false => ChunkerParams::default().page_chunk_min,
                },
                ..ChunkerParams::default()
            },
            compression_level: 3,
            frame_target_bytes: match remote {
                true => REMOTE_FRAME_BYTES,
                false => LOCAL_FRAME_BYTES,
            },
            pack_target_bytes: match remote {
                true => REMOTE_PACK_BYTES,
                false => LOCAL_PACK_BYTES,
            },
            encryption: encrypted.then(Encryption::current),
            mac: None,
        }
    }

    /// The bytes the `mac` covers: this config's JSON without it.
    pub(crate) fn authenticated_bytes(&self) -> Vec<u8> {
        let mut bare = self.clone();
        bare.mac = None;
        serde_json::to_vec(&bare).expect("config serialises")
    }
}

impl Config {
    /// Sizes the pack format can address (`docs/format.md`): frames are
    /// refused above `MAX_FRAME_LEN` and pack offsets are 32-bit.
    pub(crate) fn validate(&self) -> Result<(), String> {
        self.chunker.validate()?;
        let frame_max = u64::from(pack::MAX_FRAME_LEN) / 2;
        if !(4096..=frame_max).contains(&self.frame_target_bytes) {
            return Err(format!("frame_target_bytes must be 4096..={frame_max}"));
        }
        if !(65536..=1 << 30).contains(&self.pack_target_bytes) {
            return Err("pack_target_bytes must be 65536..=1073741824".into());
        }
        if !(1..=19).contains(&self.compression_level) {
            return Err("compression_level must be 1..=19".into());
        }
        if let Some(e) = &self.encryption
            && *e != Encryption::current()
        {
            return Err(format!(
                "encryption {e:?} is not one this rewindb knows; upgrade rewindb"
            ));
        }
        Ok(())
    }
}
