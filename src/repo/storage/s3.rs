//! A repository in an S3-compatible bucket: `s3://BUCKET/PREFIX`, each object
//! at `PREFIX/<name>` (AWS, Backblaze B2, Cloudflare R2, MinIO, Ceph,
//! SeaweedFS...).
//!
//! The client is `object_store` (see `docs/ARCHITECTURE.md`, "Dependencies"):
//! credentials, region and endpoint come from the standard `AWS_*` variables;
//! a create-only put is a PUT with `If-None-Match: *`; requests that time out,
//! are reset or answered 5xx / `SlowDown` are retried with backoff within a
//! bounded total time. Calls are made on a small runtime this backend owns,
//! so the rest of rewindb stays synchronous.
//!
//! Locks are lease objects (`docs/format.md`, "Lock"): `locks/<mode>-<id>`,
//! created create-only, rewritten every [`REFRESH`] while held, deleted on
//! release, and dead once the bucket's own clock says they are older than
//! [`lease_ttl`]. A killed holder therefore blocks others for at most that long.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};

use super::{Lease, Object, ObjectInfo, Storage};
use crate::error::RepoError;
use crate::repo::lock::LockMode;

/// How often a held lease is rewritten.
const REFRESH: Duration = Duration::from_secs(30);
/// Bytes fetched at once when a pack is read in pieces: a restore reads a
/// pack's frames in order, so one request serves many of them.
const READ_WINDOW: u64 = 4 << 20;

/// How long a lease lives without a refresh (`REWINDB_LEASE_SECS` shortens it
/// in tests; it must stay well above [`REFRESH`] in use).
pub fn lease_ttl() -> Duration {
    let secs = std::env::var("REWINDB_LEASE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    Duration::from_secs(secs)
}

/// How many packs are uploaded at once (`REWINDB_S3_UPLOADS`, 1..=16,
/// default 2): a backup holds at most this many packs plus the one it fills.
fn uploads() -> usize {
    std::env::var("REWINDB_S3_UPLOADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(2, |n: usize| n.clamp(1, 16))
}

struct Inner {
    store: AmazonS3,
    /// `""` or `"prefix/"`.
    prefix: String,
    url: String,
    bucket: String,
    /// `AWS_ENDPOINT_URL`, or AWS.
    endpoint: String,
    windows: Arc<Windows>,
    rt: tokio::runtime::Runtime,
}

impl Inner {
    fn block<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    fn path(&self, name: &str) -> ObjectPath {
        ObjectPath::from(format!("{}{name}", self.prefix))
    }

    /// The object name of a listed path (its prefix taken off).
    fn name_of<'a>(&self, path: &'a ObjectPath) -> Option<&'a str> {
        path.as_ref().strip_prefix(self.prefix.as_str())
    }
}

/// A bucket (and prefix) holding a repository.
#[derive(Clone)]
pub struct S3 {
    inner: Arc<Inner>,
}

/// What `s3://BUCKET/PREFIX` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    pub prefix: String,
}

impl S3Url {
    /// Parses `s3://BUCKET` or `s3://BUCKET/PREFIX`; `None` for anything else.
    pub fn parse(url: &str) -> Option<Result<S3Url, String>> {
        let rest = url.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/');
        if bucket.is_empty() {
            return Some(Err(format!(
                "{url}: no bucket (expected s3://BUCKET/PREFIX)"
            )));
        }
        if prefix.split('/').any(|p| p == "." || p == "..") {
            return Some(Err(format!("{url}: the prefix may not contain . or ..")));
        }
        Some(Ok(S3Url {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        }))
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.prefix.is_empty() {
            true => write!(f, "s3://{}", self.bucket),
            false => write!(f, "s3://{}/{}", self.bucket, self.prefix),
        }
    }
}

fn io_error(e: object_store::Error) -> io::Error {
    match e {
        object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, e),
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            io::Error::new(io::ErrorKind::AlreadyExists, e)
        }
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => {
            io::Error::new(io::ErrorKind::PermissionDenied, e)
        }
        e => io::Error::other(e),
    }
}

impl S3 {
    /// A client for `url`, configured from the `AWS_*` environment
    /// (`AWS_ENDPOINT_URL` for S3-compatible servers, which are addressed
    /// path-style; an `http://` endpoint is allowed because it is written out).
    pub fn new(url: &S3Url) -> Result<S3, RepoError> {
        let bad = |reason: String| RepoError::NotFound {
            path: url.to_string().into(),
            reason,
        };
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&url.bucket);
        let endpoint = std::env::var("AWS_ENDPOINT_URL")
            .or_else(|_| std::env::var("AWS_ENDPOINT_URL_S3"))
            .ok();
        if let Some(endpoint) = &endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            builder = builder.with_region("us-east-1");
        }
        // Timeouts, resets, 5xx and SlowDown are retried with backoff, for
        // at most this long in all (`REWINDB_S3_RETRY_SECS`, default 120).
        // The budget bounds the retries, not their count: ten quick ones
        // would give up on a server that takes a few seconds to restart.
        let retry = RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 1000,
            retry_timeout: retry_budget(),
        };
        let store = builder
            .with_retry(retry)
            .build()
            .map_err(|e| bad(format!("cannot configure the S3 client: {e}")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| bad(format!("cannot start the I/O runtime: {e}")))?;
        let prefix = match url.prefix.is_empty() {
            true => String::new(),
            false => format!("{}/", url.prefix),
        };
        Ok(S3 {
            inner: Arc::new(Inner {
                store,
                prefix,
                url: url.to_string(),
                bucket: url.bucket.clone(),
                endpoint: endpoint.unwrap_or_else(|| "AWS".into()),
                windows: Arc::default(),
                rt,
            }),
        })
    }

    fn list_meta(&self, dir: &str) -> io::Result<Vec<object_store::ObjectMeta>> {
        let inner = &self.inner;
        let prefix = inner.path(dir.trim_end_matches('/'));
        let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
        inner.block(async {
            let mut out = Vec::new();
            let mut stream = inner.store.list(prefix.as_ref());
            while let Some(meta) = stream.next().await {
                out.push(meta.map_err(io_error)?);
            }
            Ok(out)
        })
    }

    fn put_mode(&self, name: &str, data: bytes::Bytes, mode: PutMode) -> io::Result<()> {
        let inner = &self.inner;
        match mode {
            PutMode::Create => inner.block(create(inner, &inner.path(name), data)),
            mode => {
                let opts = PutOptions {
                    mode,
                    ..PutOptions::default()
                };
                inner
                    .block(inner.store.put_opts(&inner.path(name), data.into(), opts))
                    .map(|_| ())
                    .map_err(io_error)
            }
        }
    }
}

/// Whether an error is the network's (the request may or may not have
/// reached the server), not an answer from it.
fn is_transport(e: &object_store::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<object_store::client::HttpError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// A create-only PUT (`If-None-Match: *`), retried when the connection
/// fails. object_store retries such a PUT only when it was not sent: a
/// reset or timeout after sending leaves it unknown whether the object was
/// stored. So retry here, and when the retry finds an object, it is ours
/// if it holds our bytes: success, not `AlreadyExists`.
async fn create(inner: &Inner, path: &ObjectPath, data: bytes::Bytes) -> io::Result<()> {
    let deadline = Instant::now() + retry_budget();
    let mut sent_before = false;
    let mut pause = Duration::from_millis(100);
    loop {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let err = match inner.store.put_opts(path, data.clone().into(), opts).await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let exists = matches!(
            err,
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }
        );
        if exists && sent_before {
            let got = inner.store.get(path).await.map_err(io_error)?;
            if got.bytes().await.map_err(io_error)? == data {
                return Ok(());
            }
        }
        if !is_transport(&err) || Instant::now() + pause > deadline {
            return Err(io_error(err));
        }
        tracing::info!("retrying the upload of {path} in {pause:?}: {err}");
        sent_before = true;
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// How long a request is retried in all (`REWINDB_S3_RETRY_SECS`, default 120).
fn retry_budget() -> Duration {
    let secs = std::env::var("REWINDB_S3_RETRY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    Duration::from_secs(secs)
}

/// An object read through the backend's [`Windows`].
struct S3Object {
    inner: Arc<Inner>,
    name: String,
    path: ObjectPath,
    len: u64,
}

impl Object for S3Object {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset + buf.len() as u64;
        if end > self.len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let (start, bytes) = self.inner.windows.read(self, offset, end)?;
        let from = (offset - start) as usize;
        buf.copy_from_slice(&bytes[from..from + buf.len()]);
        Ok(())
    }
}

/// The ranges of objects fetched lately, shared by every reader of this
/// backend (a restore's two reader threads take alternate batches of one
/// pack: each fetching for itself, both would download all of it).
///
/// A read that continues where the last fetch of its object ended fetches
/// ahead, twice as far each time up to [`READ_WINDOW`] (a restore reads a
/// pack's frames in order, so one request serves many of them); a read
/// elsewhere fetches just what it asks (a delta's base, a pack's table).
/// Once a stream reads whole windows, the next [`PREFETCH`] windows are
/// fetched in the background, so the reader rarely waits for the network.
/// A range being fetched is waited for, not fetched again. At most
/// [`MAX_BYTES`] are kept: memory stays bounded however many packs the
/// readers hold open.
#[derive(Default)]
struct Windows {
    state: Mutex<WindowState>,
    fetched: std::sync::Condvar,
}

#[derive(Default)]
struct WindowState {
    /// Most recently used last.
    windows: std::collections::VecDeque<Window>,
    /// Per object: where its fetches (done or under way) end, and how far
    /// the last one read ahead.
    streams: std::collections::HashMap<String, (u64, u64)>,
}

/// What the windows hold of a range.
enum Gathered {
    Ready(u64, bytes::Bytes),
    UnderWay,
    /// Nothing covers this offset (the first such).
    Missing(u64),
}

struct Window {
    name: String,
    start: u64,
    end: u64,
    /// `None` while it is being fetched; an error is the fetcher's to report.
    bytes: Option<bytes::Bytes>,
}

/// Bytes the windows hold at most (fetched, or being fetched).
const MAX_BYTES: u64 = 48 << 20;
/// Background fetches under way at most.
const MAX_PREFETCHES: usize = 6;
/// Windows fetched ahead of a stream that reads whole windows.
const PREFETCH: u64 = 2;
/// The least a read that continues the one before fetches ahead.
const MIN_AHEAD: u64 = 256 << 10;

impl Windows {
    /// The bytes of `object` covering `offset..end`, with where they start.
    fn read(
        self: &Arc<Self>,
        object: &S3Object,
        offset: u64,
        end: u64,
    ) -> io::Result<(u64, bytes::Bytes)> {
        let mut state = self.state.lock().expect("windows");
        loop {
            let missing = match Self::gather(&state, &object.name, offset, end) {
                Gathered::Ready(start, bytes) => {
                    self.prefetch(&mut state, object, offset);
                    return Ok((start, bytes));
                }
                // Being fetched (by another reader, or ahead): wait.
                Gathered::UnderWay => {
                    state = self.fetched.wait(state).expect("windows");
                    continue;
                }
                Gathered::Missing(at) => at,
            };
            let (from, to) = Self::plan(&mut state, object, missing, end);
            Self::push(&mut state, &object.name, from, to);
            self.prefetch(&mut state, object, offset);
            drop(state);
            let got = object
                .inner
                .block(object.inner.store.get_range(&object.path, from..to));
            let got = match got {
                // Shorter than its recorded size: the object was truncated.
                Ok(bytes) if (bytes.len() as u64) < to - from => {
                    Err(io::Error::from(io::ErrorKind::UnexpectedEof))
                }
                Ok(bytes) => Ok(bytes),
                Err(e) => Err(io_error(e)),
            };
            self.complete(&object.name, from, got.as_ref().ok().cloned());
            got?;
            state = self.state.lock().expect("windows");
        }
    }

    /// `offset..end` of `name` from the windows: one window's bytes when one
    /// covers it, else the pieces of adjacent windows joined (a frame that
    /// straddles two windows is not fetched again).
    fn gather(state: &WindowState, name: &str, offset: u64, end: u64) -> Gathered {
        let mut pieces: Vec<bytes::Bytes> = Vec::new();
        let mut at = offset;
        while at < end {
            let Some(w) =
                (state.windows.iter()).find(|w| w.name == name && w.start <= at && at < w.end)
            else {
                return Gathered::Missing(at);
            };
            let Some(bytes) = &w.bytes else {
                return Gathered::UnderWay;
            };
            let upto = end.min(w.end);
            if pieces.is_empty() && upto == end {
                return Gathered::Ready(w.start, bytes.clone());
            }
            pieces.push(bytes.slice((at - w.start) as usize..(upto - w.start) as usize));
            at = upto;
        }
        Gathered::Ready(offset, pieces.concat().into())
    }

    /// Adds a window that is about to be fetched, evicting the oldest
    /// fetched ones while the windows would hold more than [`MAX_BYTES`].
    fn push(state: &mut WindowState, name: &str, start: u64, end: u64) {
        let mut held: u64 = state.windows.iter().map(|w| w.end - w.start).sum();
        while held + (end - start) > MAX_BYTES {
            let Some(i) = state.windows.iter().position(|w| w.bytes.is_some()) else {
                break; // all under way: they are bounded by the prefetch budget
            };
            let w = state.windows.remove(i).expect("found");
            held -= w.end - w.start;
        }
        state.windows.push_back(Window {
            name: name.to_string(),
            start,
            end,
            bytes: None,
        });
    }

    /// Fills (or, on failure, drops: a waiting reader fetches it itself) the
    /// window of `name` at `start`, and wakes the readers waiting for it.
    fn complete(&self, name: &str, start: u64, bytes: Option<bytes::Bytes>) {
        let mut state = self.state.lock().expect("windows");
        let at = state
            .windows
            .iter()
            .position(|w| w.name == name && w.start == start && w.bytes.is_none());
        match (bytes, at) {
            (Some(bytes), Some(i)) => state.windows[i].bytes = Some(bytes),
            (None, Some(i)) => {
                state.windows.remove(i);
            }
            _ => {}
        }
        self.fetched.notify_all();
    }

    /// The range to fetch for a read of `offset..end` that no window covers.
    fn plan(state: &mut WindowState, object: &S3Object, offset: u64, end: u64) -> (u64, u64) {
        if state.streams.len() > 1024 {
            state.streams.clear();
        }
        let (last_end, ahead) = state.streams.get(&object.name).copied().unwrap_or((0, 0));
        // Continuing: at or just past where the last fetch ended.
        let continuing = last_end > 0
            && offset >= last_end.saturating_sub(READ_WINDOW * (PREFETCH + 1))
            && offset <= last_end + MIN_AHEAD;
        let ahead = match continuing {
            true => (ahead * 2).clamp(MIN_AHEAD, READ_WINDOW),
            false => 0,
        };
        // Up to the next window already there: nothing is fetched twice.
        let next = (state.windows.iter())
            .filter(|w| w.name == object.name && w.start > offset)
            .map(|w| w.start)
            .min()
            .unwrap_or(u64::MAX);
        let to = object.len.min(end.max((offset + ahead).min(next)));
        let last_end = match continuing {
            true => last_end.max(to),
            false => to,
        };
        state.streams.insert(object.name.clone(), (last_end, ahead));
        (offset, to)
    }

    /// For a stream reading whole windows, starts fetching the windows up to
    /// [`PREFETCH`] ahead of `offset` that are not there or under way.
    fn prefetch(self: &Arc<Self>, state: &mut WindowState, object: &S3Object, offset: u64) {
        let Some(&(mut at, ahead)) = state.streams.get(&object.name) else {
            return;
        };
        if ahead < READ_WINDOW {
            return;
        }
        let horizon = object.len.min(offset + READ_WINDOW * (PREFETCH + 1));
        let under_way = state.windows.iter().filter(|w| w.bytes.is_none()).count();
        let mut budget = MAX_PREFETCHES.saturating_sub(under_way);
        while at < horizon && budget > 0 {
            let mine = || state.windows.iter().filter(|w| w.name == object.name);
            if let Some(w) = mine().find(|w| w.start <= at && at < w.end) {
                at = w.end; // there, or under way
                continue;
            }
            let next = mine().filter(|w| w.start > at).map(|w| w.start).min();
            let to = object
                .len
                .min(at + READ_WINDOW)
                .min(next.unwrap_or(u64::MAX));
            Self::push(state, &object.name, at, to);
            let (windows, store, path, name) = (
                self.clone(),
                object.inner.store.clone(),
                object.path.clone(),
                object.name.clone(),
            );
            // The task holds the client and these windows, not the backend:
            // a runtime must not be dropped from one of its own tasks.
            object.inner.rt.spawn(async move {
                let got = store.get_range(&path, at..to).await.ok();
                let got = got.filter(|b| b.len() as u64 == to - at);
                windows.complete(&name, at, got);
            });
            at = to;
            budget -= 1;
        }
        state.streams.insert(object.name.clone(), (at, ahead));
    }
}

impl Storage for S3 {
    fn location(&self) -> String {
        self.inner.url.clone()
    }

    fn describe(&self, name: &str) -> String {
        format!("{}/{name}", self.inner.url)
    }

    fn put(&self, name: &str, data: &[u8]) -> io::Result<()> {
        self.put_mode(name, bytes::Bytes::copy_from_slice(data), PutMode::Create)
    }

    fn put_owned(&self, name: &str, data: Vec<u8>) -> io::Result<()> {
        self.put_mode(name, data.into(), PutMode::Create)
    }

    fn replace(&self, name: &str, data: &[u8]) -> io::Result<()> {
        self.put_mode(
            name,
            bytes::Bytes::copy_from_slice(data),
            PutMode::Overwrite,
        )
    }

    fn get(&self, name: &str) -> io::Result<Vec<u8>> {
        let inner = &self.inner;
        inner.block(async {
            let got = inner.store.get(&inner.path(name)).await.map_err(io_error)?;
            Ok(got.bytes().await.map_err(io_error)?.to_vec())
        })
    }

    fn open(&self, name: &str) -> io::Result<Box<dyn Object>> {
        let inner = &self.inner;
        let path = inner.path(name);
        let meta = inner.block(inner.store.head(&path)).map_err(io_error)?;
        Ok(Box::new(S3Object {
            inner: inner.clone(),
            name: name.to_string(),
            path,
            len: meta.size,
        }))
    }

    fn open_sized(&self, name: &str, len: u64) -> io::Result<Box<dyn Object>> {
        Ok(Box::new(S3Object {
            inner: self.inner.clone(),
            name: name.to_string(),
            path: self.inner.path(name),
            len,
        }))
    }

    fn get_range(&self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let inner = &self.inner;
        let range = offset..offset + len as u64;
        let bytes = inner
            .block(inner.store.get_range(&inner.path(name), range))
            .map_err(io_error)?;
        if bytes.len() != len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(bytes.to_vec())
    }

    fn stat(&self, name: &str) -> io::Result<Option<u64>> {
        let inner = &self.inner;
        match inner.block(inner.store.head(&inner.path(name))) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(io_error(e)),
        }
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<ObjectInfo>> {
        let dir = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        let mut out: Vec<ObjectInfo> = self
            .list_meta(dir)?
            .iter()
            .filter_map(|m| {
                let name = self.inner.name_of(&m.location)?;
                (name.starts_with(prefix) && !name.starts_with("locks/")).then(|| ObjectInfo {
                    name: name.to_string(),
                    size: m.size,
                })
            })
            .collect();
        out.sort();
        Ok(out)
    }

    fn groups(&self, prefix: &str) -> io::Result<Vec<String>> {
        let inner = &self.inner;
        let path = inner.path(prefix.trim_end_matches('/'));
        let listed = inner
            .block(inner.store.list_with_delimiter(Some(&path)))
            .map_err(io_error)?;
        let mut out: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        out.sort();
        Ok(out)
    }

    fn delete(&self, name: &str) -> io::Result<()> {
        let inner = &self.inner;
        match inner.block(inner.store.delete(&inner.path(name))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(io_error(e)),
        }
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn missing_container(&self) -> Option<String> {
        let inner = &self.inner;
        let prefix = inner.path("");
        let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
        // A listing is wrapped as a generic error: S3's own code tells.
        match inner.block(inner.store.list_with_delimiter(prefix.as_ref())) {
            Err(e) if e.to_string().contains("NoSuchBucket") => Some(format!(
                "bucket {:?} does not exist at {}; create it with your storage provider's \
                 tools (rewindb does not create buckets), or check the name",
                inner.bucket, inner.endpoint
            )),
            _ => None,
        }
    }

    fn parallel_uploads(&self) -> usize {
        uploads()
    }

    fn lock(&self, mode: LockMode, wait: Duration) -> Result<Lease, RepoError> {
        acquire_lease(&self.inner, mode, wait)
    }

    fn remove_abandoned(&self, _: Option<Duration>) -> io::Result<u64> {
        Ok(0) // a PUT is atomic: a killed upload leaves nothing visible
    }
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
fn acquire_lease(inner: &Arc<Inner>, mode: LockMode, wait: Duration) -> Result<Lease, RepoError> {
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
