//! `POST /import`: a SQLite database stored as a snapshot of a configured
//! source, or a plain-format pg_dump stored as a stream, each checked before
//! anything is stored; the body is streamed to a private temporary file and
//! limited to `[serve] max_upload`.

use std::path::Path as FsPath;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde_json::Value;

use super::actions::too_large;
use super::api::blocking;
use super::auth::Scope;
use super::error::{ApiError, ApiResult};
use super::{App, Caller};
use crate::commands::Operation;
use crate::config::Source;
use crate::repo::audit::AuditEntry;
use crate::repo::snapshot::SourceKind;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// A SQLite source of the config.
    source: Option<String>,
    /// Or: the name of a pg_dump stream (as `backup pg-dump --name`).
    stream: Option<String>,
    label: Option<String>,
    /// Which of the source's databases the upload is (by file name).
    file: Option<String>,
}

/// Receives a SQLite database and stores it as a snapshot of a configured
/// source, after checking it; nothing is stored for a bad upload.
pub async fn import(
    caller: Caller,
    State(app): State<Arc<App>>,
    query: Result<Query<ImportQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(Scope::Backup)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = app.cfg.serve.max_upload;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let source_name = match (&q.source, &q.stream) {
        (Some(s), None) => s.clone(),
        (None, Some(stream)) => {
            return import_dump(caller, app.clone(), stream, q.label.clone(), body, limit).await;
        }
        _ => {
            return Err(ApiError::bad_request(
                "name either source= (a SQLite source of the config) or stream= (a pg_dump \
                 stream's name)",
            ));
        }
    };
    let Source::Sqlite { paths, .. } = app.source(&source_name)? else {
        return Err(ApiError::bad_request(format!(
            "source {source_name:?} is a PostgreSQL cluster: import takes SQLite databases, \
             or a pg_dump file with stream="
        )));
    };
    let target = match &q.file {
        Some(name) => paths
            .iter()
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy() == *name))
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "source {source_name:?} has no database named {name:?}"
                ))
            })?,
        None => &paths[0],
    }
    .clone();
    let entry = caller.entry(
        "import",
        Some(format!("{source_name} ({})", target.display())),
    );
    // The upload goes to a private temporary directory first.
    let dir = private_dir()?;
    let upload = dir.path().join(target.file_name().unwrap_or_default());
    receive(body, &upload, limit).await?;
    let source = app.source(&source_name)?.clone();
    let result = blocking(&app, move |app| {
        let _dir = dir;
        crate::source::sqlite::integrity_check(&upload, "integrity_check").map_err(|e| {
            ApiError::bad_request(format!("the upload is not a sound SQLite database: {e}"))
        })?;
        let dbs = crate::commands::backup::validate_sqlite_sources(std::slice::from_ref(&upload))?;
        if app.jobs.all().iter().any(|j| {
            matches!(
                j.state,
                super::jobs::State::Queued | super::jobs::State::Running
            ) && j.source.as_deref() == Some(source.name())
        }) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "busy",
                format!("source {:?} is being backed up", source.name()),
            ));
        }
        let mut repo = app.open_now(Operation::Backup)?;
        let (id, snap) = crate::commands::backup::backup_sqlite(
            &repo,
            &dbs,
            &crate::commands::backup::BackupOptions {
                label: q.label.clone(),
                name: Some(source.name().to_string()),
                recorded_as: Some(vec![target.clone()]),
            },
        )?;
        crate::pipeline::store::settle_index(&mut repo);
        app.catalog.invalidate();
        Ok(crate::cli::show::snapshot_json(&id.to_hex(), &snap))
    })
    .await;
    created(&app, entry, result).await
}

/// A plain-format pg_dump file stored as a snapshot of the stream `name`,
/// as `backup pg-dump --name` would have: refused unless it begins as
/// pg_dump's output does and ends with its completion line.
async fn import_dump(
    caller: Caller,
    app: Arc<App>,
    name: &str,
    label: Option<String>,
    body: Body,
    limit: u64,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if name.is_empty() || name.contains('/') || name.len() > 200 {
        return Err(ApiError::bad_request(format!(
            "stream name {name:?}: give a plain name"
        )));
    }
    let entry = caller.entry("import", Some(format!("pg-dump {name}")));
    let dir = private_dir()?;
    let upload = dir.path().join("dump.sql");
    let received = receive(body, &upload, limit).await;
    let (name, who) = (name.to_string(), caller.name.clone());
    let result = match received {
        Err(e) => Err(e),
        Ok(()) => {
            blocking(&app, move |app| {
                let _dir = dir;
                check_dump(&upload)?;
                let mut repo = app.open_now(Operation::Backup)?;
                let (id, snap) = crate::commands::stream::backup_stream(
                    &repo,
                    &crate::commands::stream::StreamOptions {
                        name,
                        command: vec!["cat".into(), upload.display().to_string()],
                        kind: SourceKind::PgDump,
                        label,
                        recorded_as: Some(vec!["rewindb-serve-import".into(), who]),
                    },
                )?;
                crate::pipeline::store::settle_index(&mut repo);
                app.catalog.invalidate();
                Ok(crate::cli::show::snapshot_json(&id.to_hex(), &snap))
            })
            .await
        }
    };
    created(&app, entry, result).await
}

/// Whether `path` looks like a complete plain-format pg_dump: its first
/// lines name it, and its last lines hold the completion line.
/// An import's answer: 201 with the new snapshot, or the error; audited
/// either way.
async fn created(
    app: &Arc<App>,
    entry: AuditEntry,
    result: ApiResult<Value>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let outcome = result
        .as_ref()
        .map(|v| v["id"].as_str().map(str::to_string))
        .map_err(|e| e.to_string());
    app.audit_later(entry.finished(outcome)).await;
    Ok((StatusCode::CREATED, Json(result?)))
}

fn check_dump(path: &FsPath) -> ApiResult<()> {
    use std::io::{Read, Seek, SeekFrom};
    let bad = |why: &str| {
        ApiError::bad_request(format!(
            "the upload is not a complete plain-format pg_dump ({why}); nothing was stored"
        ))
    };
    let io = |e: std::io::Error| ApiError::internal(format!("{}: {e}", path.display()));
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut head = vec![0u8; 512];
    let n = f.read(&mut head).map_err(io)?;
    if !String::from_utf8_lossy(&head[..n]).contains("PostgreSQL database dump") {
        return Err(bad("it does not begin with pg_dump's header"));
    }
    let len = f.metadata().map_err(io)?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(1024)))
        .map_err(io)?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).map_err(io)?;
    match crate::commands::stream::has_line(&tail, crate::commands::stream::PG_DUMP_COMPLETE) {
        true => Ok(()),
        false => Err(bad(
            "it does not end with pg_dump's completion line: cut short?",
        )),
    }
}

/// A private temporary directory for an upload (removed when dropped).
fn private_dir() -> ApiResult<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("rewindb-import-")
        .tempdir()
        .map_err(|e| ApiError::internal(format!("creating a temporary directory: {e}")))
}

/// Writes the request body to `path`, refusing more than `limit` bytes
/// (tokio's file: the answering threads never block on the disk).
async fn receive(body: Body, path: &FsPath, limit: u64) -> ApiResult<()> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let io = |e: std::io::Error| ApiError::internal(format!("writing {}: {e}", path.display()));
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut stream = body.into_data_stream();
    let mut received = 0u64;
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(|e| ApiError::bad_request(format!("reading the upload: {e}")))?;
        received += piece.len() as u64;
        if received > limit {
            return Err(too_large(limit));
        }
        file.write_all(&piece).await.map_err(io)?;
    }
    file.flush().await.map_err(io)
}
