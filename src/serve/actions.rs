//! The endpoints that change the repository or restore from it: backup,
//! check and restore (as jobs), forget, protect (`import` has its own
//! module). Each appends to the audit log who did it, from where, and how
//! it ended.

use std::path::{Component, Path as FsPath, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::api::blocking;
use super::auth::Scope;
use super::error::{ApiError, ApiResult};
use super::jobs::{JobView, Kind, Outcome};
use super::{App, Caller};
use crate::commands::Operation;
use crate::commands::forget::ForgetOptions;
use crate::commands::restore::{RestoreOptions, Verify};
use crate::config::Source;
use crate::error::Error;
use crate::repo::snapshot::SourceKind;

/// The largest JSON body an endpoint takes.
pub const MAX_JSON_BODY: usize = 64 << 10;

/// A JSON body; an empty one is `T::default()`.
fn parse_body<T: DeserializeOwned + Default>(body: Result<Bytes, BytesRejection>) -> ApiResult<T> {
    let bytes = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => too_large(MAX_JSON_BODY as u64),
        _ => ApiError::bad_request(e.body_text()),
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!("the body is not the JSON this endpoint takes: {e}"))
    })
}

pub(super) fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the body is larger than this endpoint takes ({limit} bytes)"),
    )
}

/// 202 with the job, or 409 naming the job in the way.
fn accepted(submitted: Result<JobView, u64>, what: &str) -> ApiResult<(StatusCode, Json<Value>)> {
    match submitted {
        Ok(job) => Ok((StatusCode::ACCEPTED, Json(json!(job)))),
        Err(running) => Err(ApiError {
            job: Some(running),
            ..ApiError::new(
                StatusCode::CONFLICT,
                "busy",
                format!(
                    "{what} is already under way in job {running}; follow it at /api/v1/jobs/{running}"
                ),
            )
        }),
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupBody {
    label: Option<String>,
}

pub async fn backup(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(Scope::Backup)?;
    let body: BackupBody = parse_body(body)?;
    let source = app.source(&name)?.clone().with_label(body.label);
    let entry = caller.entry("backup", Some(name.clone()));
    let worker = app.clone();
    let work = Box::new(move || {
        let result = (|| {
            let mut repo = worker.open(Operation::Maintain)?;
            let run = crate::commands::run::run_source(&repo, &source);
            crate::pipeline::store::settle_index(&mut repo);
            Ok::<_, Error>(run)
        })();
        worker.catalog.invalidate();
        let outcome = match result {
            Ok(run) if run.ok => Ok(Outcome {
                snapshot: run.snapshot.map(|id| id.to_hex()),
                result: json!(run),
            }),
            Ok(run) => Err((run.error.clone().unwrap_or_default(), Some(json!(run)))),
            Err(e) => Err((e.to_string(), None)),
        };
        worker.audit(entry.finished(match &outcome {
            Ok(o) => Ok(o.snapshot.clone()),
            Err((e, _)) => Err(e.clone()),
        }));
        if let (Err((message, _)), Some(url)) = (&outcome, source.alerting().webhook.clone()) {
            let alert = crate::alerts::Alert::new(
                crate::alerts::Event::BackupFailed,
                source.name(),
                message.clone(),
                worker.listing.location(),
            );
            std::thread::spawn(move || crate::alerts::send_logged(&url, &alert));
        }
        outcome
    });
    let submitted = app.jobs.submit(
        Kind::Backup,
        Some(name.clone()),
        &caller.name,
        |j| j.kind == Kind::Backup && j.source.as_deref() == Some(name.as_str()),
        work,
    );
    accepted(submitted, &format!("a backup of source {name:?}"))
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckBody {
    #[serde(default)]
    read_data: bool,
}

pub async fn check(
    caller: Caller,
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(Scope::Backup)?;
    let body: CheckBody = parse_body(body)?;
    let entry = caller.entry(
        "check",
        Some(
            if body.read_data {
                "read_data"
            } else {
                "structure"
            }
            .into(),
        ),
    );
    let worker = app.clone();
    let work = Box::new(move || {
        let outcome = (|| {
            let repo = worker
                .open(Operation::Read)
                .map_err(|e| (e.to_string(), None))?;
            let opts = crate::commands::check::CheckOptions {
                read_data: body.read_data,
                subset: None,
            };
            let report =
                crate::commands::check::check(&repo, &opts).map_err(|e| (e.to_string(), None))?;
            let value = json!(report);
            match report.problems.is_empty() {
                true => Ok(Outcome {
                    snapshot: None,
                    result: value,
                }),
                false => Err((
                    format!(
                        "check found {} problem(s); snapshots affected: {}",
                        report.problems.len(),
                        report.affected().join(", ")
                    ),
                    Some(value),
                )),
            }
        })();
        worker.audit(entry.finished(match &outcome {
            Ok(_) => Ok(None),
            Err((e, _)) => Err(e.clone()),
        }));
        outcome
    });
    let submitted = app.jobs.submit(
        Kind::Check,
        None,
        &caller.name,
        |j| j.kind == Kind::Check,
        work,
    );
    accepted(submitted, "a check")
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreBody {
    file: Option<String>,
    #[serde(default)]
    in_place: bool,
    /// A relative directory under `[serve] restore_dir`.
    to: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

/// Where a restore through the API may write: the source's own paths (in
/// place), or a directory under `restore_dir`. Never anywhere else.
fn restore_options(
    app: &App,
    snap: &crate::repo::snapshot::Snapshot,
    body: &RestoreBody,
) -> ApiResult<RestoreOptions> {
    if snap.postgres.is_some() {
        return Err(ApiError::bad_request(
            "a PostgreSQL base backup is restored with the CLI (`rewindb restore --to DIR`), \
             not through the API",
        ));
    }
    let to = match (body.in_place, &body.to) {
        (true, None) => {
            if snap.source != SourceKind::Sqlite {
                return Err(ApiError::bad_request(
                    "a stream has no path of its own to restore in place: give \"to\"",
                ));
            }
            // In place means the paths a configured source backs up.
            for f in snap
                .files
                .iter()
                .filter(|f| body.file.as_ref().is_none_or(|n| &f.name == n))
            {
                let configured = app.cfg.sources.iter().any(|s| match s {
                    Source::Sqlite { paths, .. } => paths.contains(&f.source_path),
                    Source::Postgres { .. } => false,
                });
                if !configured {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        format!(
                            "{} is not a path of a source in the config: the API restores in \
                             place only over a configured source's database",
                            f.source_path.display()
                        ),
                    ));
                }
            }
            None
        }
        (false, Some(rel)) => {
            // A file's own name must not lead out of the directory either
            // (a stream's name is whatever `backup command --name` was given).
            let plain = |n: &str| {
                let mut parts = FsPath::new(n).components();
                matches!(
                    (parts.next(), parts.next()),
                    (Some(Component::Normal(_)), None)
                )
            };
            if let Some(f) = snap
                .files
                .iter()
                .filter(|f| body.file.as_ref().is_none_or(|n| &f.name == n))
                .find(|f| !plain(&f.name))
            {
                return Err(ApiError::bad_request(format!(
                    "the snapshot's file {:?} is not a plain file name: it cannot be restored \
                     under restore_dir (restore it with the CLI)",
                    f.name
                )));
            }
            Some(under_restore_dir(app, rel)?)
        }
        _ => {
            return Err(ApiError::bad_request(
                "give \"in_place\": true, or \"to\": a directory under the server's restore_dir \
                 (not both)",
            ));
        }
    };
    Ok(RestoreOptions {
        into_dir: to.is_some(),
        to,
        in_place: body.in_place,
        file: body.file.clone(),
        verify: Verify::Hash,
    })
}

/// `rel` below `[serve] restore_dir`, refused when it is absolute, climbs
/// with `..`, or leads out through a symbolic link.
fn under_restore_dir(app: &App, rel: &str) -> ApiResult<PathBuf> {
    let Some(root) = &app.cfg.serve.restore_dir else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the server has no restore_dir in [serve]: it restores only in place",
        ));
    };
    let rel_path = FsPath::new(rel);
    if rel.is_empty()
        || !rel_path
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(ApiError::bad_request(format!(
            "\"to\": {rel:?} must be a relative path under restore_dir, without \"..\" or \".\""
        )));
    }
    let root = root
        .canonicalize()
        .map_err(|e| ApiError::internal(format!("restore_dir {}: {e}", root.display())))?;
    let dest = root.join(rel_path);
    // The deepest part that exists must resolve inside the root.
    let mut existing = dest.as_path();
    while !existing.exists() {
        existing = existing.parent().unwrap_or(&root);
    }
    let resolved = existing
        .canonicalize()
        .map_err(|e| ApiError::internal(format!("{}: {e}", existing.display())))?;
    if !resolved.starts_with(&root) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("\"to\": {rel:?} leads outside restore_dir (a symbolic link)"),
        ));
    }
    Ok(dest)
}

pub async fn restore(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(Scope::Restore)?;
    let body: RestoreBody = parse_body(body)?;
    if body.dry_run {
        let plan = blocking(&app, move |app| {
            let list = app.listing.snapshots()?;
            let (sid, snap) = list.find(&id)?;
            let opts = restore_options(app, snap, &body)?;
            Ok(crate::commands::restore::plan_restore(*sid, snap, &opts)?)
        })
        .await?;
        let files: Vec<Value> = plan
            .items
            .iter()
            .map(|i| json!({"name": i.file.name, "dest": i.dest, "replace": i.replace, "size": i.file.size}))
            .collect();
        return Ok((
            StatusCode::OK,
            Json(json!({"snapshot": plan.snapshot.to_hex(), "files": files})),
        ));
    }
    // Refused now (not in the job) when it is wrong, and logged.
    let asked = format!("{id} -> {}", body.to.as_deref().unwrap_or("its own path"));
    let checked = blocking(&app, {
        let id = id.clone();
        move |app| {
            let list = app.listing.snapshots()?;
            let (sid, snap) = list.find(&id)?;
            let opts = restore_options(app, snap, &body)?;
            crate::commands::restore::plan_restore(*sid, snap, &opts)?;
            Ok((*sid, opts))
        }
    })
    .await;
    let (sid, opts) = match checked {
        Ok(v) => v,
        Err(e) => {
            let refused = caller
                .entry("restore", Some(asked))
                .finished(Err::<Option<String>, _>(&e.message));
            app.audit_later(refused).await;
            return Err(e);
        }
    };
    let entry = caller.entry(
        "restore",
        Some(format!(
            "{} -> {}",
            sid.short(),
            opts.to
                .as_ref()
                .map_or("its own path".to_string(), |p| p.display().to_string())
        )),
    );
    let worker = app.clone();
    let work = Box::new(move || {
        let outcome = (|| {
            let repo = worker.open(Operation::Read)?;
            let list = repo.snapshots()?;
            let (sid, snap) = list.find(&sid.to_hex())?;
            let plan = crate::commands::restore::plan_restore(*sid, snap, &opts)?;
            let done = crate::commands::restore::restore(&repo, &plan)?;
            Ok::<_, Error>(Outcome {
                snapshot: Some(sid.to_hex()),
                result: json!({"restored": done}),
            })
        })()
        .map_err(|e| (e.to_string(), None));
        worker.audit(entry.finished(match &outcome {
            Ok(o) => Ok(Some(o.result.to_string())),
            Err((e, _)) => Err(e.clone()),
        }));
        outcome
    });
    let submitted = app.jobs.submit(
        Kind::Restore,
        None,
        &caller.name,
        |j| j.kind == Kind::Restore,
        work,
    );
    accepted(submitted, "a restore")
}

pub async fn forget_one(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Scope::Admin)?;
    let entry = caller.entry("forget", Some(id.clone()));
    let result = blocking(&app, move |app| {
        let repo = app.open_now(Operation::Maintain)?;
        let list = repo.snapshots()?;
        let (sid, _) = list.find(&id)?;
        if repo.protected()?.contains(sid) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "protected",
                format!("snapshot {} is protected; unprotect it first", sid.short()),
            ));
        }
        crate::commands::forget::forget(
            &repo,
            &ForgetOptions {
                ids: vec![sid.to_hex()],
                ..ForgetOptions::default()
            },
        )?;
        app.catalog.invalidate();
        Ok(sid.to_hex())
    })
    .await;
    app.audit_later(
        entry.finished(
            result
                .as_ref()
                .map(|id| Some(id.clone()))
                .map_err(|e| e.to_string()),
        ),
    )
    .await;
    Ok(Json(json!({"forgotten": result?})))
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectBody {
    protected: Option<bool>,
}

pub async fn protect(
    caller: Caller,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    caller.require(Scope::Admin)?;
    let body: ProtectBody = parse_body(body)?;
    let on = body.protected.unwrap_or(true);
    let entry = caller.entry(if on { "protect" } else { "unprotect" }, Some(id.clone()));
    let result = blocking(&app, move |app| {
        let repo = app.open_now(Operation::Maintain)?;
        let changed = crate::commands::forget::protect(&repo, &[id], on)?;
        app.catalog.invalidate();
        Ok(changed[0].to_hex())
    })
    .await;
    app.audit_later(entry.finished(result.as_ref().map(|_| None).map_err(|e| e.to_string())))
        .await;
    Ok(Json(json!({"id": result?, "protected": on})))
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keep {
    #[serde(default)]
    last: u32,
    #[serde(default)]
    hourly: u32,
    #[serde(default)]
    daily: u32,
    #[serde(default)]
    weekly: u32,
    #[serde(default)]
    monthly: u32,
    #[serde(default)]
    yearly: u32,
    within: Option<String>,
    #[serde(default)]
    labels: Vec<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgetBody {
    source: Option<String>,
    #[serde(default)]
    keep: Keep,
    #[serde(default)]
    dry_run: bool,
}

pub async fn forget(
    caller: Caller,
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    caller.require(Scope::Admin)?;
    let body: ForgetBody = parse_body(body)?;
    let within = body
        .keep
        .within
        .as_deref()
        .map(crate::retention::parse_span)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let opts = ForgetOptions {
        policy: crate::retention::Policy {
            last: body.keep.last,
            hourly: body.keep.hourly,
            daily: body.keep.daily,
            weekly: body.keep.weekly,
            monthly: body.keep.monthly,
            yearly: body.keep.yearly,
            within,
            keep_labels: body.keep.labels,
        },
        source: body.source.clone(),
        dry_run: body.dry_run,
        ..ForgetOptions::default()
    };
    opts.validate().map_err(ApiError::from)?;
    if opts.ids.is_empty() && opts.source.is_none() {
        return Err(ApiError::bad_request(
            "name the \"source\" the policy applies to (the API does not apply one policy to \
             every source at once)",
        ));
    }
    let dry_run = opts.dry_run;
    let entry = caller.entry("forget", body.source.clone());
    let result = blocking(&app, move |app| {
        let repo = app.open_now(if opts.dry_run {
            Operation::Read
        } else {
            Operation::Maintain
        })?;
        let plans = crate::commands::forget::forget(&repo, &opts)?;
        app.catalog.invalidate();
        Ok(plans)
    })
    .await;
    if !dry_run {
        app.audit_later(
            entry.finished(
                result
                    .as_ref()
                    .map(|plans| {
                        let n: usize = plans.iter().map(|p| p.forget.len()).sum();
                        Some(format!("{n} snapshot(s) forgotten"))
                    })
                    .map_err(|e| e.to_string()),
            ),
        )
        .await;
    }
    Ok(Json(json!(result?)))
}
