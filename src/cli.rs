//! Command-line interface: parse arguments, open the repository, call a command, print.
//!
//! Parsing happens in two steps: clap checks what was typed, then [`run`]
//! resolves paths and opens the repository. Only this module prints; library
//! functions return values and typed errors. [`main`] turns any error into one
//! message on stderr and the exit code from [`crate::error::exit`].

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::json;

use crate::commands::backup::{BackupOptions, backup_sqlite, validate_sqlite_sources};
use crate::commands::check::{CheckOptions, check, short_ids};
use crate::commands::maintenance::{repair_index, stats};
use crate::commands::restore::{RestoreOptions, Verify, plan_restore, restore, select_snapshot};
use crate::error::{Error, RepoError, exit};
use crate::repo::lock::LockMode;
use crate::repo::snapshot::Snapshot;
use crate::repo::{OpenOptions, Repository};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failure (I/O error, a source that could not be read)
  2  usage error: bad arguments, a missing or non-database file, an unknown snapshot,
     a malformed time, a path that is not a repository
  3  the repository is locked by another rewindb process (see --lock-wait)
  4  verification failed: check found damage, or restored data did not verify

Repository: --repo, else $REWINDB_REPOSITORY, else $XDG_DATA_HOME/rewindb/repository
(~/.local/share/rewindb/repository), which `backup` creates on first use.";

#[derive(Parser, Debug)]
#[command(
    name = "rewindb",
    version,
    about = "Backups of SQLite databases into a deduplicated, verified repository",
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// Repository directory.
    #[arg(long, global = true, env = "REWINDB_REPOSITORY", value_name = "DIR")]
    pub repo: Option<PathBuf>,
    /// Seconds to wait for another rewindb process to release the repository.
    #[arg(long, global = true, default_value_t = 60, value_name = "SECONDS")]
    pub lock_wait: u64,
    /// Print nothing but errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new, empty repository.
    Init,
    /// Back up a source into a new snapshot.
    Backup {
        #[command(subcommand)]
        source: BackupSource,
    },
    /// List snapshots, oldest first.
    Snapshots {
        #[arg(long)]
        json: bool,
    },
    /// Restore a snapshot: written to a temporary file, verified, then renamed.
    Restore {
        /// Snapshot id (or a unique prefix of it), or `latest`.
        snapshot: Option<String>,
        /// Restore the newest snapshot at or before TIME ("2026-11-23 14:05:00+00";
        /// without an offset, local time).
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// Only consider snapshots of this source (database path or file name).
        #[arg(long, value_name = "SOURCE")]
        source: Option<String>,
        /// Restore only this file of the snapshot.
        #[arg(long, value_name = "NAME")]
        file: Option<String>,
        /// Destination file (one database) or directory (several).
        #[arg(long, value_name = "PATH")]
        to: Option<PathBuf>,
        /// Replace existing files (the original path when --to is not given); the
        /// replaced file and its -wal/-journal are kept as a safety copy.
        #[arg(long)]
        in_place: bool,
        /// Checks before the rename: full (blake3 + PRAGMA integrity_check),
        /// quick (blake3 + PRAGMA quick_check) or hash (blake3 only).
        #[arg(long, value_enum, default_value_t = Verify::Full)]
        verify: Verify,
        #[arg(long)]
        json: bool,
    },
    /// Verify the repository's structure; with --read-data, every chunk.
    Check {
        /// Read and re-hash every chunk of every pack.
        #[arg(long)]
        read_data: bool,
        #[arg(long)]
        json: bool,
    },
    /// Stored size, logical size and dedup ratio.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Repair repository metadata.
    Repair {
        #[command(subcommand)]
        what: RepairTarget,
    },
}

#[derive(Subcommand, Debug)]
pub enum BackupSource {
    /// Consistent snapshots of live SQLite databases (WAL or rollback journal).
    Sqlite {
        /// Database files; several go into one snapshot.
        #[arg(required = true, value_name = "DB")]
        dbs: Vec<PathBuf>,
        /// Free text stored with the snapshot.
        #[arg(long)]
        label: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum RepairTarget {
    /// Rebuild the chunk index from the packs' own entry tables.
    Index,
}

/// Parses the command line, runs it, and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    exit::OK
                }
                _ => exit::USAGE,
            };
        }
    };
    init_logging(&cli);
    match run(&cli) {
        Ok(()) => exit::OK,
        Err(CliError::Command(e)) => {
            eprintln!("rewindb: error: {e}");
            e.exit_code()
        }
        Err(CliError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => exit::OK,
        Err(CliError::Output(e)) => {
            eprintln!("rewindb: error writing output: {e}");
            exit::FAILURE
        }
    }
}

fn init_logging(cli: &Cli) {
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_target(false)
        .try_init();
}

/// A command failed, or printing its result did.
pub enum CliError {
    Command(Error),
    Output(io::Error),
}

impl<E: Into<Error>> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError::Command(e.into())
    }
}

fn out(r: io::Result<()>) -> Result<(), CliError> {
    r.map_err(CliError::Output)
}

/// The repository path and whether it is the built-in default.
fn repo_path(cli: &Cli) -> (PathBuf, bool) {
    if let Some(p) = &cli.repo {
        return (p.clone(), false);
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    (data.join("rewindb").join("repository"), true)
}

fn open(cli: &Cli, lock: Option<LockMode>) -> Result<Repository, RepoError> {
    let (path, _) = repo_path(cli);
    Repository::open(
        &path,
        OpenOptions {
            lock,
            lock_wait: Duration::from_secs(cli.lock_wait),
        },
    )
}

pub fn run(cli: &Cli) -> Result<(), CliError> {
    let stdout = io::stdout();
    let mut w = stdout.lock();
    match &cli.command {
        Command::Init => {
            let (path, _) = repo_path(cli);
            Repository::init(&path)?;
            if !cli.quiet {
                out(writeln!(w, "created repository at {}", path.display()))?;
            }
        }
        Command::Backup {
            source: BackupSource::Sqlite { dbs, label, json },
        } => {
            // Validate every input before the repository is touched.
            let dbs = validate_sqlite_sources(dbs)?;
            let (path, is_default) = repo_path(cli);
            if is_default && !path.join("config.json").exists() {
                Repository::init(&path)?;
                if !cli.quiet {
                    eprintln!("created repository at {}", path.display());
                }
            }
            let repo = open(cli, Some(LockMode::Exclusive))?;
            let opts = BackupOptions {
                label: label.clone(),
            };
            let (id, snap) = backup_sqlite(&repo, &dbs, &opts)?;
            if *json {
                out(writeln!(w, "{}", snapshot_json(&id.to_hex(), &snap)))?;
            } else if !cli.quiet {
                let s = snap.stats;
                out(writeln!(
                    w,
                    "snapshot {} saved: {} database{}, {} read, {} of {} chunks new ({} as \
                     deltas; {} before compression), {} added to the repository, {:.2}s",
                    id.short(),
                    snap.files.len(),
                    if snap.files.len() == 1 { "" } else { "s" },
                    human_bytes(s.bytes_read),
                    s.chunks_new,
                    s.chunks,
                    s.chunks_delta,
                    human_bytes(s.bytes_new),
                    human_bytes(s.bytes_added),
                    s.duration_secs
                ))?;
            }
        }
        Command::Snapshots { json } => {
            let repo = open(cli, None)?;
            let list = repo.snapshots()?;
            for (id, why) in &list.damaged {
                eprintln!(
                    "rewindb: warning: snapshot {id} is unreadable ({why}); run `rewindb check`"
                );
            }
            if *json {
                let arr: Vec<_> = list
                    .ok
                    .iter()
                    .map(|(id, s)| snapshot_json(&id.to_hex(), s))
                    .collect();
                out(writeln!(w, "{}", serde_json::Value::Array(arr)))?;
            } else if !cli.quiet {
                out(print_snapshots(&mut w, &list.ok))?;
            }
        }
        Command::Restore {
            snapshot,
            at,
            source,
            file,
            to,
            in_place,
            verify,
            json,
        } => {
            let at = match at {
                Some(t) => Some(
                    crate::time::parse_time(t, &jiff::tz::TimeZone::system())
                        .map_err(Error::Usage)?,
                ),
                None => None,
            };
            let repo = open(cli, Some(LockMode::Shared))?;
            let list = repo.snapshots()?;
            let (id, snap) = select_snapshot(&list, snapshot.as_deref(), at, source.as_deref())?;
            let plan = plan_restore(
                *id,
                snap,
                &RestoreOptions {
                    to: to.clone(),
                    in_place: *in_place,
                    file: file.clone(),
                    verify: *verify,
                },
            )?;
            let done = restore(&repo, &plan)?;
            if *json {
                let v = json!({ "snapshot": id.to_hex(), "files": done });
                out(writeln!(w, "{v}"))?;
            } else if !cli.quiet {
                for f in &done {
                    out(writeln!(
                        w,
                        "restored {} from snapshot {} ({}) to {} ({}, verified)",
                        f.name,
                        id.short(),
                        snap.time,
                        f.dest.display(),
                        human_bytes(f.size)
                    ))?;
                    if let Some(s) = &f.safety_copy {
                        out(writeln!(
                            w,
                            "the replaced file was kept as {}; delete it once you are satisfied",
                            s.display()
                        ))?;
                    }
                }
            }
        }
        Command::Check { read_data, json } => {
            let repo = open(cli, Some(LockMode::Shared))?;
            let report = check(
                &repo,
                &CheckOptions {
                    read_data: *read_data,
                },
            )?;
            if *json {
                out(writeln!(w, "{}", serde_json::to_string(&report).unwrap()))?;
            } else if !cli.quiet || !report.problems.is_empty() {
                out(writeln!(
                    w,
                    "checked {} snapshots, {} packs, {} chunks referenced{}",
                    report.snapshots,
                    report.packs,
                    report.chunks_referenced,
                    if *read_data {
                        format!(
                            ", {} chunks read ({})",
                            report.chunks_read,
                            human_bytes(report.bytes_read)
                        )
                    } else {
                        String::new()
                    }
                ))?;
                if report.orphan_packs > 0 {
                    out(writeln!(
                        w,
                        "{} pack(s) are not in the index (left by an interrupted run; harmless)",
                        report.orphan_packs
                    ))?;
                }
                for p in &report.problems {
                    out(writeln!(w, "problem: {}", p.what))?;
                    if !p.affected_snapshots.is_empty() {
                        out(writeln!(
                            w,
                            "  affects snapshots: {}",
                            short_ids(&p.affected_snapshots)
                        ))?;
                    }
                }
            }
            if !report.problems.is_empty() {
                let affected = report.affected();
                return Err(Error::Verification(format!(
                    "check found {} problem(s); snapshots affected: {}",
                    report.problems.len(),
                    if affected.is_empty() {
                        "none".to_string()
                    } else {
                        short_ids(&affected)
                    }
                ))
                .into());
            }
        }
        Command::Stats { json } => {
            let repo = open(cli, Some(LockMode::Shared))?;
            let s = stats(&repo)?;
            if *json {
                out(writeln!(w, "{}", serde_json::to_string(&s).unwrap()))?;
            } else if !cli.quiet {
                out(writeln!(
                    w,
                    "snapshots:      {}\npacks:          {}\nchunks:         {}\n\
                     stored size:    {}\nunique data:    {} (uncompressed)\n\
                     logical size:   {}\ndedup ratio:    {:.2}x (logical / stored)",
                    s.snapshots,
                    s.packs,
                    s.chunks,
                    human_bytes(s.stored_bytes),
                    human_bytes(s.unique_bytes),
                    human_bytes(s.logical_bytes),
                    s.dedup_ratio
                ))?;
            }
        }
        Command::Repair {
            what: RepairTarget::Index,
        } => {
            let mut repo = open(cli, Some(LockMode::Exclusive))?;
            let report = repair_index(&mut repo)?;
            for (pack, why) in &report.packs_skipped {
                eprintln!("rewindb: warning: pack {pack} skipped: {why}");
            }
            if !cli.quiet {
                out(writeln!(
                    w,
                    "index rebuilt: {} packs, {} chunks",
                    report.packs_indexed, report.chunks_indexed
                ))?;
                if report.deltas_dropped > 0 {
                    out(writeln!(
                        w,
                        "{} delta chunk(s) left out: their base is in no readable pack; \
                         the next backup stores those pages again",
                        report.deltas_dropped
                    ))?;
                }
            }
        }
    }
    Ok(())
}

fn snapshot_json(id: &str, s: &Snapshot) -> serde_json::Value {
    json!({
        "id": id,
        "short_id": &id[..8],
        "time": s.time.to_string(),
        "source": s.source,
        "sources": s.sources(),
        "label": s.label,
        "hostname": s.hostname,
        "logical_size": s.logical_size(),
        "bytes_added": s.stats.bytes_added,
        "files": s.files.iter().map(|f| json!({
            "name": f.name,
            "source_path": f.source_path,
            "size": f.size,
            "blake3": f.blake3,
            "page_size": f.page_size,
            "journal_mode": f.journal_mode,
        })).collect::<Vec<_>>(),
        "stats": s.stats,
    })
}

fn print_snapshots(
    w: &mut impl Write,
    list: &[(crate::id::SnapshotId, Snapshot)],
) -> io::Result<()> {
    if list.is_empty() {
        return writeln!(w, "no snapshots");
    }
    writeln!(
        w,
        "{:<8}  {:<20}  {:<10}  {:>10}  {:>10}  SOURCE",
        "ID", "TIME (UTC)", "LABEL", "SIZE", "ADDED"
    )?;
    for (id, s) in list {
        writeln!(
            w,
            "{:<8}  {:<20}  {:<10}  {:>10}  {:>10}  {}",
            id.short(),
            s.time.strftime("%Y-%m-%d %H:%M:%S").to_string(),
            s.label.as_deref().unwrap_or("-"),
            human_bytes(s.logical_size()),
            human_bytes(s.stats.bytes_added),
            s.sources().join(", ")
        )?;
    }
    writeln!(w, "{} snapshot(s)", list.len())
}

/// 1536 → "1.5 KiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
