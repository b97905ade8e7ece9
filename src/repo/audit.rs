//! The audit log: who changed the repository or restored from it, what,
//! when, from where, and with what result. One small write-once object per
//! entry, `audit/<nanoseconds since 1970, 20 digits>-<8 random hex>.json`,
//! sealed in an encrypted repository, so the log travels with the backups
//! (`copy` aside) and two writers never touch the same object. Writing an
//! entry takes no lock, so an API request refused because another process
//! holds the repository's lock is logged too (a CLI command that never
//! opened the repository is not: it has nowhere to write).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Repository;
use super::storage::{Storage, is_not_found};
use crate::crypto::Crypto;
use crate::error::{IoContext, RepoError};

const PREFIX: &str = "audit/";

/// One thing done to (or restored from) the repository.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub time: jiff::Timestamp,
    /// A token's name (`serve`), or `local:<user>` (the CLI).
    pub who: String,
    /// The client's address, or `cli@<host>`.
    pub from: String,
    /// `backup`, `restore`, `download`, `forget`, `protect`, `unprotect`,
    /// `gc`, `import`, `check`, `repair`, `key`, ...
    pub action: String,
    /// The source, snapshot or file acted on.
    pub target: Option<String>,
    pub ok: bool,
    /// The new snapshot's id, or the error.
    pub detail: Option<String>,
}

impl AuditEntry {
    /// An entry for an action of this process's user at the command line.
    pub fn local(action: &str, target: Option<String>) -> AuditEntry {
        AuditEntry {
            time: jiff::Timestamp::now(),
            who: format!("local:{}", crate::crypto::keys::username()),
            from: format!("cli@{}", crate::pipeline::store::hostname()),
            action: action.to_string(),
            target,
            ok: true,
            detail: None,
        }
    }

    /// The outcome: `Ok(detail)` or the error's message.
    pub fn finished<E: std::fmt::Display>(mut self, result: Result<Option<String>, E>) -> Self {
        match result {
            Ok(detail) => self.detail = detail,
            Err(e) => {
                self.ok = false;
                self.detail = Some(e.to_string());
            }
        }
        self
    }
}

/// The associated data that binds a sealed entry to its name.
fn aad(name: &str) -> Vec<u8> {
    [b"rewindb audit ".as_slice(), name.as_bytes()].concat()
}

/// Appends to one repository's log; outlives the [`Repository`] it came
/// from (and its lock), so the CLI can log a command after it ended.
#[derive(Clone)]
pub struct AuditWriter {
    storage: Arc<dyn Storage>,
    crypto: Crypto,
}

impl AuditWriter {
    /// Appends `entry` to the log (durable when this returns).
    pub fn append(&self, entry: &AuditEntry) -> Result<(), RepoError> {
        let mut suffix = [0u8; 4];
        getrandom::fill(&mut suffix).expect("the OS gives random bytes");
        let nanos = entry.time.as_nanosecond().max(0);
        let name = format!("{PREFIX}{nanos:020}-{}.json", hex::encode(suffix));
        let json = serde_json::to_vec(entry).expect("an entry serialises");
        let bytes = self.crypto.seal(&aad(&name), &json);
        self.storage
            .put(&name, &bytes)
            .ctx(|| format!("writing audit entry {}", self.storage.describe(&name)))
    }
}

impl Repository {
    pub fn audit_writer(&self) -> AuditWriter {
        AuditWriter {
            storage: self.storage.clone(),
            crypto: self.crypto.clone(),
        }
    }

    /// Appends `entry` to the log (durable when this returns).
    pub fn append_audit(&self, entry: &AuditEntry) -> Result<(), RepoError> {
        self.audit_writer().append(entry)
    }

    /// The log, oldest first, and the entries that could not be read
    /// (named, with why: damaged, or not sealed with this repository's key).
    pub fn audit_log(&self) -> Result<(Vec<AuditEntry>, Vec<String>), RepoError> {
        let listed = self
            .storage
            .list(PREFIX)
            .ctx(|| format!("listing {}", self.describe("audit")))?;
        let mut entries = Vec::with_capacity(listed.len());
        let mut damaged = Vec::new();
        for object in listed {
            let bytes = match self.storage.get(&object.name) {
                Ok(b) => b,
                Err(e) if is_not_found(&e) => continue,
                Err(e) => {
                    return Err(e).ctx(|| format!("reading {}", self.describe(&object.name)));
                }
            };
            let opened = self
                .crypto
                .open(&aad(&object.name), &bytes)
                .map_err(|e| e.to_string())
                .and_then(|json| {
                    serde_json::from_slice::<AuditEntry>(&json).map_err(|e| e.to_string())
                });
            match opened {
                Ok(e) => entries.push(e),
                Err(why) => damaged.push(format!("{}: {why}", self.describe(&object.name))),
            }
        }
        entries.sort_by_key(|e| e.time);
        Ok((entries, damaged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::{NewRepository, OpenOptions};

    #[test]
    fn entries_come_back_in_order_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        Repository::init(&root, NewRepository::Plain).unwrap();
        let repo = Repository::open(
            &root,
            OpenOptions {
                lock: None,
                lock_wait: std::time::Duration::ZERO,
            },
        )
        .unwrap();
        let mut first = AuditEntry::local("backup", Some("app".into()))
            .finished(Ok::<_, String>(Some("abcd".into())));
        first.time = "2026-12-01T10:00:00Z".parse().unwrap();
        let mut second =
            AuditEntry::local("restore", None).finished(Err::<Option<String>, _>("no space"));
        second.time = "2026-12-01T09:00:00Z".parse().unwrap();
        repo.append_audit(&first).unwrap();
        repo.append_audit(&second).unwrap();
        let (log, damaged) = repo.audit_log().unwrap();
        assert_eq!(log, vec![second.clone(), first.clone()]);
        assert!(damaged.is_empty());
        assert!(!log[0].ok && log[0].detail.as_deref() == Some("no space"));
        assert!(log[1].who.starts_with("local:") && log[1].from.starts_with("cli@"));
        // A truncated entry is reported, not dropped silently or fatal.
        let dir = repo.local_dir().unwrap().join("audit");
        let victim = std::fs::read_dir(&dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::write(&victim, b"{\"time\":").unwrap();
        let (log, damaged) = repo.audit_log().unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(damaged.len(), 1, "{damaged:?}");
    }
}
