//! Command-line interface: parse arguments, open the repository, call the
//! library, print.
//!
//! Parsing happens in two steps: clap checks what was typed (`args`), then
//! [`run`] turns it into the library's typed requests (times, LSNs, spans
//! parsed), resolves the repository (`repository`) and makes one library
//! call per command; its report goes through `emit`, the one place that
//! decides between `--json`, text and `--quiet`. Only `cli/` prints: text
//! reports in `show` (listings), `report` (actions) and `restore`.
//! [`main`] turns any error into one message on stderr and the exit code from
//! [`crate::error::exit`].

use std::io::{self, Write};
use std::time::Duration;

use clap::Parser;

mod args;
mod audit;
mod keys;
mod man;
mod report;
mod repository;
mod restore;
mod serve;
pub(crate) mod show;

use man::render_man;
use repository::{create_default_repository, open, repo_path, run_repository};

pub use args::{BackupSource, CheckTarget, Cli, Command, KeyAction, RepairTarget, WalAction};

use crate::commands::Operation;
use crate::commands::backup::{BackupOptions, backup_sqlite, validate_sqlite_sources};
use crate::commands::check::{CheckOptions, check, short_ids};
use crate::commands::forget::{ForgetOptions, forget};
use crate::commands::gc::{GcOptions, gc};
use crate::commands::maintenance::{repair_index, stats};
use crate::commands::pg_backup::{PgBackupOptions, backup_postgres};
use crate::commands::pitr::archive_view;
use crate::commands::stream::{StreamOptions, backup_stream, default_dump_name, pg_dump_command};
use crate::error::{Error, RepoError, exit};
use crate::pipeline::store::settle_index;
use crate::repo::snapshot::SourceKind;
use crate::repo::{OpenOptions, Repository};
use crate::retention::Policy;
use crate::selection::is_of_source;
use show::{human_bytes, print_forget, print_gc, print_run, print_status, snapshot_json};

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
    let result = run(&cli);
    audit::record(&cli, &result);
    match result {
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

/// Prints a command's report: as JSON with `--json`, else as text unless
/// `--quiet`. The one place that decides between the three.
fn emit<W: Write>(
    w: &mut W,
    cli: &Cli,
    json: bool,
    value: &impl serde::Serialize,
    text: impl FnOnce(&mut W) -> io::Result<()>,
) -> Result<(), CliError> {
    if json {
        let v = serde_json::to_string(value).expect("reports serialise");
        out(writeln!(w, "{v}"))
    } else if !cli.quiet {
        out(text(w))
    } else {
        Ok(())
    }
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
    let mut repo = open(cli, Operation::Backup.lock())?;
    let (id, snap) = backup_stream(&repo, opts)?;
    report_backup(w, cli, json, &mut repo, id, &snap)
}

/// Prints a new snapshot (text or `--json`), then settles the index: after
/// the snapshot is reported, it is saved whatever happens there.
fn report_backup(
    w: &mut impl Write,
    cli: &Cli,
    json: bool,
    repo: &mut Repository,
    id: crate::id::SnapshotId,
    snap: &crate::repo::snapshot::Snapshot,
) -> Result<(), CliError> {
    audit::note(id.to_hex());
    let value = snapshot_json(&id.to_hex(), snap);
    emit(w, cli, json, &value, |w| report::print_backup(w, id, snap))?;
    settle_index(repo);
    Ok(())
}

pub fn run(cli: &Cli) -> Result<(), CliError> {
    let stdout = io::stdout();
    let mut w = stdout.lock();
    match &cli.command {
        Command::Init {
            config,
            if_missing,
            no_encryption,
            keys_from,
        } => {
            let path = match config {
                Some(file) => run_repository(&crate::config::load(file)?, cli),
                None => repo_path(cli).0,
            };
            if *if_missing && Repository::exists_at(&path) {
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
            let (new, kind) = keys::new_repository(&path, *no_encryption, keys_from.as_deref())?;
            Repository::init(&path, new)?;
            if !cli.quiet {
                out(writeln!(
                    w,
                    "created {kind} repository at {}",
                    path.display()
                ))?;
            }
        }
        Command::Key { action } => keys::run(cli, &mut w, action)?,
        Command::Backup {
            source: BackupSource::Sqlite { dbs, label, json },
        } => {
            // Validate every input before the repository is touched.
            let dbs = validate_sqlite_sources(dbs)?;
            create_default_repository(cli)?;
            let mut repo = open(cli, Operation::Backup.lock())?;
            let opts = BackupOptions {
                label: label.clone(),
                name: None,
                recorded_as: None,
            };
            let (id, snap) = backup_sqlite(&repo, &dbs, &opts)?;
            report_backup(&mut w, cli, *json, &mut repo, id, &snap)?;
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
            let mut repo = open(cli, Operation::Backup.lock())?;
            let opts = PgBackupOptions {
                pgdata,
                conninfo: conn
                    .clone()
                    .unwrap_or_else(crate::source::postgres::default_conninfo),
                label: label.clone(),
                name: None,
                wal_wait: Duration::from_secs(*wal_wait),
            };
            let (id, snap) = backup_postgres(&repo, &opts)?;
            report_backup(&mut w, cli, *json, &mut repo, id, &snap)?;
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
            let conninfo = conn
                .clone()
                .unwrap_or_else(crate::source::postgres::default_conninfo);
            let opts = StreamOptions {
                name: name.clone().unwrap_or_else(|| default_dump_name(&conninfo)),
                command: pg_dump_command(pg_dump, &conninfo, extra),
                kind: SourceKind::PgDump,
                label: label.clone(),
                recorded_as: None,
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
                recorded_as: None,
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
            let repo = open(cli, Operation::List.lock())?;
            let mut list = repo.snapshots()?;
            for (id, why) in &list.damaged {
                eprintln!(
                    "rewindb: warning: snapshot {id} is unreadable ({why}); run `rewindb check`"
                );
            }
            // Timelines and windows from every snapshot, before filtering.
            let view = archive_view(&repo.wal(), &list.ok)?;
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
        Command::Restore { .. } => restore::restore(cli, &mut w)?,
        Command::Check {
            target: Some(CheckTarget::Postgres { conn, wait, json }),
            ..
        } => {
            let repo = open(cli, Operation::List.lock())?;
            let conninfo = conn
                .clone()
                .unwrap_or_else(crate::source::postgres::default_conninfo);
            let report = crate::commands::pg_check::check_postgres(
                &repo,
                &conninfo,
                Duration::from_secs(*wait),
            )?;
            match *json {
                true => emit(&mut w, cli, true, &report, |_| Ok(()))?,
                // Problems are printed even with --quiet.
                false => out(report::print_pg_check(&mut w, &report, cli.quiet))?,
            }
            if !report.ok() {
                eprintln!(
                    "rewindb: error: WAL archiving into {} does not work ({}); see above",
                    repo.location(),
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
            read_data_subset,
            json,
        } => {
            let subset = read_data_subset
                .as_deref()
                .map(crate::commands::check::Subset::parse)
                .transpose()
                .map_err(Error::Usage)?;
            let read_data = &(*read_data || subset.is_some());
            let repo = open(cli, Operation::Read.lock())?;
            let report = check(
                &repo,
                &CheckOptions {
                    read_data: *read_data,
                    subset,
                },
            )?;
            match *json {
                true => emit(&mut w, cli, true, &report, |_| Ok(()))?,
                // Problems are printed even with --quiet.
                false if !cli.quiet || !report.problems.is_empty() => {
                    out(report::print_check(&mut w, &report, *read_data))?
                }
                false => {}
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
            let repo = open(cli, Operation::Read.lock())?;
            let s = stats(&repo)?;
            emit(&mut w, cli, *json, &s, |w| report::print_stats(w, &s))?;
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
            let op = match *dry_run {
                true => Operation::Read,
                false => Operation::Maintain,
            };
            let repo = open(cli, op.lock())?;
            let plans = forget(&repo, &opts)?;
            emit(&mut w, cli, *json, &plans, |w| {
                print_forget(w, &plans, *dry_run)
            })?;
        }
        Command::Protect { ids } | Command::Unprotect { ids } => {
            let on = matches!(cli.command, Command::Protect { .. });
            let repo = open(cli, Operation::Maintain.lock())?;
            let changed = crate::commands::forget::protect(&repo, ids, on)?;
            let verb = if on {
                "protected"
            } else {
                "no longer protected"
            };
            emit(&mut w, cli, false, &(), |w| {
                changed
                    .iter()
                    .try_for_each(|id| writeln!(w, "snapshot {} {verb}", id.short()))
            })?;
        }
        Command::Copy {
            to,
            snapshots,
            json,
        } => {
            let src = open(cli, Operation::Read.lock())?;
            // The destination's own password, when it has another one.
            let to_password =
                crate::crypto::password::from_file_variable("REWINDB_TO_PASSWORD_FILE")
                    .map_err(RepoError::Password)?;
            let dst = Repository::open_cached_with(
                to,
                cli.cache_dir.as_deref(),
                OpenOptions {
                    lock: Operation::Backup.lock(),
                    lock_wait: Duration::from_secs(cli.lock_wait),
                },
                match &to_password {
                    Some(p) => crate::repo::PasswordSource::Given(p),
                    None => crate::repo::PasswordSource::Environment,
                },
            )?;
            let report = crate::commands::copy::copy(&src, &dst, snapshots)?;
            emit(&mut w, cli, *json, &report, |w| {
                writeln!(
                    w,
                    "copied {} snapshot(s) to {} ({} already there): {} chunks, {} bytes, {} WAL files sent",
                    report.copied.len(),
                    dst.location(),
                    report.already_there,
                    report.chunks_sent,
                    report.bytes_sent,
                    report.wal_files_sent
                )
            })?;
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
            let mut repo = open(cli, Operation::Maintain.lock())?;
            let report = gc(&mut repo, &opts)?;
            emit(&mut w, cli, *json, &report, |w| print_gc(w, &report))?;
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
                    lock: Operation::Maintain.lock(),
                    lock_wait: Duration::from_secs(cli.lock_wait),
                },
            )?;
            audit::opened(&repo);
            let report = crate::commands::run::run(&mut repo, &cfg, jiff::Timestamp::now());
            audit::note(
                report
                    .sources
                    .iter()
                    .map(|s| match (&s.snapshot, &s.error) {
                        (_, Some(e)) => format!("{}: failed: {e}", s.name),
                        (Some(id), None) => format!("{}: {}", s.name, id.short()),
                        (None, None) => format!("{}: ok", s.name),
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            );
            crate::alerts::after_run(&repo, &cfg, &report);
            match *json {
                true => emit(&mut w, cli, true, &report, |_| Ok(()))?,
                // Failures go to stderr even with --quiet: what cron mails.
                false => out(print_run(&mut w, &mut io::stderr(), &report, cli.quiet))?,
            }
            let code = report.exit_code();
            if code != exit::OK {
                return Err(CliError::Quiet(code));
            }
        }
        Command::Serve { config, action } => {
            serve::run(cli, &mut w, config.as_deref(), action.as_ref())?
        }
        Command::Audit { limit, json } => {
            let repo = open(cli, Operation::List.lock())?;
            let (mut entries, damaged) = repo.audit_log()?;
            for d in &damaged {
                eprintln!("rewindb: warning: audit log entry unreadable: {d}");
            }
            if let Some(n) = limit {
                entries.drain(..entries.len().saturating_sub(*n));
            }
            emit(&mut w, cli, *json, &entries, |w| audit::print(w, &entries))?;
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
                        lock: Operation::List.lock(),
                        lock_wait: Duration::ZERO,
                    },
                )?,
                None => open(cli, Operation::List.lock())?,
            };
            let configured = cfg.map(|c| c.sources).unwrap_or_default();
            let report = crate::commands::status::status(
                &repo,
                &configured,
                max_age,
                jiff::Timestamp::now(),
            )?;
            emit(&mut w, cli, *json, &report, |w| print_status(w, &report))?;
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
            let mut repo = open(cli, Operation::Maintain.lock())?;
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
            let mut repo = open(cli, Operation::Maintain.lock())?;
            let report = repair_index(&mut repo)?;
            for (pack, why) in &report.packs_skipped {
                eprintln!("rewindb: warning: pack {pack} skipped: {why}");
            }
            emit(&mut w, cli, false, &(), |w| {
                report::print_repair(w, &report)
            })?;
        }
    }
    Ok(())
}
