//! `check postgres`: proves WAL archiving works end to end, or says what is
//! misconfigured.
//!
//! First the settings are read and checked one by one (archive_mode,
//! archive_command calling `rewindb wal push` with this repository, the
//! server's OS user able to run the binary and write the archive); then, when
//! nothing is wrong on paper, a WAL switch is forced and rewindb waits for the
//! finished segment to arrive in the repository.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::repo::Repository;
use crate::repo::fsutil::{may, may_reach};
use crate::repo::wal::WalName;
use crate::source::postgres::PgSession;

#[derive(Clone, Debug, serde::Serialize)]
pub struct CheckItem {
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PgCheckReport {
    pub items: Vec<CheckItem>,
    /// The segment that went through, when the end-to-end test ran and passed.
    pub archived: Option<String>,
    pub seconds: f64,
}

impl PgCheckReport {
    pub fn ok(&self) -> bool {
        self.items.iter().all(|i| i.ok)
    }

    fn add(&mut self, what: &str, ok: bool, detail: impl Into<String>) {
        self.items.push(CheckItem {
            what: what.into(),
            ok,
            detail: detail.into(),
        });
    }
}

/// Splits a shell command into words (quotes and backslashes as sh does them,
/// enough for an archive_command).
fn shell_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => cur.extend(chars.next()),
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                cur.extend(chars.next());
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// Runs the checks against the server at `conninfo` for `repo`.
pub fn check_postgres(repo: &Repository, conninfo: &str, wait: Duration) -> Result<PgCheckReport> {
    let started = Instant::now();
    let mut report = PgCheckReport::default();
    let session = PgSession::connect(conninfo)?;
    let server = session.server_info()?;
    report.add(
        "connection",
        true,
        format!(
            "connected ({conninfo}), server {}, data directory {}",
            crate::source::postgres::version_text(server.server_version_num),
            server.data_directory.display()
        ),
    );
    let mode_ok = server.archive_mode == "on" || server.archive_mode == "always";
    report.add(
        "archive_mode",
        mode_ok,
        if mode_ok {
            format!("archive_mode = {}", server.archive_mode)
        } else {
            "archive_mode is off: set archive_mode = on in postgresql.conf and restart the server"
                .to_string()
        },
    );
    let words = shell_words(&server.archive_command);
    let wanted = format!("rewindb --repo {} wal push %p", repo.location());
    let calls_rewindb = words
        .first()
        // `rewindb`, or a wrapper named like it that sets up its environment.
        .is_some_and(|w| {
            Path::new(w)
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("rewindb"))
        });
    let pushes = words.windows(3).any(|w| w == ["wal", "push", "%p"]);
    let repo_arg = words
        .windows(2)
        .find(|w| w[0] == "--repo")
        .map(|w| PathBuf::from(&w[1]))
        .or_else(|| {
            words
                .iter()
                .find_map(|w| w.strip_prefix("--repo=").map(PathBuf::from))
        });
    let same_repo = repo_arg.as_ref().is_some_and(|p| match repo.local_dir() {
        Some(dir) => std::fs::canonicalize(p).is_ok_and(|p| p == dir),
        // A bucket: the URL as written (a trailing slash aside).
        None => p.to_str().map(|s| s.trim_end_matches('/')) == Some(repo.location().as_str()),
    });
    let command_ok = calls_rewindb && pushes && same_repo;
    report.add(
        "archive_command",
        command_ok,
        match (calls_rewindb && pushes, &repo_arg) {
            _ if command_ok => format!("archive_command = '{}'", server.archive_command),
            (false, _) if server.archive_command.is_empty() => {
                format!("archive_command is empty: set archive_command = '{wanted}' and reload")
            }
            (false, _) => format!(
                "archive_command = '{}' does not call `rewindb ... wal push %p`: set it to \
                 '{wanted}' and reload",
                server.archive_command
            ),
            (true, None) => format!(
                "archive_command = '{}' names no --repo (the server passes no environment): \
                 set it to '{wanted}' and reload",
                server.archive_command
            ),
            (true, Some(other)) => format!(
                "archive_command archives into {}, not into this repository ({}): set it to \
                 '{wanted}' and reload",
                other.display(),
                repo.location()
            ),
        },
    );
    // The server runs archive_command as the data directory's owner.
    if let Ok(meta) = std::fs::metadata(&server.data_directory) {
        let (uid, gid) = (meta.uid(), meta.gid());
        let mut problems = Vec::new();
        if let Some(binary) = words.first().filter(|_| calls_rewindb).map(PathBuf::from) {
            if let Some(dir) = may_reach(&binary, uid, gid) {
                problems.push(format!(
                    "cannot enter {} to run {}",
                    dir.display(),
                    binary.display()
                ));
            } else if !may(&binary, uid, gid, 1) {
                problems.push(format!("cannot run {}", binary.display()));
            }
        }
        problems.extend(repo.wal_access_problems(uid, gid, server.system_identifier));
        report.add(
            "permissions",
            problems.is_empty(),
            if problems.is_empty() {
                format!("the server's user (uid {uid}) can run rewindb and write the WAL archive")
            } else {
                format!(
                    "the server's user (uid {uid}, owner of the data directory) {}; fix with \
                     e.g. `chown -R {uid} {}` or run backups as that user",
                    problems.join(", "),
                    repo.location()
                )
            },
        );
    }
    if !report.ok() {
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    // End to end: close a segment and wait for it in the repository.
    let before = session.archiver_status()?;
    session.row("SELECT pg_create_restore_point('rewindb check')::text", &[])?;
    let segment = session
        .row("SELECT pg_walfile_name(pg_switch_wal())", &[])?
        .into_iter()
        .next()
        .flatten()
        .unwrap_or_default();
    let name = WalName::parse(&segment).map_err(crate::error::Error::Usage)?;
    let archive = repo.wal();
    let deadline = Instant::now() + wait;
    loop {
        if archive.contains(server.system_identifier, &name)? {
            report.add(
                "end to end",
                true,
                format!(
                    "segment {name} arrived in the repository {:.1}s after the switch",
                    started.elapsed().as_secs_f64()
                ),
            );
            report.archived = Some(name.to_string());
            break;
        }
        let now = session.archiver_status()?;
        let failed = now.failed_count > before.failed_count;
        if failed || Instant::now() >= deadline {
            report.add(
                "end to end",
                false,
                match (failed, &now.last_failed_wal) {
                    (true, Some(wal)) => format!(
                        "the server failed to archive {wal} (at {}): archive_command's error is \
                         in the server log",
                        now.last_failed_time.as_deref().unwrap_or("?")
                    ),
                    _ => format!(
                        "segment {name} did not arrive within {}s; the archiver's last \
                         archived segment is {}",
                        wait.as_secs(),
                        now.last_archived_wal.as_deref().unwrap_or("none")
                    ),
                },
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::shell_words;

    #[test]
    fn archive_commands_split_like_sh() {
        assert_eq!(
            shell_words("/usr/bin/rewindb --repo '/srv/my repo' wal push %p"),
            [
                "/usr/bin/rewindb",
                "--repo",
                "/srv/my repo",
                "wal",
                "push",
                "%p"
            ]
        );
        assert_eq!(shell_words(r#"a "b \" c" d\ e"#), ["a", "b \" c", "d e"]);
        assert!(shell_words("  ").is_empty());
    }
}
