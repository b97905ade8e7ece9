//! Restoring a PostgreSQL base backup, to its end or to a point in time.
//!
//! The order matters: first the WAL the restore will need is checked in the
//! archive (a gap is reported by name before any file is written); then the
//! files go into a staging directory beside the target, each verified against
//! its blake3; then `recovery.signal` and the recovery settings; then the
//! staging directory is renamed to the target. `pg_ctl start` on the target
//! replays WAL through `rewindb wal fetch` up to the target.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use jiff::Timestamp;

use crate::commands::pitr::{ClusterArchive, RecoveryTarget, WalPlan, plan_wal};
use crate::error::{Error, Result, io_err};
use crate::id::SnapshotId;
use crate::pipeline::fetch::write_chunks;
use crate::repo::reader::BlobReader;
use crate::repo::snapshot::{FileEntry, PgBackupInfo, Snapshot};
use crate::repo::{Repository, fsutil};
use crate::time::show;
use crate::timeline::TimelineChoice;

/// Whether the restored server archives WAL (pgBackRest's names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveMode {
    /// Keep the backup's `archive_mode` and `archive_command`: the restored
    /// server takes over as the cluster and archives where it did.
    #[default]
    Preserve,
    /// `archive_mode = 'off'`: a drill or a copy beside the running cluster,
    /// which must not archive into the cluster's history.
    Off,
}

impl std::str::FromStr for ArchiveMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "preserve" => Ok(ArchiveMode::Preserve),
            "off" => Ok(ArchiveMode::Off),
            _ => Err(format!("--archive-mode {s:?}: expected off or preserve")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct PgRestoreOptions {
    pub to: PathBuf,
    pub target: RecoveryTarget,
    pub timeline: TimelineChoice,
    /// `recovery_target_action`: promote, pause or shutdown.
    pub target_action: String,
    /// The rewindb binary restore_command runs (the server's OS user must be
    /// able to run it).
    pub rewindb_path: PathBuf,
    pub repo_location: String,
    pub archive_mode: ArchiveMode,
    /// For an encrypted repository, where restore_command finds the
    /// password: (`REWINDB_PASSWORD_FILE` or `_COMMAND`, its value).
    pub password_from: Option<(&'static str, String)>,
}

/// What a PostgreSQL restore will do: decided before anything is written,
/// printed by `restore --dry-run`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PgRestorePlan {
    pub snapshot: String,
    #[serde(skip)]
    pub id: SnapshotId,
    pub to: PathBuf,
    /// `to` does not exist yet (otherwise it is an empty directory).
    pub to_is_new: bool,
    pub file_count: usize,
    pub bytes: u64,
    pub target: RecoveryTarget,
    pub wal: WalPlan,
    pub recovery_settings: Vec<String>,
    pub archive_mode: ArchiveMode,
    /// The archive_command the restored server will run when it starts (its
    /// configuration has archiving on and `--archive-mode preserve`).
    pub archives_with: Option<String>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct PgRestored {
    pub snapshot: String,
    pub to: PathBuf,
    pub files: usize,
    pub bytes: u64,
    pub timeline: u32,
    /// WAL segments checked in the archive, first and last.
    pub wal_from: String,
    pub wal_to: String,
    pub recovery_settings: Vec<String>,
    pub archives_with: Option<String>,
}

/// Decides how base backup `id` is restored into `opts.to`: the timeline,
/// the WAL recovery reads (and whether all of it is archived), the settings.
/// Writes nothing.
pub fn plan_postgres(
    repo: &Repository,
    id: SnapshotId,
    snap: &Snapshot,
    opts: &PgRestoreOptions,
) -> Result<PgRestorePlan> {
    let pg = snap
        .postgres
        .as_ref()
        .ok_or_else(|| Error::Usage(format!("snapshot {} is not a base backup", id.short())))?;
    let target_dir = std::path::absolute(&opts.to)
        .map_err(io_err(format!("resolving {}", opts.to.display())))?;
    check_target_dir(&target_dir)?;
    if let RecoveryTarget::Time(t) = &opts.target
        && *t < pg.stop_time
    {
        return Err(Error::Usage(format!(
            "{} is before base backup {} finished ({}); it cannot recover to an earlier \
             time: choose an older base backup, or omit the snapshot to let --at choose",
            show(*t),
            id.short(),
            show(pg.stop_time)
        )));
    }
    if let RecoveryTarget::Lsn(lsn) = &opts.target
        && *lsn < pg.stop_lsn
    {
        return Err(Error::Usage(format!(
            "LSN {lsn} is before the end of base backup {} ({}); choose an earlier backup or \
             a later LSN",
            id.short(),
            pg.stop_lsn
        )));
    }
    let archive = repo.wal();
    let cluster = ClusterArchive::read(&archive, pg.system_identifier, pg.wal_segment_size)?;
    let wal = plan_wal(&cluster, &archive, id, pg, &opts.target, opts.timeline)?;
    let archives_with = match opts.archive_mode {
        ArchiveMode::Off => None,
        ArchiveMode::Preserve => archive_command(repo, snap)?,
    };
    Ok(PgRestorePlan {
        snapshot: id.to_hex(),
        id,
        to_is_new: !target_dir.exists(),
        to: target_dir,
        file_count: snap.files.len(),
        bytes: snap.logical_size(),
        target: opts.target.clone(),
        recovery_settings: recovery_settings(pg, opts, wal.timeline),
        wal,
        archive_mode: opts.archive_mode,
        archives_with,
    })
}

/// Carries out a plan: the files into a staging directory beside the
/// target, each verified; the recovery settings; then the rename.
pub fn restore_postgres(
    repo: &Repository,
    snap: &Snapshot,
    plan: &PgRestorePlan,
) -> Result<PgRestored> {
    let id = plan.id;
    let pg = snap
        .postgres
        .as_ref()
        .ok_or_else(|| Error::Usage(format!("snapshot {} is not a base backup", id.short())))?;
    // The WAL first: nothing is written when recovery could not succeed.
    if let Some(missing) = &plan.wal.missing {
        return Err(Error::Usage(format!("{missing}; nothing was written")));
    }
    let target_dir = &plan.to;
    check_target_dir(target_dir)?;
    let parent = target_dir
        .parent()
        .ok_or_else(|| Error::Usage(format!("{}: no parent directory", target_dir.display())))?;
    fs::create_dir_all(parent).map_err(io_err(format!("creating {}", parent.display())))?;
    let staging = tempfile::Builder::new()
        .prefix(".rewindb-restore-")
        .tempdir_in(parent)
        .map_err(io_err(format!(
            "creating a directory in {}",
            parent.display()
        )))?;
    let root = staging.path();
    let mut bytes = 0u64;
    for dir in &pg.directories {
        let path = root.join(&dir.path);
        if !dir.path.as_os_str().is_empty() {
            fs::create_dir_all(&path).map_err(io_err(format!("creating {}", path.display())))?;
        }
    }
    let mut reader = BlobReader::new(repo)?;
    for file in &snap.files {
        bytes += restore_file(repo, &mut reader, id, root, file)?;
    }
    append_settings(root, id, &plan.recovery_settings)?;
    let signal = root.join("recovery.signal");
    fs::write(&signal, b"").map_err(io_err(format!("writing {}", signal.display())))?;
    // Modes and owners last, deepest first, so that a read-only directory
    // does not stop the writes above; owners only when run as root.
    for dir in pg.directories.iter().rev() {
        let path = root.join(&dir.path);
        fs::set_permissions(&path, fs::Permissions::from_mode(dir.mode))
            .map_err(io_err(format!("setting the mode of {}", path.display())))?;
        chown_if_root(&path, Some((dir.uid, dir.gid)))?;
        fsutil::sync_dir(&path).map_err(io_err(format!("syncing {}", path.display())))?;
    }
    let owner = pg.directories.first().map(|d| (d.uid, d.gid));
    for extra in [&signal, &root.join("postgresql.auto.conf")] {
        chown_if_root(extra, owner)?;
    }
    // rename(2) replaces an empty target directory atomically.
    let staged = staging.keep();
    if let Err(e) = fs::rename(&staged, target_dir) {
        let _ = fs::remove_dir_all(&staged);
        return Err(io_err(format!(
            "renaming the restored cluster to {}",
            target_dir.display()
        ))(e));
    }
    fsutil::sync_dir(parent).map_err(io_err(format!("syncing {}", parent.display())))?;
    Ok(PgRestored {
        snapshot: id.to_hex(),
        to: target_dir.clone(),
        files: snap.files.len(),
        bytes,
        timeline: plan.wal.timeline,
        wal_from: plan.wal.from.clone(),
        wal_to: plan.wal.to.clone(),
        recovery_settings: plan.recovery_settings.clone(),
        archives_with: plan.archives_with.clone(),
    })
}

/// The target must be missing or an empty directory: never a cluster's data.
fn check_target_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    if !dir.is_dir() {
        return Err(Error::Usage(format!(
            "{} exists and is not a directory; choose an empty or new directory",
            dir.display()
        )));
    }
    if dir.join("postmaster.pid").exists() {
        return Err(Error::Usage(format!(
            "{} holds a running (or crashed) cluster: postmaster.pid is there; rewindb never \
             restores over a cluster's data directory. Choose a new directory",
            dir.display()
        )));
    }
    let mut entries = fs::read_dir(dir).map_err(io_err(format!("listing {}", dir.display())))?;
    if entries.next().is_some() {
        return Err(Error::Usage(format!(
            "{} is not empty; restore into a new or empty directory",
            dir.display()
        )));
    }
    Ok(())
}

/// Restores one file of the base backup under `root`; returns its size.
fn restore_file(
    repo: &Repository,
    reader: &mut BlobReader<'_>,
    id: SnapshotId,
    root: &Path,
    file: &FileEntry,
) -> Result<u64> {
    let path = root.join(&file.name);
    let io = |what: &str| io_err(format!("{what} {}", path.display()));
    let ids = reader.manifest(file)?;
    let mut out = fs::File::create(&path).map_err(io("creating"))?;
    let (hash, size) = if file.size > 1 << 20 {
        write_chunks(
            repo,
            &ids,
            file.page_size.is_power_of_two(),
            &mut out,
            &path,
            false,
        )?
    } else {
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        for chunk in &ids {
            let data = reader.read(chunk)?;
            hasher.update(&data);
            size += data.len() as u64;
            out.write_all(&data).map_err(io("writing"))?;
        }
        (hasher.finalize(), size)
    };
    if size != file.size || hash.to_hex().as_str() != file.blake3 {
        return Err(Error::Verification(format!(
            "{} from base backup {} does not match what was backed up ({size} bytes, blake3 \
             {hash}; expected {} bytes, blake3 {}); nothing was restored",
            file.name,
            id.short(),
            file.size,
            file.blake3
        )));
    }
    out.set_permissions(fs::Permissions::from_mode(file.mode))
        .map_err(io("setting the mode of"))?;
    out.sync_all().map_err(io("syncing"))?;
    chown_if_root(&path, file.owner)?;
    Ok(size)
}

/// Gives `path` its recorded owner when rewindb runs as root (PostgreSQL
/// refuses a data directory it does not own); otherwise files keep the
/// restoring user as owner.
fn chown_if_root(path: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    let Some((uid, gid)) = owner else {
        return Ok(());
    };
    match std::os::unix::fs::chown(path, Some(uid), Some(gid)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(()),
        Err(e) => Err(io_err(format!("setting the owner of {}", path.display()))(
            e,
        )),
    }
}

/// Single-quotes a value for postgresql.conf.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A shell word, quoted when it needs to be.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The recovery settings written into postgresql.auto.conf.
///
/// The timeline is always written as a number, the one whose WAL was
/// checked: `'latest'` would let the server follow any newer history file
/// in the archive, a restore drill's among them.
fn recovery_settings(pg: &PgBackupInfo, opts: &PgRestoreOptions, timeline: u32) -> Vec<String> {
    let password = match &opts.password_from {
        Some((var, value)) => format!("{var}={} ", shell_word(value)),
        None => String::new(),
    };
    let command = format!(
        "{password}{} --repo {} wal fetch --system-id {} %f %p",
        shell_word(&opts.rewindb_path.display().to_string()),
        shell_word(&opts.repo_location),
        pg.system_identifier
    );
    let mut out = vec![
        format!("restore_command = {}", quote(&command)),
        format!("recovery_target_timeline = '{timeline}'"),
    ];
    if opts.archive_mode == ArchiveMode::Off {
        out.push("archive_mode = 'off'".to_string());
    }
    let target = match &opts.target {
        RecoveryTarget::EndOfWal => None,
        RecoveryTarget::Immediate => Some("recovery_target = 'immediate'".to_string()),
        RecoveryTarget::Time(t) => Some(format!(
            "recovery_target_time = {}",
            quote(&pg_timestamp(*t))
        )),
        RecoveryTarget::Lsn(l) => Some(format!("recovery_target_lsn = {}", quote(&l.to_string()))),
        RecoveryTarget::Name(n) => Some(format!("recovery_target_name = {}", quote(n))),
    };
    if let Some(target) = target {
        out.push(target);
        out.push(format!(
            "recovery_target_action = {}",
            quote(&opts.target_action)
        ));
    }
    out
}

/// The archive_command a server restored from `snap` runs, when its
/// configuration (postgresql.conf, then postgresql.auto.conf, as the backup
/// holds them) turns archiving on. `include` directives are not followed.
fn archive_command(repo: &Repository, snap: &Snapshot) -> Result<Option<String>> {
    let mut reader = BlobReader::new(repo)?;
    let mut settings: Vec<(String, String)> = Vec::new();
    for name in ["postgresql.conf", "postgresql.auto.conf"] {
        let Some(file) = snap.files.iter().find(|f| f.name == name) else {
            continue;
        };
        let mut text = Vec::new();
        for chunk in reader.manifest(file)? {
            text.extend_from_slice(&reader.read(&chunk)?);
        }
        settings.extend(conf_settings(&String::from_utf8_lossy(&text)));
    }
    let last = |key: &str| {
        settings
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.clone())
    };
    let on = last("archive_mode").is_some_and(|m| {
        matches!(
            m.to_ascii_lowercase().as_str(),
            "on" | "always" | "true" | "yes" | "1"
        )
    });
    Ok(last("archive_command").filter(|c| on && !c.is_empty()))
}

/// The `name = value` settings of a postgresql.conf text, in order.
fn conf_settings(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        let key: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
            .collect();
        if key.is_empty() {
            continue;
        }
        let rest = line[key.len()..].trim_start();
        let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
        let value = match rest.strip_prefix('\'') {
            Some(quoted) => {
                let mut v = String::new();
                let mut chars = quoted.chars().peekable();
                while let Some(c) = chars.next() {
                    match c {
                        '\'' if chars.peek() == Some(&'\'') => {
                            chars.next();
                            v.push('\'');
                        }
                        '\'' => break,
                        '\\' => v.extend(chars.next()),
                        c => v.push(c),
                    }
                }
                v
            }
            None => rest
                .split(|c: char| c.is_whitespace() || c == '#')
                .next()
                .unwrap_or_default()
                .to_string(),
        };
        out.push((key, value));
    }
    out
}

/// A timestamp as PostgreSQL reads it, in UTC to the microsecond (its
/// precision), rounded down so that the target never moves past TIME.
pub fn pg_timestamp(t: Timestamp) -> String {
    let micros = t.as_microsecond();
    let t = Timestamp::from_microsecond(micros).expect("in range");
    format!(
        "{}+00",
        t.to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .strftime("%Y-%m-%d %H:%M:%S%.6f")
    )
}

fn append_settings(root: &Path, id: SnapshotId, settings: &[String]) -> Result<()> {
    let path = root.join("postgresql.auto.conf");
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_err(format!("opening {}", path.display())))?;
    let mut text = format!(
        "\n# Recovery settings written by rewindb restore of base backup {} at {}\n",
        id.short(),
        Timestamp::now()
    );
    for s in settings {
        text.push_str(s);
        text.push('\n');
    }
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io_err(format!("writing {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_for_postgres_round_down_to_microseconds() {
        let t: Timestamp = "2026-11-23T14:05:00.123456789Z".parse().unwrap();
        assert_eq!(pg_timestamp(t), "2026-11-23 14:05:00.123456+00");
    }

    #[test]
    fn archive_settings_are_read_as_postgres_reads_them() {
        let conf = "#archive_mode = off\narchive_mode = on  # comment\n\
                    archive_command = '/usr/bin/rewindb --repo ''/my repo'' wal push %p'\n\
                    shared_buffers 32MB\n";
        assert_eq!(
            conf_settings(conf),
            vec![
                ("archive_mode".to_string(), "on".to_string()),
                (
                    "archive_command".to_string(),
                    "/usr/bin/rewindb --repo '/my repo' wal push %p".to_string()
                ),
                ("shared_buffers".to_string(), "32MB".to_string()),
            ]
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("it's"), "'it''s'");
        assert_eq!(shell_word("/usr/bin/rewindb"), "/usr/bin/rewindb");
        assert_eq!(shell_word("/my repo/x"), "'/my repo/x'");
        assert_eq!(shell_word("a'b"), r"'a'\''b'");
    }
}
