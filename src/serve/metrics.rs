//! `GET /metrics` (Prometheus text format, scope `read`), and the watch
//! that sends stale and fresh-again alerts while the server runs.

use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::api::blocking;
use super::auth::Scope;
use super::error::ApiResult;
use super::{App, Caller};

pub async fn metrics(caller: Caller, State(app): State<Arc<App>>) -> ApiResult<Response> {
    caller.require(Scope::Read)?;
    let text = blocking(&app, |app| Ok(render(app)?)).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// `name` escaped for a label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render(app: &App) -> crate::error::Result<String> {
    let listing = app.catalog.get(&app.listing)?;
    let report = app.status_of(&listing)?;
    let mut out = String::new();
    // Each family's samples follow its own HELP and TYPE lines.
    type Sample = fn(
        &crate::commands::status::SourceStatus,
        Option<&crate::repo::snapshot::Snapshot>,
    ) -> Option<String>;
    let families: [(&str, &str, Sample); 5] = [
        (
            "rewindb_last_success_timestamp_seconds",
            "When the newest snapshot of the source was taken.",
            |_, snap| snap.map(|s| s.time.as_second().to_string()),
        ),
        (
            "rewindb_last_backup_duration_seconds",
            "How long the newest backup of the source took.",
            |_, snap| snap.map(|s| format!("{:.3}", s.stats.duration_secs)),
        ),
        (
            "rewindb_last_backup_added_bytes",
            "Bytes the newest backup of the source added to the repository.",
            |_, snap| snap.map(|s| s.stats.bytes_added.to_string()),
        ),
        ("rewindb_snapshots", "Snapshots of the source.", |st, _| {
            Some(st.snapshots.to_string())
        }),
        (
            "rewindb_source_stale",
            "1 when the source is older than its max_age.",
            |st, _| Some(u8::from(st.stale).to_string()),
        ),
    ];
    for (name, help, sample) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for s in &report.sources {
            let source = label(s.name.as_deref().unwrap_or(&s.source));
            let newest = s
                .newest
                .and_then(|id| listing.snapshots.iter().find(|(i, _)| *i == id))
                .map(|(_, snap)| snap);
            if let Some(value) = sample(s, newest) {
                let _ = writeln!(out, "{name}{{source=\"{source}\"}} {value}");
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP rewindb_repository_bytes Bytes the repository takes.\n# TYPE rewindb_repository_bytes gauge\nrewindb_repository_bytes {}",
        report.repository_bytes
    );
    let _ = writeln!(
        out,
        "# HELP rewindb_wal_pushes_total WAL files archived by wal push, per cluster.\n# TYPE rewindb_wal_pushes_total counter"
    );
    for c in &report.timelines {
        let n = app.listing.wal().list(c.system_identifier)?.len();
        let _ = writeln!(
            out,
            "rewindb_wal_pushes_total{{system_identifier=\"{}\"}} {n}",
            c.system_identifier
        );
    }
    let jobs = app.jobs.all();
    let _ = writeln!(
        out,
        "# HELP rewindb_jobs Jobs of this server's life, by kind and state.\n# TYPE rewindb_jobs gauge"
    );
    let mut counted: std::collections::BTreeMap<(String, String), usize> = Default::default();
    for j in &jobs {
        let key = (
            serde_json::to_value(j.kind)
                .expect("serialises")
                .as_str()
                .unwrap_or("")
                .to_string(),
            serde_json::to_value(j.state)
                .expect("serialises")
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
        *counted.entry(key).or_default() += 1;
    }
    for ((kind, state), n) in counted {
        let _ = writeln!(out, "rewindb_jobs{{kind=\"{kind}\",state=\"{state}\"}} {n}");
    }
    Ok(out)
}

/// Every `stale_check_secs`, judges the configured sources and sends the
/// stale and fresh-again alerts due (the same judgement as `status`).
pub async fn watch_staleness(app: Arc<App>) {
    let every = Duration::from_secs(app.cfg.serve.stale_check_secs.max(1));
    loop {
        let judged = blocking(&app, |app| {
            let report = app.status()?;
            crate::alerts::alert_staleness(&app.listing.config().id, &app.cfg.sources, &report);
            Ok(())
        })
        .await;
        if let Err(e) = judged {
            tracing::warn!("judging the sources' freshness: {e}");
        }
        tokio::time::sleep(every).await;
    }
}
