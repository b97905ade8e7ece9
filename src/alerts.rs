//! Alerts: a JSON POST to a source's `webhook` when its backup fails, when
//! it turns stale (older than its `max_age`; a cluster also when its newest
//! archived WAL is), and when it is fresh again. Sent by `run` and by
//! `serve`, retried with backoff. Which sources this machine has already
//! reported stale is kept in its cache directory, so a stale source is
//! reported once, not at every run.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

/// Attempts per alert; the waits between them double from [`FIRST_WAIT`].
const ATTEMPTS: u32 = 4;
const FIRST_WAIT: Duration = Duration::from_secs(1);
/// How long one attempt may take.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    BackupFailed,
    Stale,
    /// A source reported stale has a fresh backup again.
    Fresh,
}

/// The body of the POST.
#[derive(Clone, Debug, Serialize)]
pub struct Alert {
    pub event: Event,
    pub source: String,
    pub time: Timestamp,
    /// What happened, in words: the error, or why the source is stale.
    pub message: String,
    pub host: String,
    pub repository: String,
}

impl Alert {
    pub fn new(event: Event, source: &str, message: String, repository: String) -> Alert {
        Alert {
            event,
            source: source.to_string(),
            time: Timestamp::now(),
            message,
            host: crate::pipeline::store::hostname(),
            repository,
        }
    }
}

/// POSTs `alert` to `url`, retrying a failure (no answer, or a status other
/// than 2xx) up to [`ATTEMPTS`] times. Blocks until it is delivered or
/// given up on.
pub fn send(url: &str, alert: &Alert) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting a runtime for the webhook: {e}"))?;
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| format!("webhook client: {e}"))?;
        let body = serde_json::to_vec(alert).expect("an alert serialises");
        let mut wait = FIRST_WAIT;
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let sent = client
                .post(url)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => last = format!("it answered {}", r.status()),
                Err(e) => last = e.to_string(),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
        Err(format!(
            "webhook {} refused the {:?} alert for {} after {ATTEMPTS} attempts: {last}",
            shown(url),
            alert.event,
            alert.source
        ))
    })
}

/// A webhook URL as logs show it: its scheme and host only (the path of
/// a chat or paging webhook is often its secret).
fn shown(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(a webhook)".into();
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host);
    format!("{scheme}://{host}/…")
}

/// As [`send`], logging a failure instead of returning it.
pub fn send_logged(url: &str, alert: &Alert) {
    match send(url, alert) {
        Ok(()) => tracing::info!(
            "alert {:?} for {} sent to {}",
            alert.event,
            alert.source,
            shown(url)
        ),
        Err(e) => tracing::warn!("{e}"),
    }
}

/// Where this machine keeps the sources it reported stale.
fn state_file(repo_id: &str) -> PathBuf {
    crate::repo::cache::default_root()
        .join(repo_id)
        .join("alerted-stale.json")
}

/// Given the sources stale now (name and why), the alerts due: `Stale` for
/// each newly stale, `Fresh` for each reported before and fresh now among
/// `judged` (the sources looked at). Records the new state.
pub fn stale_transitions(
    repo_id: &str,
    judged: &[String],
    stale: &[(String, String)],
) -> Vec<(Event, String, String)> {
    let path = state_file(repo_id);
    let before: BTreeSet<String> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut after = before.clone();
    let mut due = Vec::new();
    for (name, why) in stale {
        if after.insert(name.clone()) {
            due.push((Event::Stale, name.clone(), why.clone()));
        }
    }
    for name in judged {
        if before.contains(name) && !stale.iter().any(|(n, _)| n == name) {
            after.remove(name);
            due.push((
                Event::Fresh,
                name.clone(),
                "a fresh backup exists again".to_string(),
            ));
        }
    }
    if after != before {
        crate::repo::cache::keep(&path, &serde_json::to_vec(&after).expect("serialises"));
    }
    due
}

/// Sends the `Stale` and `Fresh` alerts due for the configured `sources`
/// that have a webhook, judged by `report` (a status of them).
pub fn alert_staleness(
    repo_id: &str,
    sources: &[crate::config::Source],
    report: &crate::commands::status::StatusReport,
) {
    let watched: Vec<&crate::config::Source> = sources
        .iter()
        .filter(|s| s.alerting().webhook.is_some())
        .collect();
    if watched.is_empty() {
        return;
    }
    let judged: Vec<String> = watched.iter().map(|s| s.name().to_string()).collect();
    let stale: Vec<(String, String)> = report
        .sources
        .iter()
        .filter(|s| s.stale)
        .filter_map(|s| {
            let name = s.name.clone()?;
            judged.contains(&name).then(|| {
                (
                    name,
                    s.stale_reason.clone().unwrap_or_else(|| "stale".into()),
                )
            })
        })
        .collect();
    for (event, name, why) in stale_transitions(repo_id, &judged, &stale) {
        let source = watched.iter().find(|s| s.name() == name).expect("judged");
        let url = source.alerting().webhook.as_deref().expect("watched");
        let alert = Alert::new(event, &name, why, report.repository.display().to_string());
        send_logged(url, &alert);
    }
}

/// After `run`: a `BackupFailed` alert for each failed source with a
/// webhook, then the stale and fresh-again alerts due.
pub fn after_run(
    repo: &crate::repo::Repository,
    cfg: &crate::config::Loaded,
    report: &crate::commands::run::RunReport,
) {
    for r in report.sources.iter().filter(|r| !r.ok) {
        let source = cfg.sources.iter().find(|s| s.name() == r.name);
        if let Some(url) = source.and_then(|s| s.alerting().webhook.as_deref()) {
            let alert = Alert::new(
                Event::BackupFailed,
                &r.name,
                r.error.clone().unwrap_or_default(),
                repo.location(),
            );
            send_logged(url, &alert);
        }
    }
    if cfg.sources.iter().any(|s| s.alerting().webhook.is_some()) {
        match crate::commands::status::status(repo, &cfg.sources, None, Timestamp::now()) {
            Ok(status) => alert_staleness(&repo.config().id, &cfg.sources, &status),
            Err(e) => tracing::warn!("judging the sources' freshness for alerts: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_show_a_webhook_without_its_secret_path() {
        assert_eq!(
            shown("https://hooks.example.com/services/T000/B000/XXXX?token=1"),
            "https://hooks.example.com/…"
        );
        assert_eq!(
            shown("http://user:pw@127.0.0.1:9000/hook"),
            "http://127.0.0.1:9000/…"
        );
        assert_eq!(shown("nonsense"), "(a webhook)");
    }
}
