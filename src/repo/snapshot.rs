//! Snapshot files: what one backup run captured, committed last.
//!
//! A snapshot is a JSON file `snapshots/<id>.json` whose name is the blake3 of
//! its bytes. It lists each backed-up file with its size, whole-file blake3 and
//! the meta blobs that hold its manifest (the ordered list of its chunk ids).
//! It is written only after every blob it references is durable and indexed.

use std::path::PathBuf;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::crypto::{Crypto, aad};
use crate::id::{ChunkId, SnapshotId};
use crate::source::postgres::Lsn;

/// Version 2 added PostgreSQL base backups (`source: "postgres"`, the
/// `postgres` section, file owners) and command streams (`source: "pg_dump"`
/// or `"command"`, the `stream` section). Version 1 snapshots read unchanged.
pub const SNAPSHOT_VERSION: u32 = 2;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub version: u32,
    /// When the backup started (the moment its sources were read is within
    /// `stats.duration_secs` of it).
    pub time: Timestamp,
    pub source: SourceKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The source's name in the `run` config that made it (`restore
    /// --source NAME`); absent for snapshots made by `backup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub hostname: String,
    pub files: Vec<FileEntry>,
    pub stats: BackupStats,
    /// A PostgreSQL base backup's own facts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PgBackupInfo>,
    /// A command's output (`backup command`, `backup pg-dump`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamInfo>,
}

/// Where a stream snapshot's single file came from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    /// The name given with `--name`: later runs with the same name are the
    /// same source (for deltas, listings and `--source`).
    pub name: String,
    /// The command line that produced the output.
    pub command: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Sqlite,
    Postgres,
    /// `backup pg-dump`: a pg_dump stream.
    #[serde(rename = "pg_dump")]
    PgDump,
    /// `backup command`: any command's standard output.
    Command,
}

/// What a PostgreSQL base backup needs besides its files to be restored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PgBackupInfo {
    /// The cluster's system identifier (a string: it does not fit a JSON
    /// number exactly).
    #[serde(with = "u64_text")]
    pub system_identifier: u64,
    pub pgdata: PathBuf,
    pub server_version_num: u32,
    pub timeline: u32,
    pub wal_segment_size: u64,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    pub start_time: Timestamp,
    pub stop_time: Timestamp,
    /// First and last WAL segments the backup needs to be consistent.
    pub start_wal: String,
    pub stop_wal: String,
    /// Every directory of the data directory, parents first, with its mode
    /// and owner (files carry their own in [`FileEntry`]).
    pub directories: Vec<DirEntry>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub path: PathBuf,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

mod u64_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct FileEntry {
    /// Name the file is restored under (the source's file name).
    pub name: String,
    /// Absolute path the file was read from.
    pub source_path: PathBuf,
    pub size: u64,
    /// blake3 of the whole file as captured.
    pub blake3: String,
    /// SQLite page size; the file was cut on these boundaries.
    pub page_size: u32,
    pub journal_mode: String,
    /// Unix permission bits of the source file, applied on restore.
    #[serde(default = "default_mode")]
    pub mode: u32,
    pub chunk_count: u64,
    /// Meta blobs whose concatenation is the file's manifest.
    pub manifest: Vec<ChunkId>,
    /// Owner of the source file (PostgreSQL files; restored when run as root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<(u32, u32)>,
}

fn default_mode() -> u32 {
    0o644
}

/// Figures of one backup run, as printed at the end of it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct BackupStats {
    /// Logical bytes read from the sources.
    pub bytes_read: u64,
    /// Chunks (data and meta) the run produced, and how many were not yet stored.
    pub chunks: u64,
    pub chunks_new: u64,
    /// How many of the new chunks were stored as deltas of the previous snapshot's.
    #[serde(default)]
    pub chunks_delta: u64,
    /// Uncompressed bytes of the new chunks.
    pub bytes_new: u64,
    /// What the new chunks take in packs, after compression.
    pub bytes_added: u64,
    pub duration_secs: f64,
}

impl Snapshot {
    /// Serialises the snapshot as stored (sealed in an encrypted
    /// repository); its id is the (keyed) hash of its JSON.
    pub fn encode(&self, crypto: &Crypto) -> (SnapshotId, Vec<u8>) {
        let mut bytes = serde_json::to_vec_pretty(self).expect("snapshot serialises");
        bytes.push(b'\n');
        (
            crypto.snapshot_id(&bytes),
            crypto.seal(aad::SNAPSHOT, &bytes),
        )
    }

    /// Parses a snapshot as stored, checking it opens and hashes to `id`.
    pub fn decode(id: &SnapshotId, stored: &[u8], crypto: &Crypto) -> Result<Snapshot, String> {
        let bytes = crypto
            .open(aad::SNAPSHOT, stored)
            .map_err(|e| format!("snapshot object {e}"))?;
        if crypto.snapshot_id(&bytes) != *id {
            return Err("contents do not match the snapshot id (file damaged)".into());
        }
        let snap: Snapshot = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        if snap.version > SNAPSHOT_VERSION {
            return Err(format!(
                "snapshot version {} is newer than this rewindb reads ({SNAPSHOT_VERSION})",
                snap.version
            ));
        }
        Ok(snap)
    }

    pub fn logical_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// The source this snapshot belongs to for retention (`forget`): a
    /// PostgreSQL cluster (by system identifier), a stream (by `--name`), or
    /// the set of databases one `backup sqlite` read, on one host.
    pub fn source_key(&self) -> String {
        if let Some(pg) = &self.postgres {
            return format!("postgres cluster {}", pg.system_identifier);
        }
        let kind = serde_json::to_value(self.source)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        if let Some(stream) = &self.stream {
            // As for deltas: the same name is the same source, from any host.
            return format!("{kind} {}", stream.name);
        }
        format!("{kind} {}:{}", self.hostname, self.sources().join(","))
    }

    /// The sources as shown in listings: the databases, or the data directory.
    pub fn sources(&self) -> Vec<String> {
        if let Some(pg) = &self.postgres {
            return vec![pg.pgdata.display().to_string()];
        }
        if let Some(stream) = &self.stream {
            return vec![stream.name.clone()];
        }
        self.files
            .iter()
            .map(|f| f.source_path.display().to_string())
            .collect()
    }
}

/// Encodes a manifest: the chunk ids in file order, 32 bytes each.
pub fn encode_manifest(ids: &[ChunkId]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ids.len() * 32);
    for id in ids {
        out.extend_from_slice(id.as_bytes());
    }
    out
}

/// Decodes a manifest, checking it holds exactly `count` ids.
pub fn decode_manifest(bytes: &[u8], count: u64) -> Result<Vec<ChunkId>, String> {
    if !bytes.len().is_multiple_of(32) || (bytes.len() / 32) as u64 != count {
        return Err(format!(
            "manifest is {} bytes, expected {} chunk ids",
            bytes.len(),
            count
        ));
    }
    Ok(bytes
        .chunks_exact(32)
        .map(|c| ChunkId(c.try_into().unwrap()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot {
            version: SNAPSHOT_VERSION,
            time: "2026-11-23T14:05:00Z".parse().unwrap(),
            source: SourceKind::Sqlite,
            label: Some("nightly".into()),
            name: None,
            hostname: "db1".into(),
            files: vec![FileEntry {
                name: "app.db".into(),
                source_path: "/srv/app.db".into(),
                size: 8192,
                blake3: "00".repeat(32),
                page_size: 4096,
                journal_mode: "wal".into(),
                mode: 0o640,
                chunk_count: 2,
                manifest: vec![ChunkId::of(b"m")],
                owner: None,
            }],
            stats: BackupStats::default(),
            postgres: None,
            stream: None,
        }
    }

    #[test]
    fn base_backup_round_trip_keeps_the_system_identifier_exact() {
        let mut snap = sample();
        snap.source = SourceKind::Postgres;
        snap.files[0].owner = Some((105, 111));
        snap.postgres = Some(PgBackupInfo {
            system_identifier: 7_311_444_616_403_961_883,
            pgdata: "/var/lib/postgresql/15/main".into(),
            server_version_num: 150018,
            timeline: 2,
            wal_segment_size: 16 << 20,
            start_lsn: Lsn(0x3000028),
            stop_lsn: Lsn(0x3000100),
            start_time: "2026-11-23T14:05:00Z".parse().unwrap(),
            stop_time: "2026-11-23T14:05:02Z".parse().unwrap(),
            start_wal: "000000020000000000000003".into(),
            stop_wal: "000000020000000000000003".into(),
            directories: vec![DirEntry {
                path: "".into(),
                mode: 0o700,
                uid: 105,
                gid: 111,
            }],
        });
        let (id, bytes) = snap.encode(&Crypto::plain());
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("\"7311444616403961883\""), "{text}");
        assert!(text.contains("\"0/3000028\""), "{text}");
        assert_eq!(
            Snapshot::decode(&id, &bytes, &Crypto::plain()).unwrap(),
            snap
        );
        assert_eq!(snap.sources(), ["/var/lib/postgresql/15/main"]);
    }

    #[test]
    fn snapshot_round_trip_and_tamper_detection() {
        let (id, bytes) = sample().encode(&Crypto::plain());
        assert_eq!(
            Snapshot::decode(&id, &bytes, &Crypto::plain()).unwrap(),
            sample()
        );
        let mut bad = bytes.clone();
        bad[10] ^= 1;
        assert!(Snapshot::decode(&id, &bad, &Crypto::plain()).is_err());
    }

    #[test]
    fn manifest_round_trip_and_count_check() {
        let ids: Vec<_> = (0..10u8).map(|i| ChunkId::of(&[i])).collect();
        let bytes = encode_manifest(&ids);
        assert_eq!(decode_manifest(&bytes, 10).unwrap(), ids);
        assert!(decode_manifest(&bytes, 9).is_err());
        assert!(decode_manifest(&bytes[..31], 1).is_err());
    }
}
