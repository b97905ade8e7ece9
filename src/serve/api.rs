//! The read endpoints: who am I, snapshots, status, stats, jobs, the audit
//! log. All need the `read` scope (`whoami`: any valid token).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Scope;
use super::error::{ApiError, ApiResult};
use super::{App, Caller};
use crate::commands::Operation;

/// Runs blocking repository work off the threads that answer requests.
pub async fn blocking<T: Send + 'static>(
    app: &Arc<App>,
    f: impl FnOnce(&App) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let app = app.clone();
    tokio::task::spawn_blocking(move || f(&app))
        .await
        .map_err(|e| ApiError::internal(format!("the request's work failed: {e}")))?
}

/// The snapshot listing: taken as it is when current, else refreshed on a
/// blocking thread.
async fn listing(app: &Arc<App>) -> ApiResult<Arc<super::catalog::Listing>> {
    match app.catalog.fresh() {
        Some(l) => Ok(l),
        None => blocking(app, |app| Ok(app.catalog.get(&app.listing)?)).await,
    }
}

pub async fn whoami(caller: Caller) -> Json<Value> {
    Json(json!({"name": caller.name, "scopes": caller.scopes}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotFilter {
    source: Option<String>,
    label: Option<String>,
    since: Option<String>,
    /// At most this many, the newest (default 100).
    limit: Option<usize>,
    /// Only snapshots older than this one (paging back).
    before: Option<String>,
}

/// The default page of `GET /snapshots`: the newest 100.
const DEFAULT_LIMIT: usize = 100;

pub async fn snapshots(
    caller: Caller,
    State(app): State<Arc<App>>,
    query: Result<Query<SnapshotFilter>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    caller.require(Scope::Read)?;
    let Query(f) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let since = f
        .since
        .as_deref()
        .map(|t| crate::time::parse_time(t, &jiff::tz::TimeZone::UTC))
        .transpose()
        .map_err(ApiError::bad_request)?;
    let listing = listing(&app).await?;
    let before = match &f.before {
        Some(spec) => Some(
            listing
                .snapshots
                .iter()
                .position(|(id, _)| id.to_hex().starts_with(&spec.to_ascii_lowercase()))
                .ok_or_else(|| ApiError::not_found(format!("no snapshot {spec:?} (before=)")))?,
        ),
        None => None,
    };
    let picked: Vec<usize> = (0..before.unwrap_or(listing.snapshots.len()))
        .filter(|&i| {
            let s = &listing.snapshots[i].1;
            f.source
                .as_deref()
                .is_none_or(|src| crate::selection::is_of_source(s, src))
                && f.label.as_ref().is_none_or(|l| s.label.as_ref() == Some(l))
                && since.is_none_or(|t| s.time >= t)
        })
        .collect();
    let total = picked.len();
    let limit = f.limit.unwrap_or(DEFAULT_LIMIT);
    let page = &picked[total.saturating_sub(limit)..];
    let mut body = String::with_capacity(
        page.iter()
            .map(|&i| listing.json[i].len() + 1)
            .sum::<usize>()
            + 2,
    );
    body.push('[');
    for (n, &i) in page.iter().enumerate() {
        if n > 0 {
            body.push(',');
        }
        body.push_str(&listing.json[i]);
    }
    body.push(']');
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (
                header::HeaderName::from_static("x-total-count"),
                total.to_string(),
            ),
        ],
        body,
    )
        .into_response())
}

pub async fn snapshot(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller.require(Scope::Read)?;
    let listing = listing(&app).await?;
    let i = find(&listing.snapshots, &id)?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        listing.json[i].clone(),
    )
        .into_response())
}

/// The position of the snapshot `spec` names (a unique id prefix of at
/// least 4 hex digits) in `list`.
pub fn find(
    list: &[(crate::id::SnapshotId, crate::repo::snapshot::Snapshot)],
    spec: &str,
) -> ApiResult<usize> {
    let spec_lc = spec.to_ascii_lowercase();
    if spec_lc.len() < 4 || !spec_lc.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(format!(
            "{spec:?} is not a snapshot id (at least 4 hex digits)"
        )));
    }
    let mut found = list
        .iter()
        .enumerate()
        .filter(|(_, (id, _))| id.to_hex().starts_with(&spec_lc));
    match (found.next(), found.next()) {
        (Some((i, _)), None) => Ok(i),
        (Some(_), Some(_)) => Err(ApiError::bad_request(format!(
            "snapshot prefix {spec:?} matches several snapshots; give more digits"
        ))),
        (None, _) => Err(ApiError::not_found(format!("no snapshot matches {spec:?}"))),
    }
}

pub async fn status(caller: Caller, State(app): State<Arc<App>>) -> ApiResult<Json<Value>> {
    caller.require(Scope::Read)?;
    blocking(&app, |app| {
        let report = app.status()?;
        Ok(Json(serde_json::to_value(report).expect("serialises")))
    })
    .await
}

pub async fn stats(caller: Caller, State(app): State<Arc<App>>) -> ApiResult<Json<Value>> {
    caller.require(Scope::Read)?;
    blocking(&app, |app| {
        let repo = app.open_now(Operation::Read)?;
        let s = crate::commands::maintenance::stats(&repo)?;
        Ok(Json(serde_json::to_value(s).expect("serialises")))
    })
    .await
}

pub async fn jobs(caller: Caller, State(app): State<Arc<App>>) -> ApiResult<Json<Value>> {
    caller.require(Scope::Read)?;
    Ok(Json(json!(app.jobs.all())))
}

pub async fn job(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Scope::Read)?;
    let n: u64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{id:?} is not a job id (a number)")))?;
    let job = app.jobs.get(n).ok_or_else(|| {
        ApiError::not_found(format!("no job {n} (jobs are kept while the server runs)"))
    })?;
    Ok(Json(json!(job)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    limit: Option<usize>,
}

pub async fn audit(
    caller: Caller,
    State(app): State<Arc<App>>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    caller.require(Scope::Read)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    blocking(&app, move |app| {
        let (mut entries, damaged) = app.listing.audit_log()?;
        for d in &damaged {
            tracing::warn!("audit log entry unreadable: {d}");
        }
        entries.reverse();
        entries.truncate(q.limit.unwrap_or(100));
        Ok(Json(json!(entries)))
    })
    .await
}
