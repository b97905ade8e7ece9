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

mod show;

use crate::commands::backup::{
    BackupOptions, backup_sqlite, settle_index, validate_sqlite_sources,
};
use crate::commands::check::{CheckOptions, check, short_ids};
use crate::commands::forget::{ForgetOptions, forget};
use crate::commands::gc::{GcOptions, gc};
use crate::commands::maintenance::{repair_index, stats};
use crate::commands::pg_backup::{PgBackupOptions, backup_postgres, describe, parse_lsn};
use crate::commands::pitr::{RecoveryTarget, archive_view};
use crate::commands::restore_plan::{self, RestoreRequest};
use crate::commands::stream::{StreamOptions, backup_stream, default_dump_name, pg_dump_command};
use crate::error::{Error, RepoError, exit};
use crate::repo::lock::LockMode;
use crate::repo::snapshot::SourceKind;
use crate::repo::wal::WalArchive;
use crate::repo::{OpenOptions, Repository};
use crate::retention::Policy;
use crate::selection::{Selector, is_of_source};
use show::{human_bytes, print_forget, print_gc, print_run, print_status, snapshot_json};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failure (I/O error, a source that could not be read, PostgreSQL unreachable or failing
     a query, WAL not archived within --wal-wait; `wal fetch`: the file is not archived;
     `wal push`: a different file is archived under that name; `check postgres`: archiving
     does not work): running again can help once the cause is fixed
  2  usage error: bad arguments, a missing or non-database file, an unknown snapshot,
     a malformed time, a path that is not a repository
  3  the repository is locked by another rewindb process (see --lock-wait)
  4  verification failed: check found damage, or restored data did not verify
  5  `status --max-age`: some source's newest snapshot is older than that
`run` exits with the highest code among its failing sources (1 if only gc failed); the
other sources still run.

Repository: --repo, else $REWINDB_REPOSITORY, else $XDG_DATA_HOME/rewindb/repository
(~/.local/share/rewindb/repository). `backup sqlite`, `pg-dump` and `command` run from a
terminal create that default on first use and say so; from cron or a script they never do:
`rewindb init` first.";

#[derive(Parser, Debug)]
#[command(
    name = "rewindb",
    version,
    about = "Backups of SQLite databases and PostgreSQL clusters into a deduplicated, verified repository",
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
    /// Create a new, empty repository (in an empty or missing directory).
    Init {
        /// The `run` config whose repository to create (`rewindb init --config
        /// /etc/rewindb.toml`, then `rewindb run --config /etc/rewindb.toml`).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Succeed without a change when the repository already exists (for
        /// provisioning scripts).
        #[arg(long)]
        if_missing: bool,
    },
    /// Back up a source into a new snapshot.
    Backup {
        #[command(subcommand)]
        source: BackupSource,
    },
    /// List snapshots, oldest first, and each cluster's timelines and PITR
    /// windows.
    Snapshots {
        /// Only snapshots of this source (as `restore --source` takes it).
        #[arg(long, value_name = "SOURCE")]
        source: Option<String>,
        /// Only snapshots with this label.
        #[arg(long, value_name = "LABEL")]
        label: Option<String>,
        /// Only snapshots taken at or after TIME.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Restore a snapshot: written to a temporary file, verified, then renamed.
    /// With several sources in the repository, name one with --source.
    Restore {
        /// Snapshot id (or a unique prefix of it), or `latest`.
        snapshot: Option<String>,
        /// Restore the newest snapshot at or before TIME ("2026-11-23 14:05:00+00";
        /// without an offset, local time; a time to the second includes that
        /// whole second, as `snapshots` prints it).
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// The source to restore: a SQLite database's path or file name (that
        /// one database), a cluster's data directory or system identifier, a
        /// stream's name, or a source's name in the `run` config.
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
        #[arg(long, default_value = "full", value_parser = ["full", "quick", "hash"])]
        verify: String,
        /// Write the restored file to standard output (a command's output
        /// snapshot: `rewindb restore latest --source NAME --stdout | psql`).
        #[arg(long, conflicts_with_all = ["to", "in_place"])]
        stdout: bool,
        /// PostgreSQL: recover only to the end of the base backup.
        #[arg(long, conflicts_with_all = ["at", "lsn", "target_name"])]
        immediate: bool,
        /// PostgreSQL: recover up to this LSN (X/Y).
        #[arg(long, value_name = "LSN", conflicts_with_all = ["at", "target_name"])]
        lsn: Option<String>,
        /// PostgreSQL: recover up to this restore point (pg_create_restore_point).
        #[arg(long, value_name = "NAME", conflicts_with = "at")]
        target_name: Option<String>,
        /// PostgreSQL: the timeline recovery follows: N, current (the
        /// backup's), or latest (the highest descending from it). Default: the
        /// one timeline the target lies on; when the archive holds two
        /// histories there, restore refuses and lists them.
        #[arg(long, value_name = "TIMELINE")]
        timeline: Option<String>,
        /// PostgreSQL: whether the restored server archives WAL. preserve keeps
        /// the backup's archive settings (it takes over as the cluster); off
        /// for a restore drill or a copy beside the running cluster.
        #[arg(long, default_value = "preserve", value_parser = ["preserve", "off"])]
        archive_mode: String,
        /// PostgreSQL: what the server does at the target.
        #[arg(long, value_parser = ["promote", "pause", "shutdown"], default_value = "promote")]
        target_action: String,
        /// PostgreSQL: the rewindb binary the restored server's restore_command
        /// runs (default: this one); its OS user must be able to run it.
        #[arg(long, value_name = "PATH")]
        rewindb_path: Option<PathBuf>,
        /// Print what would be restored, where, and (PostgreSQL) the timeline
        /// and WAL recovery reads; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Verify the repository's structure; with --read-data, every chunk.
    /// `check postgres` tests WAL archiving end to end.
    #[command(args_conflicts_with_subcommands = true)]
    Check {
        #[command(subcommand)]
        target: Option<CheckTarget>,
        /// Read and re-hash every chunk of every pack.
        #[arg(long)]
        read_data: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stored size, logical size and dedup ratio.
    Stats {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove snapshots by a retention policy, applied to each source (a set
    /// of databases, a cluster, a stream) on its own, or by id. The newest
    /// snapshot of a source and protected snapshots are always kept. Data goes
    /// only with `gc`.
    Forget {
        /// Snapshots to remove (ids or unique prefixes) instead of a policy.
        #[arg(value_name = "ID")]
        ids: Vec<String>,
        /// Keep the N newest snapshots.
        #[arg(long, value_name = "N", default_value_t = 0)]
        keep_last: u32,
        /// Keep the newest snapshot of each of the N most recent hours that have one (UTC).
        #[arg(long, value_name = "N", default_value_t = 0)]
        keep_hourly: u32,
        /// ... of each of the N most recent days (UTC).
        #[arg(long, value_name = "N", default_value_t = 0)]
        keep_daily: u32,
        /// ... of each of the N most recent ISO weeks (UTC).
        #[arg(long, value_name = "N", default_value_t = 0)]
        keep_weekly: u32,
        /// ... of each of the N most recent months (UTC).
        #[arg(long, value_name = "N", default_value_t = 0)]
        keep_monthly: u32,
        /// ... of each of the N most recent years (UTC).
        #[arg(long, value_name = "N", default_value_t = 0)]
        keep_yearly: u32,
        /// Keep every snapshot taken within DURATION of the source's newest
        /// ("7d", "36h", "2w", "1y 6mo").
        #[arg(long, value_name = "DURATION")]
        keep_within: Option<String>,
        /// Keep snapshots whose label (`backup --label`) is LABEL (repeatable).
        #[arg(long, value_name = "LABEL")]
        keep_label: Vec<String>,
        /// Apply the policy only to this source (database path or name, data
        /// directory, stream name).
        #[arg(long, value_name = "SOURCE")]
        source: Option<String>,
        /// Print what would be removed, and why each survivor is kept; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Protect snapshots from every retention policy.
    Protect {
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
    /// Lift the protection of snapshots.
    Unprotect {
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
    /// Reclaim space: delete packs no snapshot needs, rewrite packs that are
    /// mostly garbage, and delete PostgreSQL WAL older than every retained base
    /// backup. Waits for running backups (it takes the repository lock).
    Gc {
        /// Report what would be reclaimed; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Rewrite packs whose live share is below this fraction (0: never
        /// rewrite; 1: rewrite every pack with any garbage). Packs with nothing
        /// live are always deleted.
        #[arg(long, value_name = "FRACTION", default_value_t = crate::commands::gc::DEFAULT_REPACK_THRESHOLD)]
        repack_threshold: f64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Back up every source of a config file, apply each one's retention,
    /// and run gc when due; one line per source. For cron.
    Run {
        /// The TOML file naming the repository, the sources and their retention.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Per source: the newest snapshot and its age, a cluster's PITR window,
    /// and the repository's size. Takes no lock.
    Status {
        /// Exit 5 when a source's newest snapshot is older than this ("26h", "2d").
        #[arg(long, value_name = "DURATION")]
        max_age: Option<String>,
        /// The `run` config: its repository, and its sources by name (one never
        /// backed up counts as stale).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (`rewindb completions bash >
    /// /etc/bash_completion.d/rewindb`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page, generated from this command line (`rewindb man |
    /// man -l -`); with --dir, write rewindb.1 and a page per subcommand.
    Man {
        /// Write every page (rewindb.1, rewindb-restore.1, ...) into DIR.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Repair repository metadata.
    Repair {
        #[command(subcommand)]
        what: RepairTarget,
    },
    /// PostgreSQL WAL archiving: archive_command and restore_command.
    Wal {
        #[command(subcommand)]
        action: WalAction,
    },
}

#[derive(Subcommand, Debug)]
pub enum CheckTarget {
    /// Prove that the server's WAL reaches this repository: checks
    /// archive_mode, archive_command and permissions, then switches WAL and
    /// waits for the segment. Exits 1 naming what is wrong.
    Postgres {
        /// Connection string ("host=/var/run/postgresql port=5432 user=postgres").
        #[arg(long, value_name = "CONNINFO", env = "REWINDB_PG_CONN")]
        conn: Option<String>,
        /// Seconds to wait for the switched segment.
        #[arg(long, default_value_t = 60, value_name = "SECONDS")]
        wait: u64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum WalAction {
    /// Archive one WAL file: `archive_command = 'rewindb --repo DIR wal push %p'`.
    /// Durable before it exits 0; an identical file already archived is success,
    /// a different one an error.
    Push {
        /// The file, as PostgreSQL passes it (pg_wal/NAME, from the data directory).
        path: PathBuf,
        /// The cluster's system identifier, for history files pushed from outside
        /// a data directory (otherwise read from global/pg_control).
        #[arg(long, value_name = "ID")]
        system_id: Option<u64>,
    },
    /// Fetch one archived WAL file: `restore_command = 'rewindb --repo DIR wal
    /// fetch %f %p'`. Exits 1 when the file is not archived.
    Fetch {
        /// WAL file name (%f).
        name: String,
        /// Where to write it (%p).
        dest: PathBuf,
        #[arg(long, value_name = "ID")]
        system_id: Option<u64>,
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
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// A base backup of a running PostgreSQL cluster (15 or newer), with WAL
    /// archiving through `rewindb wal push`.
    Postgres {
        /// The cluster's data directory (read directly: run where the server runs).
        #[arg(long, value_name = "DIR")]
        pgdata: PathBuf,
        /// Connection string ("host=/var/run/postgresql port=5432 user=postgres").
        #[arg(long, value_name = "CONNINFO", env = "REWINDB_PG_CONN")]
        conn: Option<String>,
        /// Free text stored with the snapshot.
        #[arg(long)]
        label: Option<String>,
        /// Seconds to wait for the server to archive the WAL the backup needs.
        #[arg(long, default_value_t = 120, value_name = "SECONDS")]
        wal_wait: u64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// A logical backup: pg_dump's plain SQL output, streamed into a snapshot.
    /// No snapshot is saved unless pg_dump exits 0 with a complete dump.
    PgDump {
        /// Connection string of the database to dump.
        #[arg(long, value_name = "CONNINFO", env = "REWINDB_PG_CONN")]
        conn: Option<String>,
        /// Source name (default: pg_dump-DBNAME); later dumps with the same
        /// name are stored as changes to this one.
        #[arg(long)]
        name: Option<String>,
        /// The pg_dump program.
        #[arg(long, default_value = "pg_dump", value_name = "PATH")]
        pg_dump: String,
        /// Free text stored with the snapshot.
        #[arg(long)]
        label: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// More pg_dump arguments, after --.
        #[arg(last = true, value_name = "PG_DUMP_ARGS")]
        extra: Vec<String>,
    },
    /// Any command's standard output as a snapshot (`-- CMD ARGS...`). No
    /// snapshot is saved unless the command exits 0.
    Command {
        /// Source name; later runs with the same name are stored as changes.
        #[arg(long, required = true)]
        name: String,
        /// Free text stored with the snapshot.
        #[arg(long)]
        label: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// The command and its arguments, after --.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum RepairTarget {
    /// Rebuild the chunk index from the packs' own entry tables.
    Index,
    /// Give back the index file's free space (left by copy-on-write commits).
    CompactIndex,
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
    if !cli.quiet && io::IsTerminal::is_terminal(&io::stderr()) {
        crate::progress::enable();
    }
    match run(&cli) {
        Ok(()) => exit::OK,
        // `restore --stdout | head`: the reader left; nothing went wrong here.
        Err(CliError::Command(Error::Io { source, .. }))
            if source.kind() == io::ErrorKind::BrokenPipe =>
        {
            exit::OK
        }
        Err(CliError::Command(e)) => {
            eprintln!("rewindb: error: {e}");
            e.exit_code()
        }
        Err(CliError::Quiet(code)) => code,
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
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .with_writer(io::stderr)
        .with_target(false)
        .try_init();
}

/// A command failed, or printing its result did.
pub enum CliError {
    Command(Error),
    Output(io::Error),
    /// Already reported; exit with this code.
    Quiet(i32),
}

impl<E: Into<Error>> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError::Command(e.into())
    }
}

fn out(r: io::Result<()>) -> Result<(), CliError> {
    r.map_err(CliError::Output)
}

/// `backup pg-dump` and `backup command`: run, store, print.
fn stream_backup(
    cli: &Cli,
    w: &mut impl Write,
    opts: &StreamOptions,
    json: bool,
) -> Result<(), CliError> {
    crate::commands::stream::check_command(&opts.command)?;
    create_default_repository(cli)?;
    let mut repo = open(cli, Some(LockMode::Exclusive))?;
    let (id, snap) = backup_stream(&repo, opts)?;
    if json {
        out(writeln!(w, "{}", snapshot_json(&id.to_hex(), &snap)))?;
    } else if !cli.quiet {
        let s = snap.stats;
        out(writeln!(
            w,
            "snapshot {} saved: {} ({}), {} of {} chunks new ({} as deltas), {} added to the \
             repository, {:.2}s",
            id.short(),
            opts.name,
            human_bytes(s.bytes_read),
            s.chunks_new,
            s.chunks,
            s.chunks_delta,
            human_bytes(s.bytes_added),
            s.duration_secs
        ))?;
    }
    // After the snapshot is reported: it is saved whatever happens here.
    settle_index(&mut repo);
    Ok(())
}

/// The connection string used when `--conn` is not given: libpq's
/// environment variables where set, else the local server's default socket
/// as the `postgres` user.
pub fn default_conninfo() -> String {
    let var = |name: &str, default: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_string())
    };
    format!(
        "host={} port={} user={} dbname={}",
        var("PGHOST", "/var/run/postgresql"),
        var("PGPORT", "5432"),
        var("PGUSER", "postgres"),
        var("PGDATABASE", "postgres")
    )
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

/// Creates the default repository on a backup's first use, only when run
/// from a terminal (and says so): from cron or a script, a forgotten
/// `--repo` must fail loudly rather than fill a home directory unnoticed.
fn create_default_repository(cli: &Cli) -> Result<(), CliError> {
    let (path, is_default) = repo_path(cli);
    if !is_default || path.join("config.json").exists() {
        return Ok(());
    }
    if !io::IsTerminal::is_terminal(&io::stdin()) {
        return Err(no_repository(&path).into());
    }
    Repository::init(&path)?;
    eprintln!(
        "rewindb: created the default repository at {} (set --repo or REWINDB_REPOSITORY to \
         use another)",
        path.display()
    );
    Ok(())
}

/// The error for a command that needs a repository when none is configured
/// and the default does not exist.
fn no_repository(default: &std::path::Path) -> Error {
    Error::Usage(format!(
        "no repository: neither --repo nor REWINDB_REPOSITORY names one, and the default {} \
         is not a repository yet. Create one with `rewindb init` (or `rewindb --repo DIR \
         init`), or name an existing one with --repo DIR or REWINDB_REPOSITORY",
        default.display()
    ))
}

fn open(cli: &Cli, lock: Option<LockMode>) -> Result<Repository, Error> {
    let (path, is_default) = repo_path(cli);
    if is_default && !path.join("config.json").exists() {
        return Err(no_repository(&path));
    }
    Ok(Repository::open(
        &path,
        OpenOptions {
            lock,
            lock_wait: Duration::from_secs(cli.lock_wait),
        },
    )?)
}

pub fn run(cli: &Cli) -> Result<(), CliError> {
    let stdout = io::stdout();
    let mut w = stdout.lock();
    match &cli.command {
        Command::Init { config, if_missing } => {
            let path = match config {
                Some(file) => run_repository(&crate::config::load(file)?, cli),
                None => repo_path(cli).0,
            };
            if *if_missing && path.join("config.json").is_file() {
                Repository::open(
                    &path,
                    OpenOptions {
                        lock: None,
                        lock_wait: Duration::ZERO,
                    },
                )?;
                if !cli.quiet {
                    out(writeln!(
                        w,
                        "repository at {} already exists",
                        path.display()
                    ))?;
                }
                return Ok(());
            }
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
            create_default_repository(cli)?;
            let mut repo = open(cli, Some(LockMode::Exclusive))?;
            let opts = BackupOptions {
                label: label.clone(),
                name: None,
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
            settle_index(&mut repo);
        }
        Command::Backup {
            source:
                BackupSource::Postgres {
                    pgdata,
                    conn,
                    label,
                    wal_wait,
                    json,
                },
        } => {
            let pgdata = crate::commands::pg_backup::validate_pgdata(pgdata)?;
            let mut repo = open(cli, Some(LockMode::Exclusive))?;
            let opts = PgBackupOptions {
                pgdata,
                conninfo: conn.clone().unwrap_or_else(default_conninfo),
                label: label.clone(),
                name: None,
                wal_wait: Duration::from_secs(*wal_wait),
            };
            let (id, snap) = backup_postgres(&repo, &opts)?;
            if *json {
                out(writeln!(w, "{}", snapshot_json(&id.to_hex(), &snap)))?;
            } else if !cli.quiet {
                let s = snap.stats;
                let pg = snap.postgres.as_ref().expect("a base backup");
                out(writeln!(
                    w,
                    "base backup {} saved: {} files, {} read, {} of {} chunks new ({} as deltas), \
                     {} added to the repository, {}, WAL {} to {} archived, {:.2}s",
                    id.short(),
                    snap.files.len(),
                    human_bytes(s.bytes_read),
                    s.chunks_new,
                    s.chunks,
                    s.chunks_delta,
                    human_bytes(s.bytes_added),
                    describe(pg),
                    pg.start_wal,
                    pg.stop_wal,
                    s.duration_secs
                ))?;
            }
            settle_index(&mut repo);
        }
        Command::Backup {
            source:
                BackupSource::PgDump {
                    conn,
                    name,
                    pg_dump,
                    label,
                    json,
                    extra,
                },
        } => {
            let conninfo = conn.clone().unwrap_or_else(default_conninfo);
            let opts = StreamOptions {
                name: name.clone().unwrap_or_else(|| default_dump_name(&conninfo)),
                command: pg_dump_command(pg_dump, &conninfo, extra),
                kind: SourceKind::PgDump,
                label: label.clone(),
            };
            stream_backup(cli, &mut w, &opts, *json)?;
        }
        Command::Backup {
            source:
                BackupSource::Command {
                    name,
                    label,
                    json,
                    command,
                },
        } => {
            let opts = StreamOptions {
                name: name.clone(),
                command: command.clone(),
                kind: SourceKind::Command,
                label: label.clone(),
            };
            stream_backup(cli, &mut w, &opts, *json)?;
        }
        Command::Wal {
            action: WalAction::Push { path, system_id },
        } => {
            let (root, _) = repo_path(cli);
            let (name, pushed) = crate::commands::wal::push(&root, path, *system_id)?;
            tracing::info!("{name}: {pushed:?}");
        }
        Command::Wal {
            action:
                WalAction::Fetch {
                    name,
                    dest,
                    system_id,
                },
        } => {
            let (root, _) = repo_path(cli);
            match crate::commands::wal::fetch(&root, name, dest, *system_id) {
                // PostgreSQL asks for files that may not exist (the next
                // timeline's history, the segment after the last): a short
                // line in its log, not an alarm.
                Err(Error::Repo(RepoError::WalMissing { name, detail })) => {
                    eprintln!("rewindb: wal fetch: {name} is not archived ({detail})");
                    return Err(CliError::Quiet(exit::FAILURE));
                }
                other => {
                    other?;
                }
            }
        }
        Command::Snapshots {
            source,
            label,
            since,
            json,
        } => {
            let since = since
                .as_deref()
                .map(|t| crate::time::parse_time(t, &jiff::tz::TimeZone::system()))
                .transpose()
                .map_err(Error::Usage)?;
            let repo = open(cli, None)?;
            let mut list = repo.snapshots()?;
            for (id, why) in &list.damaged {
                eprintln!(
                    "rewindb: warning: snapshot {id} is unreadable ({why}); run `rewindb check`"
                );
            }
            // Timelines and windows from every snapshot, before filtering.
            let view = archive_view(&WalArchive::new(repo.root()), &list.ok)?;
            list.ok.retain(|(_, s)| {
                source.as_deref().is_none_or(|src| is_of_source(s, src))
                    && label.as_ref().is_none_or(|l| s.label.as_ref() == Some(l))
                    && since.is_none_or(|t| s.time >= t)
            });
            if let Some(src) = source
                && list.ok.is_empty()
            {
                eprintln!("rewindb: no snapshot of source {src:?} matches");
            }
            let protected = repo.protected()?;
            if *json {
                out(writeln!(
                    w,
                    "{}",
                    show::snapshots_json(&list.ok, &protected, &view)
                ))?;
            } else if !cli.quiet {
                out(show::print_snapshots(&mut w, &list.ok, &protected))?;
                out(show::print_archive(&mut w, &view))?;
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
            immediate,
            lsn,
            target_name,
            target_action,
            rewindb_path,
            timeline,
            archive_mode,
            stdout,
            dry_run,
            json,
        } => {
            let tz = jiff::tz::TimeZone::system();
            let at_exact = at
                .as_deref()
                .map(|t| crate::time::parse_time(t, &tz))
                .transpose()
                .map_err(Error::Usage)?;
            let at = at
                .as_deref()
                .map(|t| crate::time::parse_through(t, &tz))
                .transpose()
                .map_err(Error::Usage)?;
            let lsn = lsn.as_deref().map(parse_lsn).transpose()?;
            let target = match (lsn, target_name, immediate) {
                (Some(l), _, _) => Some(RecoveryTarget::Lsn(l)),
                (_, Some(n), _) => Some(RecoveryTarget::Name(n.clone())),
                (_, _, true) => Some(RecoveryTarget::Immediate),
                _ => None,
            };
            let rewindb_path = match rewindb_path {
                Some(p) => std::path::absolute(p)
                    .map_err(crate::error::io_err(format!("resolving {}", p.display())))?,
                None => std::env::current_exe()
                    .map_err(crate::error::io_err("finding this program's path"))?,
            };
            // --immediate and --target-name without a snapshot: the newest
            // base backup (an LSN chooses its own).
            let snapshot = snapshot.clone().or_else(|| {
                (target.is_some() && at.is_none() && lsn.is_none()).then(|| "latest".to_string())
            });
            let req = RestoreRequest {
                selector: Selector {
                    snapshot,
                    at,
                    lsn,
                    source: source.clone(),
                    file: file.clone(),
                    base_backups_only: target.is_some(),
                },
                to: to.clone(),
                in_place: *in_place,
                verify: verify.parse().map_err(Error::Usage)?,
                stdout: *stdout,
                target,
                at_exact,
                timeline: timeline
                    .as_deref()
                    .map(str::parse)
                    .transpose()
                    .map_err(Error::Usage)?
                    .unwrap_or_default(),
                target_action: target_action.clone(),
                rewindb_path,
                archive_mode: archive_mode.parse().map_err(Error::Usage)?,
            };
            let repo = open(cli, Some(LockMode::Shared))?;
            let list = repo.snapshots()?;
            let plan = restore_plan::plan(&repo, &list, &req)?;
            if *dry_run {
                match *json {
                    true => out(writeln!(w, "{}", show::plan_json(&plan)))?,
                    false => out(show::print_plan(&mut w, &plan))?,
                }
                // The real run would stop at a WAL gap: so does its rehearsal.
                if let restore_plan::Plan::Postgres { plan, .. } = &plan
                    && let Some(missing) = &plan.wal.missing
                {
                    return Err(Error::Usage(format!(
                        "{missing}; a restore now would write nothing"
                    ))
                    .into());
                }
                return Ok(());
            }
            let done = restore_plan::execute(&repo, &plan, &mut io::stdout().lock())?;
            match (*json, &done) {
                // The restored bytes went to stdout: nothing may follow them.
                (_, restore_plan::Restored::Stdout { .. }) => {}
                (true, _) => out(writeln!(w, "{}", show::restored_json(&plan, &done)))?,
                (false, _) if !cli.quiet => out(show::print_restored(&mut w, &plan, &done))?,
                _ => {}
            }
        }
        Command::Check {
            target: Some(CheckTarget::Postgres { conn, wait, json }),
            ..
        } => {
            let repo = open(cli, None)?;
            let conninfo = conn.clone().unwrap_or_else(default_conninfo);
            let report = crate::commands::pg_check::check_postgres(
                &repo,
                &conninfo,
                Duration::from_secs(*wait),
            )?;
            if *json {
                out(writeln!(w, "{}", serde_json::to_string(&report).unwrap()))?;
            } else {
                for item in &report.items {
                    if !cli.quiet || !item.ok {
                        let mark = if item.ok { "ok     " } else { "PROBLEM" };
                        out(writeln!(w, "{mark}  {:<16} {}", item.what, item.detail))?;
                    }
                }
            }
            if !report.ok() {
                eprintln!(
                    "rewindb: error: WAL archiving into {} does not work ({}); see above",
                    repo.root().display(),
                    report
                        .items
                        .iter()
                        .filter(|i| !i.ok)
                        .map(|i| i.what.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                return Err(CliError::Quiet(exit::FAILURE));
            }
        }
        Command::Check {
            target: None,
            read_data,
            json,
        } => {
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
                    "checked {} snapshots, {} packs, {} live chunks ({} referenced by snapshots, \
                     the rest delta bases they need), {} WAL files{}",
                    report.snapshots,
                    report.packs,
                    report.chunks_live,
                    report.chunks_referenced,
                    report.wal_files,
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
                out(show::print_archive(&mut w, &report.archive))?;
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
        Command::Forget {
            ids,
            keep_last,
            keep_hourly,
            keep_daily,
            keep_weekly,
            keep_monthly,
            keep_yearly,
            keep_within,
            keep_label,
            source,
            dry_run,
            json,
        } => {
            let within = keep_within
                .as_deref()
                .map(crate::retention::parse_span)
                .transpose()
                .map_err(Error::Usage)?;
            let opts = ForgetOptions {
                policy: Policy {
                    last: *keep_last,
                    hourly: *keep_hourly,
                    daily: *keep_daily,
                    weekly: *keep_weekly,
                    monthly: *keep_monthly,
                    yearly: *keep_yearly,
                    within,
                    keep_labels: keep_label.clone(),
                },
                ids: ids.clone(),
                source: source.clone(),
                group: None,
                dry_run: *dry_run,
            };
            opts.validate()?;
            let lock = if *dry_run {
                LockMode::Shared
            } else {
                LockMode::Exclusive
            };
            let repo = open(cli, Some(lock))?;
            let plans = forget(&repo, &opts)?;
            if *json {
                out(writeln!(w, "{}", serde_json::to_string(&plans).unwrap()))?;
            } else if !cli.quiet {
                out(print_forget(&mut w, &plans, *dry_run))?;
            }
        }
        Command::Protect { ids } | Command::Unprotect { ids } => {
            let on = matches!(cli.command, Command::Protect { .. });
            let repo = open(cli, Some(LockMode::Exclusive))?;
            let list = repo.snapshots()?;
            let found: Vec<crate::id::SnapshotId> = ids
                .iter()
                .map(|spec| list.find(spec).map(|(id, _)| *id))
                .collect::<Result<_, _>>()?;
            for id in &found {
                repo.set_protected(id, on)?;
                if !cli.quiet {
                    let verb = if on {
                        "protected"
                    } else {
                        "no longer protected"
                    };
                    out(writeln!(w, "snapshot {} {verb}", id.short()))?;
                }
            }
        }
        Command::Gc {
            dry_run,
            repack_threshold,
            json,
        } => {
            let opts = GcOptions {
                dry_run: *dry_run,
                repack_threshold: *repack_threshold,
            };
            opts.validate()?;
            let mut repo = open(cli, Some(LockMode::Exclusive))?;
            let report = gc(&mut repo, &opts)?;
            if *json {
                out(writeln!(w, "{}", serde_json::to_string(&report).unwrap()))?;
            } else if !cli.quiet {
                out(print_gc(&mut w, &report))?;
            }
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            // Generated into memory: clap_complete panics when its writer
            // fails (`rewindb completions bash | head -1`).
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut cmd, "rewindb", &mut script);
            out(w.write_all(&script))?;
        }
        Command::Man { dir } => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match dir {
                None => out(render_man(cmd, &mut w))?,
                Some(dir) => {
                    let io =
                        crate::error::io_err(format!("writing man pages to {}", dir.display()));
                    std::fs::create_dir_all(dir).map_err(io)?;
                    // Every subcommand's page (rewindb-restore.1, ...), which
                    // the top page's SEE ALSO names, then the top page itself.
                    clap_mangen::generate_to(cmd.clone(), dir).map_err(crate::error::io_err(
                        format!("writing man pages to {}", dir.display()),
                    ))?;
                    let top = dir.join("rewindb.1");
                    let mut f = std::fs::File::create(&top)
                        .map_err(crate::error::io_err(format!("writing {}", top.display())))?;
                    render_man(cmd, &mut f)
                        .map_err(crate::error::io_err(format!("writing {}", top.display())))?;
                    if !cli.quiet {
                        out(writeln!(w, "man pages written to {}", dir.display()))?;
                    }
                }
            }
        }
        Command::Run { config, json } => {
            let cfg = crate::config::load(config)?;
            let path = run_repository(&cfg, cli);
            let mut repo = Repository::open(
                &path,
                OpenOptions {
                    lock: Some(LockMode::Exclusive),
                    lock_wait: Duration::from_secs(cli.lock_wait),
                },
            )?;
            let report = crate::commands::run::run(&mut repo, &cfg, jiff::Timestamp::now());
            if *json {
                out(writeln!(w, "{}", serde_json::to_string(&report).unwrap()))?;
            } else {
                out(print_run(&mut w, &mut io::stderr(), &report, cli.quiet))?;
            }
            let code = report.exit_code();
            if code != exit::OK {
                return Err(CliError::Quiet(code));
            }
        }
        Command::Status {
            max_age,
            config,
            json,
        } => {
            let max_age = max_age
                .as_deref()
                .map(crate::retention::parse_span)
                .transpose()
                .map_err(Error::Usage)?;
            let cfg = config.as_deref().map(crate::config::load).transpose()?;
            let repo = match &cfg {
                Some(cfg) => Repository::open(
                    &run_repository(cfg, cli),
                    OpenOptions {
                        lock: None,
                        lock_wait: Duration::ZERO,
                    },
                )?,
                None => open(cli, None)?,
            };
            let configured = cfg.map(|c| c.sources).unwrap_or_default();
            let report = crate::commands::status::status(
                &repo,
                &configured,
                max_age,
                jiff::Timestamp::now(),
            )?;
            if *json {
                out(writeln!(w, "{}", serde_json::to_string(&report).unwrap()))?;
            } else if !cli.quiet {
                out(print_status(&mut w, &report))?;
            }
            let stale: Vec<&str> = report
                .stale()
                .map(|s| s.name.as_deref().unwrap_or(&s.source))
                .collect();
            if !stale.is_empty() {
                eprintln!(
                    "rewindb: stale: the newest snapshot of {} is older than {}",
                    stale.join(", "),
                    max_age.map(|s| format!("{s:#}")).unwrap_or_default()
                );
                return Err(CliError::Quiet(exit::STALE));
            }
            if report.sources.is_empty() && !cli.quiet {
                eprintln!("rewindb: the repository has no snapshots yet");
            }
        }
        Command::Repair {
            what: RepairTarget::CompactIndex,
        } => {
            let mut repo = open(cli, Some(LockMode::Exclusive))?;
            let started = std::time::Instant::now();
            match repo.compact_index(0.0)? {
                Some((before, after)) if !cli.quiet => out(writeln!(
                    w,
                    "index compacted: {} -> {} in {:.2}s",
                    human_bytes(before),
                    human_bytes(after),
                    started.elapsed().as_secs_f64()
                ))?,
                _ => {}
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

/// The top man page: clap_mangen's sections, with the exit codes as an
/// EXIT STATUS section whose lines keep their breaks (as EXTRA, roff would
/// fill them into one paragraph).
fn render_man(cmd: clap::Command, w: &mut dyn Write) -> io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    man.render_subcommands_section(w)?;
    let mut roff = roff::Roff::default();
    roff.control("SH", ["EXIT STATUS"]).control("nf", []);
    for line in EXIT_CODES.lines() {
        roff.text([roff::roman(line)]);
    }
    roff.control("fi", []);
    roff.to_writer(w)?;
    man.render_version_section(w)
}

/// The repository a `run` uses: the config's, unless `--repo` (or the
/// environment) names another one.
fn run_repository(cfg: &crate::config::Loaded, cli: &Cli) -> PathBuf {
    crate::commands::run::repository_for(cfg, cli.repo.as_deref())
        .unwrap_or_else(|| repo_path(cli).0)
}
