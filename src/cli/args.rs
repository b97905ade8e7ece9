//! The command line as clap reads it: every subcommand, flag and help text,
//! and the exit codes `--help` and the man page list. Definitions only;
//! [`super::run`] turns them into library calls.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failure (I/O error, a source that could not be read, PostgreSQL unreachable or failing
     a query, WAL not archived within --wal-wait; `wal fetch`: the file is not archived;
     `wal push`: a different file is archived under that name; `check postgres`: archiving
     does not work): running again can help once the cause is fixed
  2  usage error: bad arguments, a missing or non-database file, an unknown snapshot,
     a malformed time, a path that is not a repository, no password for an encrypted
     repository (or one given for a plain repository)
  3  the repository is locked by another rewindb process (see --lock-wait)
  4  verification failed: check found damage, or restored data did not verify
  5  `status --max-age`: some source's newest snapshot is older than that
  6  the password opens none of the encrypted repository's keys
`run` exits with the highest code among its failing sources (1 if only gc failed); the
other sources still run.

Repository: --repo, else $REWINDB_REPOSITORY, else $XDG_DATA_HOME/rewindb/repository
(~/.local/share/rewindb/repository). `backup sqlite`, `pg-dump` and `command` run from a
terminal create that default on first use and say so; from cron or a script they never do:
`rewindb init` first.

Password of an encrypted repository: $REWINDB_PASSWORD_FILE (its first line), else
$REWINDB_PASSWORD, else $REWINDB_PASSWORD_COMMAND (its output), else a prompt on a terminal.
Opening one derives its key with Argon2id; the derived key is cached for
$REWINDB_KEY_CACHE_SECS (default 3600, 0: never) under the cache directory.";

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
    /// Where the index of a remote (s3://) repository is cached (default
    /// $REWINDB_CACHE_DIR, else $XDG_CACHE_HOME/rewindb, else ~/.cache/rewindb).
    #[arg(long, global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
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
pub enum ServeAction {
    /// Print a new random API token once, and the [[serve.token]] lines
    /// (with its blake3, never the token) to paste into the config.
    NewToken {
        /// The token's name, shown in the audit log.
        #[arg(long)]
        name: String,
        /// Comma-separated: read, backup, restore, admin.
        #[arg(long, value_delimiter = ',', default_value = "read")]
        scopes: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeyAction {
    /// List the key objects (id, created, host, user; * marks the one in use).
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Add a password (a new key object for the same master keys).
    Add,
    /// Remove a key object by id (not the last one, not the one in use).
    Remove {
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Change the password in use: add a key for the new one, then remove
    /// the current one.
    Passwd,
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
        /// Create a plain (unencrypted) repository. Without it, a repository
        /// is encrypted with the password from REWINDB_PASSWORD_FILE,
        /// REWINDB_PASSWORD or REWINDB_PASSWORD_COMMAND, or asked on a
        /// terminal; a local one given no password at all is made plain (with
        /// a notice), one in a bucket is refused.
        #[arg(long, conflicts_with = "keys_from")]
        no_encryption: bool,
        /// Encrypt with the master keys of this (encrypted) repository, so
        /// that `copy` between the two moves only what is missing (ids are
        /// keyed: repositories with their own keys share none). The same
        /// password opens both unless REWINDB_NEW_PASSWORD_FILE gives another.
        #[arg(long, value_name = "REPO")]
        keys_from: Option<PathBuf>,
    },
    /// Manage the passwords of an encrypted repository: each is a key object
    /// holding the master keys; the password given in REWINDB_PASSWORD* opens
    /// the repository, new ones come from REWINDB_NEW_PASSWORD_FILE or a
    /// prompt.
    Key {
        #[command(subcommand)]
        action: KeyAction,
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
        /// Checks before the rename: hash (every chunk's blake3 and the whole
        /// file's, recorded at backup: the bytes are exactly those backed up),
        /// quick (and PRAGMA quick_check) or full (and PRAGMA integrity_check,
        /// for restore drills: it also proves the database was sound when read).
        #[arg(long, default_value = "hash", value_parser = ["full", "quick", "hash"])]
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
        /// Read only part of the data: N/M (part N of M, fixed per pack, so
        /// 1/M … M/M read everything once) or P% (chosen afresh each run).
        #[arg(long, value_name = "N/M|P%", conflicts_with = "read_data")]
        read_data_subset: Option<String>,
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
    /// Copy snapshots into another repository (a local one to a bucket, or
    /// back): only the chunks it lacks are sent, snapshots keep their ids and
    /// times, and the WAL of copied base backups and protect markers come
    /// along. A copy cut off is completed by running it again.
    Copy {
        /// The destination repository (a directory or s3://BUCKET/PREFIX).
        #[arg(long, value_name = "REPO")]
        to: std::path::PathBuf,
        /// Snapshots to copy (ids or `latest`); all when none is given.
        snapshots: Vec<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
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
    /// Serve the repository and the sources of a config over HTTP: a JSON
    /// API, Prometheus metrics and a web console (docs/api.md). Listens on
    /// 127.0.0.1:8077 unless the config's [serve] section says otherwise.
    #[command(args_conflicts_with_subcommands = true)]
    Serve {
        /// The `run` config, with a [serve] section and its tokens.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: Option<ServeAction>,
    },
    /// The audit log: who changed the repository or restored from it, what,
    /// when, from where, and how it ended. Newest last.
    Audit {
        /// Only the newest N entries.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
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
