//! The `run --config FILE` file: the repository, the sources, their
//! retention, and how often gc runs. TOML, read with serde; an unknown key or
//! a wrong type is an error naming the line and the key.
//!
//! ```toml
//! repository = "/backups/rewindb"     # wins over --repo; if absent: --repo, $REWINDB_REPOSITORY
//!
//! [gc]
//! every = "1d"                        # at most once per this span ("never": not in `run`)
//! repack_threshold = 0.8
//!
//! [[sqlite]]
//! name = "app"
//! paths = ["/srv/app.db", "/srv/auth.db"]
//! label = "hourly"
//! keep = { hourly = 24, daily = 7, weekly = 4, monthly = 12 }
//!
//! max_age = "25h"                    # older than this: stale (status, alerts)
//! webhook = "https://hooks.example/backups"   # called when a run fails or it turns stale
//!
//! [[postgres]]
//! name = "main"
//! pgdata = "/var/lib/postgresql/15/main"
//! conn = "host=/var/run/postgresql user=postgres"
//! keep = { daily = 7 }
//!
//! [serve]                             # `rewindb serve` only: see docs/api.md
//! listen = "127.0.0.1:8077"
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use jiff::Span;
use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, Result};
use crate::retention::{Policy, parse_span};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Relative paths are taken from the config file's directory.
    pub repository: Option<PathBuf>,
    #[serde(default)]
    pub gc: GcConfig,
    #[serde(default)]
    pub sqlite: Vec<SqliteSource>,
    #[serde(default)]
    pub postgres: Vec<PostgresSource>,
    pub serve: Option<crate::serve::settings::ServeSection>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcConfig {
    /// A duration ("1d", "12h") or "never"; default "1d".
    pub every: Option<Spanned<String>>,
    /// Default [`DEFAULT_REPACK_THRESHOLD`](crate::commands::gc::DEFAULT_REPACK_THRESHOLD).
    pub repack_threshold: Option<Spanned<f64>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteSource {
    pub name: Spanned<String>,
    /// Databases backed up together into one snapshot.
    pub paths: Vec<PathBuf>,
    pub label: Option<String>,
    #[serde(default)]
    pub keep: Keep,
    pub max_age: Option<Spanned<String>>,
    pub webhook: Option<Spanned<String>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSource {
    pub name: Spanned<String>,
    pub pgdata: PathBuf,
    pub conn: Option<String>,
    pub label: Option<String>,
    /// Seconds to wait for the WAL a base backup needs (default 120).
    pub wal_wait: Option<u64>,
    #[serde(default)]
    pub keep: Keep,
    pub max_age: Option<Spanned<String>>,
    pub webhook: Option<Spanned<String>>,
}

/// When a source counts as stale, and whom to tell when it is (or when its
/// backup fails).
#[derive(Clone, Debug, Default)]
pub struct Alerting {
    /// Older than this (for a cluster: its base backup, or its newest
    /// archived WAL): stale.
    pub max_age: Option<Span>,
    /// An `http://` or `https://` URL that gets a JSON POST.
    pub webhook: Option<String>,
}

impl Alerting {
    fn parse(
        max_age: &Option<Spanned<String>>,
        webhook: &Option<Spanned<String>>,
        what: &str,
        bad: &dyn Fn(std::ops::Range<usize>, String) -> Error,
    ) -> Result<Alerting> {
        let max_age = match max_age {
            Some(m) => Some(
                parse_span(m.get_ref())
                    .map_err(|e| bad(m.span(), format!("{what}: max_age: {e}")))?,
            ),
            None => None,
        };
        if let Some(w) = webhook {
            let url = w.get_ref();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(bad(
                    w.span(),
                    format!("{what}: webhook {url:?} is not an http:// or https:// URL"),
                ));
            }
        }
        Ok(Alerting {
            max_age,
            webhook: webhook.as_ref().map(|w| w.get_ref().clone()),
        })
    }
}

/// A source's retention policy, as `forget`'s `--keep-*` options. No rule:
/// every snapshot is kept.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keep {
    #[serde(default)]
    pub last: u32,
    #[serde(default)]
    pub hourly: u32,
    #[serde(default)]
    pub daily: u32,
    #[serde(default)]
    pub weekly: u32,
    #[serde(default)]
    pub monthly: u32,
    #[serde(default)]
    pub yearly: u32,
    pub within: Option<Spanned<String>>,
    #[serde(default)]
    pub labels: Vec<String>,
}

impl Keep {
    /// `bad` turns (span, message) into the error naming the line.
    fn policy(
        &self,
        source: &str,
        bad: &dyn Fn(std::ops::Range<usize>, String) -> Error,
    ) -> Result<Policy> {
        let within = match &self.within {
            Some(w) => Some(
                parse_span(w.get_ref())
                    .map_err(|e| bad(w.span(), format!("{source}: keep.within: {e}")))?,
            ),
            None => None,
        };
        Ok(Policy {
            last: self.last,
            hourly: self.hourly,
            daily: self.daily,
            weekly: self.weekly,
            monthly: self.monthly,
            yearly: self.yearly,
            within,
            keep_labels: self.labels.clone(),
        })
    }
}

/// One source of a run, checked and with paths made absolute.
#[derive(Clone, Debug)]
pub enum Source {
    Sqlite {
        name: String,
        paths: Vec<PathBuf>,
        label: Option<String>,
        policy: Policy,
        alerting: Alerting,
    },
    Postgres {
        name: String,
        pgdata: PathBuf,
        conn: Option<String>,
        label: Option<String>,
        wal_wait: u64,
        policy: Policy,
        alerting: Alerting,
    },
}

impl Source {
    pub fn name(&self) -> &str {
        match self {
            Source::Sqlite { name, .. } | Source::Postgres { name, .. } => name,
        }
    }

    pub fn policy(&self) -> &Policy {
        match self {
            Source::Sqlite { policy, .. } | Source::Postgres { policy, .. } => policy,
        }
    }

    pub fn alerting(&self) -> &Alerting {
        match self {
            Source::Sqlite { alerting, .. } | Source::Postgres { alerting, .. } => alerting,
        }
    }

    /// The source with `label` on its next snapshot instead of its own.
    pub fn with_label(mut self, new: Option<String>) -> Source {
        if new.is_some() {
            match &mut self {
                Source::Sqlite { label, .. } | Source::Postgres { label, .. } => *label = new,
            }
        }
        self
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Sqlite { .. } => "sqlite",
            Source::Postgres { .. } => "postgres",
        }
    }
}

/// A config file, read and checked.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub repository: Option<PathBuf>,
    /// `None`: gc never runs from `run`.
    pub gc_every: Option<Span>,
    pub repack_threshold: f64,
    pub sources: Vec<Source>,
    /// The `[serve]` section (defaults when absent).
    pub serve: crate::serve::settings::ServeSettings,
}

/// Reads and checks `path`. Errors (exit 2) name the file, and the line and
/// key where TOML or the schema says so.
pub fn load(path: &Path) -> Result<Loaded> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?;
    let cfg: RunConfig = toml::from_str(&text)
        .map_err(|e| Error::Usage(format!("{}: {}", path.display(), e.to_string().trim_end())))?;
    let base = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let bad = |what: String| Error::Usage(format!("{}: {what}", path.display()));
    // A value's line, as TOML's own errors give it.
    let at = |span: std::ops::Range<usize>, what: String| {
        let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
        Error::Usage(format!("{}: line {line}: {what}", path.display()))
    };
    let gc_every = match &cfg.gc.every {
        Some(every) if every.get_ref().trim() == "never" => None,
        Some(every) => Some(
            parse_span(every.get_ref()).map_err(|e| at(every.span(), format!("gc.every: {e}")))?,
        ),
        None => Some(Span::new().days(1)),
    };
    let repack_threshold = match &cfg.gc.repack_threshold {
        Some(t) if !(0.0..=1.0).contains(t.get_ref()) => {
            return Err(at(
                t.span(),
                format!(
                    "gc.repack_threshold must be between 0 and 1, not {}",
                    t.get_ref()
                ),
            ));
        }
        Some(t) => *t.get_ref(),
        None => crate::commands::gc::DEFAULT_REPACK_THRESHOLD,
    };
    let mut names = HashSet::new();
    let mut sources = Vec::new();
    let mut check_name = |name: &Spanned<String>| {
        if name.get_ref().is_empty() || !names.insert(name.get_ref().clone()) {
            return Err(at(
                name.span(),
                format!(
                    "source name {:?} is empty or used twice: each source needs its own name",
                    name.get_ref()
                ),
            ));
        }
        Ok(())
    };
    for s in &cfg.sqlite {
        check_name(&s.name)?;
        let what = format!("sqlite source {:?}", s.name.get_ref());
        if s.paths.is_empty() {
            return Err(at(s.name.span(), format!("{what}: paths is empty")));
        }
        sources.push(Source::Sqlite {
            name: s.name.get_ref().clone(),
            paths: s.paths.iter().map(|p| base.join(p)).collect(),
            label: s.label.clone(),
            policy: s.keep.policy(&what, &at)?,
            alerting: Alerting::parse(&s.max_age, &s.webhook, &what, &at)?,
        });
    }
    for s in &cfg.postgres {
        check_name(&s.name)?;
        let what = format!("postgres source {:?}", s.name.get_ref());
        sources.push(Source::Postgres {
            name: s.name.get_ref().clone(),
            pgdata: base.join(&s.pgdata),
            conn: s.conn.clone(),
            label: s.label.clone(),
            wal_wait: s.wal_wait.unwrap_or(120),
            policy: s.keep.policy(&what, &at)?,
            alerting: Alerting::parse(&s.max_age, &s.webhook, &what, &at)?,
        });
    }
    // Two sources over the same databases (or cluster) would apply their
    // policies to each other's snapshots.
    for (i, a) in sources.iter().enumerate() {
        for b in &sources[..i] {
            let same = match (a, b) {
                (Source::Sqlite { paths: pa, .. }, Source::Sqlite { paths: pb, .. }) => {
                    let (mut pa, mut pb) = (pa.clone(), pb.clone());
                    pa.sort();
                    pb.sort();
                    pa == pb
                }
                (Source::Postgres { pgdata: a, .. }, Source::Postgres { pgdata: b, .. }) => a == b,
                _ => false,
            };
            if same {
                return Err(bad(format!(
                    "sources {:?} and {:?} back up the same data: make them one source (one \
                     policy can combine hourly, daily and other rules)",
                    b.name(),
                    a.name()
                )));
            }
        }
    }
    if sources.is_empty() {
        return Err(bad(
            "no sources: add a [[sqlite]] or [[postgres]] table".into()
        ));
    }
    Ok(Loaded {
        // A relative directory is relative to the config file; a URL is as written.
        repository: cfg
            .repository
            .map(|r| match r.to_str().is_some_and(|t| t.contains("://")) {
                true => r,
                false => base.join(r),
            }),
        gc_every,
        repack_threshold,
        sources,
        serve: crate::serve::settings::ServeSettings::load(cfg.serve.as_ref(), &base, &at)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> Result<Loaded> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rewindb.toml");
        std::fs::write(&path, text).unwrap();
        load(&path)
    }

    #[test]
    fn a_full_config() {
        let cfg = load_str(
            r#"
repository = "repo"
[gc]
every = "12h"
[[sqlite]]
name = "app"
paths = ["app.db", "/srv/auth.db"]
keep = { last = 3, daily = 7, within = "2d" }
[[postgres]]
name = "main"
pgdata = "/var/lib/postgresql/15/main"
"#,
        )
        .unwrap();
        assert!(cfg.repository.as_ref().unwrap().ends_with("repo"));
        // A URL is kept as written, not joined to the config's directory.
        let remote = load_str(
            "repository = \"s3://bucket/crm\"\n[[sqlite]]\nname = \"crm\"\npaths = [\"/srv/crm.db\"]\n",
        )
        .unwrap();
        assert_eq!(
            remote.repository.unwrap(),
            std::path::PathBuf::from("s3://bucket/crm")
        );
        assert!(cfg.gc_every.is_some());
        assert_eq!(cfg.sources.len(), 2);
        assert_eq!(cfg.sources[0].policy().daily, 7);
        assert!(cfg.sources[1].policy().is_empty());
        let Source::Sqlite { paths, .. } = &cfg.sources[0] else {
            panic!()
        };
        assert!(paths[0].is_absolute() && paths[0].ends_with("app.db"));
        assert_eq!(paths[1], Path::new("/srv/auth.db"));
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let e = load_str("[[sqlite]]\nname = \"a\"\npaths = [\"a.db\"]\nkep = { last = 1 }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 4") && e.contains("kep"), "{e}");
        let e = load_str("[[sqlite]]\nname = \"a\"\npaths = \"a.db\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("sequence"), "{e}");
        let e = load_str(
            "[[sqlite]]\nname = \"a\"\npaths = [\"a.db\"]\nkeep = { within = \"soon\" }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("line 4: sqlite source \"a\": keep.within"),
            "{e}"
        );
        let e = load_str("[gc]\nevery = \"1d\"\n").unwrap_err().to_string();
        assert!(e.contains("no sources"), "{e}");
        let e = load_str(
            "[[sqlite]]\nname = \"a\"\npaths = [\"a.db\"]\n[[sqlite]]\nname = \"a\"\npaths = [\"b.db\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 5") && e.contains("used twice"), "{e}");
    }
}
