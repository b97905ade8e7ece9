//! The snapshot listing the read endpoints answer from: every snapshot,
//! read once (a snapshot object never changes), with its JSON rendered
//! once, and the PITR windows of the WAL archive. Refreshed by one listing
//! of `snapshots/` at most once a second, and at once after the server
//! changes something; requests never wait for a refresh another started.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::commands::pitr::{ArchiveView, archive_view};
use crate::error::RepoError;
use crate::id::SnapshotId;
use crate::repo::Repository;
use crate::repo::snapshot::Snapshot;

/// How long a listing is taken as current.
const FRESH_FOR: Duration = Duration::from_secs(1);
/// How long the PITR windows are kept when no snapshot changed (new WAL
/// moves them without a new snapshot).
const WINDOWS_FRESH_FOR: Duration = Duration::from_secs(10);

/// One listing, rendered.
pub struct Listing {
    built: Instant,
    checked: Mutex<Instant>,
    /// The catalog's generation this listing is as current as: the server
    /// changed the repository since when the catalog's is higher.
    generation: AtomicU64,
    /// Oldest first.
    pub snapshots: Vec<(SnapshotId, Snapshot)>,
    /// Each snapshot's JSON (`rewindb snapshots --json`'s objects), in the same order.
    pub json: Vec<String>,
    pub damaged: Vec<(SnapshotId, String)>,
    pub protected: HashSet<SnapshotId>,
    pub view: ArchiveView,
}

#[derive(Default)]
pub struct Catalog {
    current: Mutex<Option<Arc<Listing>>>,
    refreshing: Mutex<()>,
    /// Raised by each change the server makes ([`invalidate`](Self::invalidate)).
    generation: AtomicU64,
}

impl Catalog {
    /// The listing held now: `Ok` when it is fresh, else `Err` with it (or
    /// with none yet).
    fn current_listing(&self) -> Result<Arc<Listing>, Option<Arc<Listing>>> {
        let current = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match current {
            Some(l) if self.is_fresh(&l) => Ok(l),
            other => Err(other),
        }
    }

    /// Whether `l` shows every change the server made, and is young enough.
    fn is_fresh(&self, l: &Listing) -> bool {
        l.generation.load(Ordering::Acquire) == self.generation.load(Ordering::Acquire)
            && l.checked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .elapsed()
                < FRESH_FOR
    }

    /// The listing if it is current: no blocking, so a request can take it
    /// without leaving the thread that answers it.
    pub fn fresh(&self) -> Option<Arc<Listing>> {
        self.current_listing().ok()
    }

    /// The listing, refreshed first when it is stale. While another request
    /// refreshes it, one that is merely old (not missing a change of the
    /// server's own) is taken as it is.
    pub fn get(&self, repo: &Repository) -> Result<Arc<Listing>, RepoError> {
        let current = match self.current_listing() {
            Ok(fresh) => return Ok(fresh),
            Err(current) => current,
        };
        let behind = current.as_ref().is_none_or(|l| {
            l.generation.load(Ordering::Acquire) != self.generation.load(Ordering::Acquire)
        });
        let _refresh = match self.refreshing.try_lock() {
            Ok(guard) => guard,
            Err(_) if !behind => return Ok(current.expect("not behind: there is one")),
            Err(_) => self.refreshing.lock().unwrap_or_else(|e| e.into_inner()),
        };
        // Another request may have refreshed it while this one waited.
        let current = match self.current_listing() {
            Ok(fresh) => return Ok(fresh),
            Err(current) => current,
        };
        let generation = self.generation.load(Ordering::Acquire);
        let fresh = refresh(repo, current.as_ref(), generation)?;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(fresh.clone());
        Ok(fresh)
    }

    /// The next [`get`](Self::get) lists the repository again (reading
    /// only the snapshots it has not read yet), and waits for that listing.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// A listing as current as `generation` (read before the listing starts:
/// a change made meanwhile raises the catalog's past it).
fn refresh(
    repo: &Repository,
    old: Option<&Arc<Listing>>,
    generation: u64,
) -> Result<Arc<Listing>, RepoError> {
    let mut ids = repo.snapshot_ids()?;
    ids.sort();
    let protected = repo.protected()?;
    if let Some(old) = old {
        let mut had: Vec<SnapshotId> = old.snapshots.iter().map(|(id, _)| *id).collect();
        had.extend(old.damaged.iter().map(|(id, _)| *id));
        had.sort();
        if had == ids && old.protected == protected && old.built.elapsed() < WINDOWS_FRESH_FOR {
            *old.checked.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
            old.generation.store(generation, Ordering::Release);
            return Ok(old.clone());
        }
    }
    let known: HashMap<SnapshotId, &Snapshot> = old
        .map(|o| o.snapshots.iter().map(|(id, s)| (*id, s)).collect())
        .unwrap_or_default();
    let mut snapshots = Vec::with_capacity(ids.len());
    let mut damaged = Vec::new();
    for id in ids {
        if let Some(s) = known.get(&id) {
            snapshots.push((id, (*s).clone()));
            continue;
        }
        match repo.read_snapshot(&id)? {
            Some(Ok(s)) => snapshots.push((id, s)),
            Some(Err(why)) => damaged.push((id, why)),
            None => {}
        }
    }
    snapshots.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    let view = archive_view(&repo.wal(), &snapshots)?;
    let json = match crate::cli::show::snapshots_json(&snapshots, &protected, &view) {
        serde_json::Value::Array(values) => values.iter().map(|v| v.to_string()).collect(),
        _ => unreachable!("snapshots_json gives an array"),
    };
    Ok(Arc::new(Listing {
        built: Instant::now(),
        checked: Mutex::new(Instant::now()),
        generation: AtomicU64::new(generation),
        snapshots,
        json,
        damaged,
        protected,
        view,
    }))
}
