//! The small objects of a repository, as [`Repository`] methods: snapshot
//! objects (listed through this machine's cache when the repository is
//! remote), protect markers and `gc.json`. Packs, the index and the WAL
//! archive have their own modules.

use std::collections::HashSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::snapshot::Snapshot;
use super::storage::{self, is_not_found};
use super::{Repository, cache};
use crate::crypto::aad;
use crate::error::{IoContext, RepoError};
use crate::id::SnapshotId;

impl Repository {
    /// Makes a snapshot visible. Call only once everything it references is durable.
    pub fn commit_snapshot(&self, snap: &Snapshot) -> Result<SnapshotId, RepoError> {
        let (id, bytes) = snap.encode(&self.crypto);
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
        Ok(self.gc_record()?.map(|r| r.time))
    }

    /// `gc.json`, opened and checked against the newest generation this
    /// machine has seen: an older one is a copy put back (a replay), refused.
    fn gc_record(&self) -> Result<Option<GcRecord>, RepoError> {
        let stored = match self.storage.get("gc.json") {
            Ok(b) => b,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e).ctx(|| format!("reading {}", self.describe("gc.json"))),
        };
        let corrupt = |detail: String| RepoError::corrupt(self.describe("gc.json"), detail);
        let bytes = self
            .crypto
            .open(aad::GC, &stored)
            .map_err(|e| corrupt(e.to_string()))?;
        let record: GcRecord =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let seen = self.gc_generation_seen();
        if record.generation < seen {
            return Err(corrupt(format!(
                "it records gc generation {} ({}), but this machine has seen generation \
                 {seen}: an older copy was put back (replayed); find out who can write the \
                 repository, then run `rewindb check --read-data`",
                record.generation, record.time
            )));
        }
        self.saw_gc_generation(record.generation);
        Ok(Some(record))
    }

    /// Where this machine keeps the newest `gc.json` generation it saw.
    fn gc_generation_file(&self) -> PathBuf {
        cache::default_root()
            .join(&self.config.id)
            .join("gc-generation")
    }

    /// Only an encrypted repository keeps the record: in a plain one anyone
    /// who can write gc.json can write anything else as well.
    fn gc_generation_seen(&self) -> u64 {
        if !self.crypto.is_encrypted() {
            return 0;
        }
        std::fs::read_to_string(self.gc_generation_file())
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Best effort: a machine that cannot keep the record only loses the
    /// replay check.
    fn saw_gc_generation(&self, generation: u64) {
        if self.crypto.is_encrypted() && generation > self.gc_generation_seen() {
            cache::keep(
                &self.gc_generation_file(),
                generation.to_string().as_bytes(),
            );
        }
    }

    /// Records that a gc finished at `time` (read by `run` to space gc runs,
    /// and by other machines' caches, which rebuild after a gc).
    pub fn record_gc(&self, time: jiff::Timestamp) -> Result<(), RepoError> {
        let generation = self.gc_record()?.map_or(0, |r| r.generation) + 1;
        let record = GcRecord { time, generation };
        let json = serde_json::to_vec(&record).expect("serialises");
        let bytes = self.crypto.seal(aad::GC, &json);
        self.saw_gc_generation(generation);
        self.storage
            .replace("gc.json", &bytes)
            .ctx(|| format!("writing {}", self.describe("gc.json")))?;
        // This machine's cache saw the gc it ran.
        self.cache_saw_gc(&bytes)
    }

    /// Snapshots that no retention policy removes (`rewindb protect`): one
    /// object `protected/<snapshot id>` each (empty, or in an encrypted
    /// repository an empty message sealed to its name). A marker that does
    /// not authenticate protects nothing (warned here, reported by `check`).
    pub fn protected(&self) -> Result<HashSet<SnapshotId>, RepoError> {
        let (valid, forged) = self.protect_markers()?;
        for name in forged {
            tracing::warn!(
                "{} does not authenticate: it protects nothing (`rewindb check` reports it)",
                self.describe(&name)
            );
        }
        Ok(valid)
    }

    /// Protect markers: the snapshots they protect, and the names of
    /// markers that do not authenticate.
    pub fn protect_markers(&self) -> Result<(HashSet<SnapshotId>, Vec<String>), RepoError> {
        let listed = self
            .storage
            .list("protected/")
            .ctx(|| format!("listing {}", self.describe("protected")))?;
        let mut valid = HashSet::new();
        let mut forged = Vec::new();
        for object in listed {
            let Some(id) = storage::id_in_name::<SnapshotId>(&object.name, "") else {
                continue;
            };
            if self.crypto.is_encrypted() {
                let sound = match self.storage.get(&object.name) {
                    Ok(bytes) => self.crypto.open(&aad::marker(&object.name), &bytes).is_ok(),
                    Err(e) if is_not_found(&e) => continue,
                    Err(e) => {
                        return Err(e).ctx(|| format!("reading {}", self.describe(&object.name)));
                    }
                };
                if !sound {
                    forged.push(object.name);
                    continue;
                }
            }
            valid.insert(id);
        }
        Ok((valid, forged))
    }

    /// Protects a snapshot from retention policies, or lifts the protection.
    pub fn set_protected(&self, id: &SnapshotId, on: bool) -> Result<(), RepoError> {
        let name = format!("protected/{}", id.to_hex());
        let done = match on {
            true => match self
                .storage
                .put(&name, &self.crypto.seal(&aad::marker(&name), b""))
            {
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
            // Cached as stored (sealed, in an encrypted repository).
            let kept = cached
                .as_ref()
                .and_then(|path| std::fs::read(path).ok())
                .and_then(|bytes| Snapshot::decode(&id, &bytes, &self.crypto).ok());
            if let Some(snap) = kept {
                list.ok.push((id, snap));
                continue;
            }
            let bytes = match self.storage.get(&object.name) {
                Ok(bytes) => bytes,
                // Forgotten since the listing (readers take no lock against `forget`).
                Err(e) if is_not_found(&e) => continue,
                Err(e) => {
                    return Err(e).ctx(|| format!("reading {}", self.describe(&object.name)));
                }
            };
            let decoded = Snapshot::decode(&id, &bytes, &self.crypto);
            if let (Some(path), Ok(_)) = (&cached, &decoded) {
                cache::keep(path, &bytes);
            }
            match decoded {
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

    /// The ids of every snapshot object: one listing, nothing read.
    pub fn snapshot_ids(&self) -> Result<Vec<SnapshotId>, RepoError> {
        let listed = self
            .storage
            .list("snapshots/")
            .ctx(|| format!("listing {}", self.describe("snapshots")))?;
        Ok(listed
            .iter()
            .filter_map(|o| storage::id_in_name::<SnapshotId>(&o.name, ".json"))
            .collect())
    }

    /// One snapshot object, read and checked against its id: `None` when it
    /// is gone (forgotten), `Some(Err)` when it is damaged.
    pub fn read_snapshot(
        &self,
        id: &SnapshotId,
    ) -> Result<Option<Result<Snapshot, String>>, RepoError> {
        let name = storage::snapshot_name(id);
        match self.storage.get(&name) {
            Ok(bytes) => Ok(Some(Snapshot::decode(id, &bytes, &self.crypto))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e).ctx(|| format!("reading {}", self.describe(&name))),
        }
    }

    /// Where this machine keeps the snapshot objects it has read, when the
    /// repository is elsewhere and this process holds its cache.
    fn snapshot_cache(&self) -> Option<PathBuf> {
        self.cache_lock.as_ref()?;
        Some(self.index_dir.join("snapshots"))
    }
}

/// `gc.json`: when the last gc finished, and how many gc runs the
/// repository has had (a copy put back is older than one already seen).
#[derive(Serialize, Deserialize)]
struct GcRecord {
    time: jiff::Timestamp,
    /// 0 in files written before generations existed.
    #[serde(default)]
    generation: u64,
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
