//! The small objects of a repository, as [`Repository`] methods: snapshot
//! objects (listed through this machine's cache when the repository is
//! remote), protect markers and `gc.json`. Packs, the index and the WAL
//! archive have their own modules.

use std::collections::HashSet;
use std::path::PathBuf;

use serde::Deserialize;

use super::snapshot::Snapshot;
use super::storage::{self, is_not_found};
use super::{Repository, cache};
use crate::error::{IoContext, RepoError};
use crate::id::SnapshotId;

impl Repository {
    /// Makes a snapshot visible. Call only once everything it references is durable.
    pub fn commit_snapshot(&self, snap: &Snapshot) -> Result<SnapshotId, RepoError> {
        let (id, bytes) = snap.encode();
        let name = storage::snapshot_name(&id);
        match self.storage.put(&name, &bytes) {
            // Named by its bytes' hash: the same snapshot, committed again.
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                Err(e).ctx(|| format!("writing snapshot {}", self.describe(&name)))
            }
            _ => Ok(id),
        }
    }

    /// When the last gc finished (`gc.json`), if one ever did.
    pub fn last_gc(&self) -> Result<Option<jiff::Timestamp>, RepoError> {
        let bytes = match self.storage.get("gc.json") {
            Ok(b) => b,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e).ctx(|| format!("reading {}", self.describe("gc.json"))),
        };
        #[derive(Deserialize)]
        struct Last {
            time: jiff::Timestamp,
        }
        let last: Last = serde_json::from_slice(&bytes)
            .map_err(|e| RepoError::corrupt(self.describe("gc.json"), e.to_string()))?;
        Ok(Some(last.time))
    }

    /// Records that a gc finished at `time` (read by `run` to space gc runs,
    /// and by other machines' caches, which rebuild after a gc).
    pub fn record_gc(&self, time: jiff::Timestamp) -> Result<(), RepoError> {
        let bytes = serde_json::to_vec(&serde_json::json!({ "time": time })).expect("serialises");
        self.storage
            .replace("gc.json", &bytes)
            .ctx(|| format!("writing {}", self.describe("gc.json")))?;
        // This machine's cache saw the gc it ran.
        self.cache_saw_gc(&bytes)
    }

    /// Snapshots that no retention policy removes (`rewindb protect`): one
    /// empty object `protected/<snapshot id>` each.
    pub fn protected(&self) -> Result<HashSet<SnapshotId>, RepoError> {
        Ok(self
            .storage
            .list("protected/")
            .ctx(|| format!("listing {}", self.describe("protected")))?
            .iter()
            .filter_map(|o| storage::id_in_name(&o.name, ""))
            .collect())
    }

    /// Protects a snapshot from retention policies, or lifts the protection.
    pub fn set_protected(&self, id: &SnapshotId, on: bool) -> Result<(), RepoError> {
        let name = format!("protected/{}", id.to_hex());
        let done = match on {
            true => match self.storage.put(&name, b"") {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                other => other,
            },
            false => self.storage.delete(&name),
        };
        done.ctx(|| format!("writing {}", self.describe(&name)))
    }

    /// Removes a snapshot (`forget`); the data only it referenced stays in
    /// the packs until `gc`. Needs the exclusive lock.
    pub fn remove_snapshot(&self, id: &SnapshotId) -> Result<(), RepoError> {
        assert!(self.is_exclusive(), "forgetting needs the exclusive lock");
        let name = storage::snapshot_name(id);
        self.storage
            .delete(&name)
            .ctx(|| format!("removing snapshot {}", self.describe(&name)))
    }

    /// All snapshots, oldest first, and the snapshot objects that could not be read.
    ///
    /// A repository kept elsewhere costs one listing here, not one request
    /// per snapshot: a snapshot object never changes (its name is its hash),
    /// so once read it is kept in the cache directory, and checked against
    /// its name whenever it is read from there.
    pub fn snapshots(&self) -> Result<SnapshotList, RepoError> {
        self.list_snapshots(self.snapshot_cache())
    }

    /// As [`snapshots`](Self::snapshots), every object read from the
    /// repository itself (`check`: the copy there is what must be sound).
    pub fn snapshots_as_stored(&self) -> Result<SnapshotList, RepoError> {
        self.list_snapshots(None)
    }

    fn list_snapshots(&self, cache: Option<PathBuf>) -> Result<SnapshotList, RepoError> {
        let mut list = SnapshotList::default();
        let listed = self
            .storage
            .list("snapshots/")
            .ctx(|| format!("listing {}", self.describe("snapshots")))?;
        for object in &listed {
            let Some(id) = storage::id_in_name::<SnapshotId>(&object.name, ".json") else {
                continue;
            };
            let cached = cache.as_ref().map(|dir| dir.join(format!("{id}.json")));
            let kept = cached
                .as_ref()
                .and_then(|path| std::fs::read(path).ok())
                .filter(|bytes| SnapshotId::of(bytes) == id);
            let bytes = match kept {
                Some(bytes) => bytes,
                None => match self.storage.get(&object.name) {
                    Ok(bytes) => {
                        if let Some(path) = &cached {
                            cache::keep(path, &bytes);
                        }
                        bytes
                    }
                    // Forgotten since the listing (readers take no lock against `forget`).
                    Err(e) if is_not_found(&e) => continue,
                    Err(e) => {
                        return Err(e).ctx(|| format!("reading {}", self.describe(&object.name)));
                    }
                },
            };
            match Snapshot::decode(&id, &bytes) {
                Ok(s) => list.ok.push((id, s)),
                Err(e) => list.damaged.push((id, e)),
            }
        }
        if let Some(dir) = &cache {
            let names: HashSet<&str> = listed
                .iter()
                .filter_map(|o| o.name.strip_prefix("snapshots/"))
                .collect();
            cache::forget_others(dir, &names);
        }
        list.ok
            .sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(list)
    }

    /// Where this machine keeps the snapshot objects it has read, when the
    /// repository is elsewhere and this process holds its cache.
    fn snapshot_cache(&self) -> Option<PathBuf> {
        self.cache_lock.as_ref()?;
        Some(self.index_dir.join("snapshots"))
    }
}

#[derive(Default)]
pub struct SnapshotList {
    pub ok: Vec<(SnapshotId, Snapshot)>,
    /// Snapshot files that exist but do not parse or do not match their id.
    pub damaged: Vec<(SnapshotId, String)>,
}

impl SnapshotList {
    /// Finds a snapshot by `latest` or a unique prefix of its id (at least 4 hex digits).
    pub fn find(&self, spec: &str) -> Result<&(SnapshotId, Snapshot), RepoError> {
        if spec == "latest" {
            return self.ok.last().ok_or_else(|| {
                RepoError::UnknownSnapshot("latest (the repository has no snapshots)".into())
            });
        }
        let spec_lc = spec.to_ascii_lowercase();
        if spec_lc.len() < 4 || !spec_lc.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RepoError::UnknownSnapshot(spec.to_string()));
        }
        let mut found = self
            .ok
            .iter()
            .filter(|(id, _)| id.to_hex().starts_with(&spec_lc));
        match (found.next(), found.next()) {
            (Some(s), None) => Ok(s),
            (Some(_), Some(_)) => Err(RepoError::AmbiguousSnapshot(spec.to_string())),
            (None, _) => Err(RepoError::UnknownSnapshot(spec.to_string())),
        }
    }
}
