//! Locks in a bucket: lease objects (`docs/format.md`, "Lock"),
//! `locks/<mode>-<id>`, created create-only, rewritten every [`REFRESH`]
//! while held, deleted on release, and dead once the bucket's own clock says
//! they are older than [`lease_ttl`]. A killed holder therefore blocks
//! others for at most that long.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::{Inner, create, io_error};
use crate::error::RepoError;
use crate::repo::lock::LockMode;
use crate::repo::storage::Lease;

/// How often a held lease is rewritten.
const REFRESH: Duration = Duration::from_secs(30);

/// How long a lease lives without a refresh (`REWINDB_LEASE_SECS` shortens it
/// in tests; it must stay well above [`REFRESH`] in use).
pub fn lease_ttl() -> Duration {
    let secs = std::env::var("REWINDB_LEASE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    Duration::from_secs(secs)
}

/// A held lease: refreshed by a thread until dropped, then deleted.
struct HeldLease {
    inner: Arc<Inner>,
    name: String,
    stop: Arc<AtomicBool>,
    refresher: Option<std::thread::JoinHandle<()>>,
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        let path = self.inner.path(&self.name);
        if let Err(e) = self.inner.block(self.inner.store.delete(&path)) {
            tracing::warn!(
                "could not remove lease {}: {e} (it expires by itself)",
                self.name
            );
        }
    }
}

fn mode_tag(mode: LockMode) -> &'static str {
    match mode {
        LockMode::Exclusive => "x",
        // Each machine's backups write only their own cache and create-only
        // objects: a shared lease (the cache has its own local lock).
        LockMode::Append | LockMode::Shared => "s",
    }
}

/// Takes a lease: writes its own, then looks at the others (format.md, "Lock").
pub(super) fn acquire_lease(
    inner: &Arc<Inner>,
    mode: LockMode,
    wait: Duration,
) -> Result<Lease, RepoError> {
    let ttl = lease_ttl();
    let io_err = |e: io::Error| RepoError::Io {
        context: format!("taking the lock of {}", inner.url),
        source: e,
    };
    let start = Instant::now();
    let mut attempt = 0u32;
    loop {
        let id = blake3::hash(
            format!(
                "{}|{}|{attempt}|{:?}",
                std::process::id(),
                jiff::Timestamp::now(),
                std::thread::current().id()
            )
            .as_bytes(),
        )
        .to_hex()[..16]
            .to_string();
        let name = format!("locks/{}-{id}", mode_tag(mode));
        let body = serde_json::json!({
            "mode": mode_tag(mode),
            "pid": std::process::id(),
            "created": jiff::Timestamp::now(),
        });
        let path = inner.path(&name);
        let payload = bytes::Bytes::from(serde_json::to_vec(&body).expect("serialises"));
        inner.block(create(inner, &path, payload)).map_err(io_err)?;
        let conflict = inner.block(async {
            let mine = inner.store.head(&path).await.map_err(io_error)?;
            let now = mine.last_modified;
            let locks = inner.path("locks");
            let mut stream = inner.store.list(Some(&locks));
            let mut conflict = false;
            while let Some(meta) = stream.next().await {
                let meta = meta.map_err(io_error)?;
                if meta.location == path {
                    continue;
                }
                let age = (now - meta.last_modified).to_std().unwrap_or_default();
                if age > ttl {
                    // Its holder died or was cut off: whoever meets it removes it.
                    let _ = inner.store.delete(&meta.location).await;
                    continue;
                }
                let theirs = meta.location.filename().unwrap_or_default();
                if mode == LockMode::Exclusive || theirs.starts_with("x-") {
                    conflict = true;
                }
            }
            Ok::<bool, io::Error>(conflict)
        });
        let conflict = match conflict {
            Ok(c) => c,
            Err(e) => {
                let _ = inner.block(inner.store.delete(&path));
                return Err(io_err(e));
            }
        };
        if !conflict {
            let stop = Arc::new(AtomicBool::new(false));
            let refresher = {
                let (inner, stop, name) = (inner.clone(), stop.clone(), name.clone());
                std::thread::spawn(move || refresh(&inner, &name, &stop))
            };
            return Ok(Lease::new(HeldLease {
                inner: inner.clone(),
                name,
                stop,
                refresher: Some(refresher),
            }));
        }
        let _ = inner.block(inner.store.delete(&path));
        if start.elapsed() >= wait {
            return Err(RepoError::Locked {
                path: inner.url.clone().into(),
                waited_secs: wait.as_secs(),
            });
        }
        if attempt == 2 {
            tracing::info!(
                "waiting up to {}s for another rewindb process to release {}",
                wait.as_secs(),
                inner.url
            );
        }
        attempt += 1;
        // Two claimants that saw each other both step back, for different times.
        let jitter = u64::from(blake3::hash(id.as_bytes()).as_bytes()[0]);
        let backoff = Duration::from_millis((100 << attempt.min(4)) + jitter * 2);
        std::thread::sleep(
            backoff
                .min(wait.saturating_sub(start.elapsed()))
                .max(Duration::from_millis(10)),
        );
    }
}

/// Rewrites the lease every [`REFRESH`] until `stop`.
fn refresh(inner: &Inner, name: &str, stop: &AtomicBool) {
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        if last.elapsed() < REFRESH.min(lease_ttl() / 4) {
            continue;
        }
        last = Instant::now();
        let body = serde_json::json!({ "refreshed": jiff::Timestamp::now() });
        let payload = PutPayload::from(serde_json::to_vec(&body).expect("serialises"));
        if let Err(e) = inner.block(inner.store.put(&inner.path(name), payload)) {
            tracing::warn!("could not refresh lease {name}: {e}");
        }
    }
}
