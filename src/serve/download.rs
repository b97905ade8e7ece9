//! `GET /snapshots/{id}/download`: one file of a snapshot, streamed as it is
//! read. Every chunk is checked against its id as it is read, and the whole
//! file against the blake3 recorded at backup before its last chunk is
//! sent: a damaged chunk or a wrong file ends the transfer early, so a
//! client never receives a complete body with wrong bytes.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use super::auth::Scope;
use super::error::{ApiError, ApiResult};
use super::{App, Caller};
use crate::commands::Operation;
use crate::repo::reader::BlobReader;
use crate::repo::snapshot::FileEntry;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadQuery {
    file: Option<String>,
}

/// Chunks in flight between the reading thread and the connection.
const QUEUE: usize = 8;
/// Downloads at once: each holds the repository's shared lock (which a
/// backup or `run` waits for) and a thread.
pub const MAX_DOWNLOADS: usize = 4;
/// A client that reads nothing for this long is given up on, so that it
/// cannot hold the shared lock for as long as it likes.
const STALLED: std::time::Duration = std::time::Duration::from_secs(60);

pub async fn download(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    query: Result<Query<DownloadQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    caller.require(Scope::Restore)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (ready_tx, ready_rx) = oneshot::channel::<ApiResult<FileEntry>>();
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(QUEUE);
    let permit = app.downloads.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "busy",
            format!("{MAX_DOWNLOADS} downloads are under way; try again when one has ended"),
        )
    })?;
    let target = match &q.file {
        Some(f) => format!("{id} {f}"),
        None => id.clone(),
    };
    let entry = caller.entry("download", Some(target));
    let worker = app.clone();
    let handle = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("rewindb-download".into())
        .spawn(move || {
            let _permit = permit;
            let opened = (|| {
                let repo = worker.open_now(Operation::Read)?;
                let list = repo.snapshots()?;
                let (_, snap) = list.find(&id)?;
                let file = pick(snap, q.file.as_deref())?;
                Ok::<_, ApiError>((repo, file))
            })();
            let (repo, file) = match opened {
                Ok(v) => v,
                Err(e) => {
                    worker.audit(entry.finished(Err::<Option<String>, _>(&e.message)));
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(file.clone()));
            let put = |item: Result<Bytes, std::io::Error>| {
                handle
                    .block_on(tx.send_timeout(item, STALLED))
                    .map_err(|e| match e {
                        mpsc::error::SendTimeoutError::Timeout(_) => {
                            format!("the client read nothing for {} s", STALLED.as_secs())
                        }
                        mpsc::error::SendTimeoutError::Closed(_) => {
                            "the client went away".to_string()
                        }
                    })
            };
            let result = send(&repo, &file, &put);
            if let Err(e) = &result {
                tracing::warn!("download of {} stopped: {e}", file.name);
                let _ = put(Err(std::io::Error::other(e.clone())));
            }
            worker.audit(entry.finished(result.map(|()| Some(file.blake3.clone()))));
        })
        .map_err(|e| ApiError::internal(format!("starting the download: {e}")))?;
    let file = ready_rx
        .await
        .map_err(|_| ApiError::internal("the download's thread stopped"))??;
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let safe_name: String = file
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, file.size.to_string()),
            (header::ETAG, format!("\"{}\"", file.blake3)),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{safe_name}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The file of `snap` to send: the one named, or its only one.
fn pick(snap: &crate::repo::snapshot::Snapshot, name: Option<&str>) -> ApiResult<FileEntry> {
    if snap.postgres.is_some() {
        return Err(ApiError::bad_request(
            "a PostgreSQL base backup is a directory: restore it with `rewindb restore --to DIR`",
        ));
    }
    let names = || {
        snap.files
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match name {
        Some(n) => snap
            .files
            .iter()
            .find(|f| f.name == n)
            .cloned()
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "the snapshot has no file {n:?}; it holds {}",
                    names()
                ))
            }),
        None if snap.files.len() == 1 => Ok(snap.files[0].clone()),
        None => Err(ApiError::bad_request(format!(
            "the snapshot holds several files: name one with ?file= ({})",
            names()
        ))),
    }
}

/// Reads the file's chunks in order and sends them, the last one only once
/// the whole file's size and blake3 match the snapshot's.
fn send(
    repo: &crate::repo::Repository,
    file: &FileEntry,
    put: &dyn Fn(Result<Bytes, std::io::Error>) -> Result<(), String>,
) -> Result<(), String> {
    let mut reader = BlobReader::new(repo).map_err(|e| e.to_string())?;
    let ids = reader.manifest(file).map_err(|e| e.to_string())?;
    let mut hasher = blake3::Hasher::new();
    let mut size = 0u64;
    let mut held: Option<Bytes> = None;
    for id in &ids {
        let data = reader.read(id).map_err(|e| e.to_string())?;
        hasher.update(&data);
        size += data.len() as u64;
        if let Some(previous) = held.replace(Bytes::from(data)) {
            put(Ok(previous))?;
        }
    }
    let hash = hasher.finalize().to_hex();
    if size != file.size || hash.as_str() != file.blake3 {
        return Err(format!(
            "{} does not match what was backed up ({size} bytes, blake3 {hash}; expected {} \
             bytes, blake3 {}): the transfer was stopped before its end",
            file.name, file.size, file.blake3
        ));
    }
    if let Some(last) = held {
        put(Ok(last))?;
    }
    Ok(())
}
