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
//! Reads go through one bounded set of fetched ranges ([`reads`]); locks
//! are lease objects ([`lease`]).

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ObjectStore, ObjectStoreExt, PutMode, PutOptions, RetryConfig};

mod lease;
mod reads;

use lease::acquire_lease;
pub use lease::lease_ttl;
use reads::{S3Object, Windows};

use super::{Lease, Object, ObjectInfo, Storage};
use crate::error::RepoError;
use crate::repo::lock::LockMode;

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
