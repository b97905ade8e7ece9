//! `rewindb serve`: the repository and the sources of a `run` config over
//! HTTP. A JSON API under `/api/v1` (`docs/api.md`), Prometheus metrics at
//! `/metrics`, and the web console at `/` (files embedded in the binary).
//!
//! Layout: [`settings`] reads the `[serve]` section, [`auth`] checks tokens,
//! `catalog` keeps the snapshot listing the read endpoints answer from,
//! `jobs` runs backups, checks and restores one at a time, `api` (reads),
//! `actions` and `import` (changes) are the handlers, `download` streams a
//! verified file, `metrics` renders `/metrics`, `console` serves the
//! console's files.
//! Repository work is blocking; it runs on tokio's blocking threads or the
//! jobs thread, never on the threads that answer requests.

mod actions;
mod api;
pub mod auth;
mod catalog;
mod console;
mod download;
mod error;
mod import;
mod jobs;
mod metrics;
pub mod settings;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::routing::{get, post};

use crate::commands::Operation;
use crate::config::Loaded;
use crate::crypto::password::Password;
use crate::error::{Error, RepoError, Result};
use crate::repo::audit::AuditEntry;
use crate::repo::{OpenOptions, PasswordSource, Repository};
use auth::Scope;
use error::{ApiError, ApiResult};

/// Where the server's repository is and how to open it.
pub struct ServeOptions {
    pub config: Loaded,
    pub repository: PathBuf,
    pub cache_dir: Option<PathBuf>,
    pub lock_wait: Duration,
}

/// What every handler shares.
pub struct App {
    cfg: Loaded,
    repository: PathBuf,
    cache_dir: Option<PathBuf>,
    lock_wait: Duration,
    /// An encrypted repository's password, read once at start.
    password: Option<Password>,
    /// Opened with no lock: snapshots, status, the audit log, WAL listings.
    listing: Repository,
    catalog: catalog::Catalog,
    jobs: jobs::Jobs,
    throttle: auth::Throttle,
    /// One permit per download under way.
    downloads: Arc<tokio::sync::Semaphore>,
}

impl App {
    /// Opens the repository again with the lock `op` takes, as the CLI's
    /// command for it would, waiting up to `--lock-wait` for it (jobs).
    fn open(&self, op: Operation) -> Result<Repository, RepoError> {
        self.open_waiting(op, self.lock_wait)
    }

    /// As [`open`](Self::open) for a request answered at once: a lock
    /// held elsewhere is a 409 `busy` now, not a blocking thread held for
    /// the lock wait.
    fn open_now(&self, op: Operation) -> Result<Repository, RepoError> {
        self.open_waiting(op, Duration::ZERO)
    }

    fn open_waiting(&self, op: Operation, lock_wait: Duration) -> Result<Repository, RepoError> {
        Repository::open_cached_with(
            &self.repository,
            self.cache_dir.as_deref(),
            OpenOptions {
                lock: op.lock(),
                lock_wait,
            },
            self.password_source(),
        )
    }

    fn password_source(&self) -> PasswordSource<'_> {
        match &self.password {
            Some(p) => PasswordSource::Given(p),
            None => PasswordSource::Environment,
        }
    }

    fn source(&self, name: &str) -> ApiResult<&crate::config::Source> {
        self.cfg
            .sources
            .iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.cfg.sources.iter().map(|s| s.name()).collect();
                ApiError::not_found(format!(
                    "no source named {name:?} in the config; it has {}",
                    names.join(", ")
                ))
            })
    }

    /// `status --config`'s report of the configured sources, from the
    /// current listing (each source judged by its own `max_age`).
    fn status(&self) -> Result<crate::commands::status::StatusReport> {
        let listing = self.catalog.get(&self.listing)?;
        self.status_of(&listing)
    }

    fn status_of(
        &self,
        listing: &catalog::Listing,
    ) -> Result<crate::commands::status::StatusReport> {
        crate::commands::status::status_of(
            &self.listing,
            &listing.snapshots,
            listing.damaged.len(),
            &listing.view,
            &self.cfg.sources,
            None,
            jiff::Timestamp::now(),
        )
    }

    /// Appends to the audit log; a failure to do so is logged, not fatal
    /// (the operation itself is done by then). Blocking (an fsync): call
    /// it from a blocking thread, or use [`audit_later`](Self::audit_later).
    fn audit(&self, entry: AuditEntry) {
        if let Err(e) = self.listing.append_audit(&entry) {
            tracing::warn!(
                "could not write the audit log entry for {}: {e}",
                entry.action
            );
        }
    }

    /// [`audit`](Self::audit) from an async handler: on a blocking thread,
    /// done before the answer goes out.
    async fn audit_later(self: &Arc<Self>, entry: AuditEntry) {
        let app = self.clone();
        let _ = tokio::task::spawn_blocking(move || app.audit(entry)).await;
    }
}

/// Who is calling: a token the config knows, from an address.
pub struct Caller {
    pub name: String,
    pub scopes: Vec<Scope>,
    pub addr: SocketAddr,
}

impl Caller {
    /// 403 unless the token has `scope`.
    fn require(&self, scope: Scope) -> ApiResult<()> {
        match self.scopes.contains(&scope) {
            true => Ok(()),
            false => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "token {:?} lacks the {scope} scope this needs; make one that has it with \
                     `rewindb serve new-token --scopes {scope}`",
                    self.name
                ),
            )),
        }
    }

    /// An audit entry for this caller.
    fn entry(&self, action: &str, target: Option<String>) -> AuditEntry {
        AuditEntry {
            time: jiff::Timestamp::now(),
            who: self.name.clone(),
            from: self.addr.to_string(),
            action: action.to_string(),
            target,
            ok: true,
            detail: None,
        }
    }
}

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> ApiResult<Caller> {
        let addr = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
            .unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0));
        let unauthorized = |message: &str| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                message.to_string(),
            )
        };
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(unauthorized(
                "no token: send the header `Authorization: Bearer TOKEN`",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        match auth::find(&app.cfg.serve.tokens, token) {
            Some(t) => {
                app.throttle.succeeded(addr.ip());
                Ok(Caller {
                    name: t.name.clone(),
                    scopes: t.scopes.clone(),
                    addr,
                })
            }
            None => {
                // Only the failures wait: a good token from the same
                // address (another client behind one proxy) does not.
                let wait = app.throttle.failed(addr.ip());
                tracing::info!("{addr}: a request with an unknown token");
                tokio::time::sleep(wait).await;
                Err(unauthorized(
                    "the token is not one this server knows (its blake3 is in no \
                     [[serve.token]] of the config)",
                ))
            }
        }
    }
}

fn router(app: Arc<App>) -> Router {
    let api = Router::new()
        .route("/whoami", get(api::whoami))
        .route("/snapshots", get(api::snapshots))
        .route(
            "/snapshots/{id}",
            get(api::snapshot).delete(actions::forget_one),
        )
        .route("/snapshots/{id}/protect", post(actions::protect))
        .route("/snapshots/{id}/download", get(download::download))
        .route("/snapshots/{id}/restore", post(actions::restore))
        .route("/status", get(api::status))
        .route("/stats", get(api::stats))
        .route("/sources/{name}/backup", post(actions::backup))
        .route("/jobs", get(api::jobs))
        .route("/jobs/{id}", get(api::job))
        .route("/check", post(actions::check))
        .route("/import", post(import::import))
        .route("/forget", post(actions::forget))
        .route("/audit", get(api::audit))
        // JSON bodies; an import's body is streamed and limited on its own.
        .layer(axum::extract::DefaultBodyLimit::max(actions::MAX_JSON_BODY));
    Router::new()
        .nest("/api/v1", api)
        .route("/metrics", get(metrics::metrics))
        .merge(console::routes())
        .fallback(|| async { ApiError::not_found("no such endpoint; see docs/api.md") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method; see docs/api.md",
            )
        })
        // Each request in the log (`-v`), and a handler that panics is a
        // JSON 500, not a dropped connection.
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(ApiError::internal(
                "the server hit a bug answering this request; see its log",
            ))
        }))
        .with_state(app)
}

/// Runs the server until SIGINT or SIGTERM. Prints `listening on URL` on
/// stdout once it accepts connections.
pub fn serve(opts: ServeOptions) -> Result<()> {
    let cfg = &opts.config.serve;
    if cfg.tokens.is_empty() {
        return Err(Error::Usage(
            "the config has no [[serve.token]]: nobody could call the API. Make one with \
             `rewindb serve new-token --name NAME --scopes read,backup,restore,admin` and \
             paste its lines into the config"
                .into(),
        ));
    }
    let password = crate::crypto::password::from_environment().map_err(RepoError::Password)?;
    let listing = Repository::open_cached_with(
        &opts.repository,
        opts.cache_dir.as_deref(),
        OpenOptions {
            lock: Operation::List.lock(),
            lock_wait: Duration::ZERO,
        },
        match &password {
            Some(p) => PasswordSource::Given(p),
            None => PasswordSource::Environment,
        },
    )?;
    if listing.crypto().is_encrypted() && password.is_none() {
        return Err(Error::Usage(format!(
            "repository {} is encrypted: start serve with REWINDB_PASSWORD_FILE (or \
             REWINDB_PASSWORD_COMMAND) set, so that its jobs can open it",
            listing.location()
        )));
    }
    let listener = std::net::TcpListener::bind(cfg.listen).map_err(crate::error::io_err(
        format!("listening on {} (serve.listen)", cfg.listen),
    ))?;
    let bound = listener
        .local_addr()
        .map_err(crate::error::io_err("reading the listening address"))?;
    if !bound.ip().is_loopback() {
        tracing::warn!("serving on {bound}, reachable from other machines (serve.listen)");
    }
    let tls = cfg.tls.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Repository work waits for these; a burst of requests must not
        // start hundreds of threads (and their memory).
        .max_blocking_threads(16)
        .thread_name("rewindb-serve")
        .build()
        .map_err(crate::error::io_err("starting the server's runtime"))?;
    let app = rt.block_on(async {
        Arc::new(App {
            catalog: catalog::Catalog::default(),
            jobs: jobs::Jobs::start(Box::new(|job| {
                tracing::info!("job {} ({:?}) finished: {:?}", job.id, job.kind, job.state)
            })),
            throttle: auth::Throttle::default(),
            downloads: Arc::new(tokio::sync::Semaphore::new(download::MAX_DOWNLOADS)),
            cfg: opts.config.clone(),
            repository: opts.repository.clone(),
            cache_dir: opts.cache_dir.clone(),
            lock_wait: opts.lock_wait,
            password,
            listing,
        })
    });
    rt.block_on(async move {
        listener
            .set_nonblocking(true)
            .map_err(crate::error::io_err("setting up the listener"))?;
        let handle = axum_server::Handle::new();
        let stop = handle.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            stop.graceful_shutdown(Some(Duration::from_secs(10)));
        });
        tokio::spawn(metrics::watch_staleness(app.clone()));
        let service = router(app).into_make_service_with_connect_info::<SocketAddr>();
        let io = crate::error::io_err(format!("serving on {bound}"));
        match tls {
            Some((cert, key)) => {
                let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&cert, &key)
                    .await
                    .map_err(crate::error::io_err(format!(
                        "reading TLS certificate {} and key {}",
                        cert.display(),
                        key.display()
                    )))?;
                println!("listening on https://{bound}");
                axum_server::from_tcp_rustls(listener, config)
                    .map_err(crate::error::io_err("setting up TLS"))?
                    .handle(handle)
                    .serve(service)
                    .await
                    .map_err(io)
            }
            None => {
                println!("listening on http://{bound}");
                axum_server::from_tcp(listener)
                    .map_err(crate::error::io_err("setting up the listener"))?
                    .handle(handle)
                    .serve(service)
                    .await
                    .map_err(io)
            }
        }
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM can be caught");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping: finishing the requests under way");
}
