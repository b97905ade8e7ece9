//! Restoring a PostgreSQL base backup, to its end or to a point in time.
//!
//! The order matters: first the WAL the restore will need is checked in the
//! archive (a gap is reported by name before any file is written); then the
//! files go into a staging directory beside the target, each verified against
//! its blake3; then `recovery.signal` and the recovery settings; then the
//! staging directory is renamed to the target. `pg_ctl start` on the target
//! replays WAL through `rewindb wal fetch` up to the target.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use jiff::Timestamp;

use crate::commands::restore::write_chunks;
use crate::error::{Error, Result, io_err};
use crate::id::SnapshotId;
use crate::repo::reader::BlobReader;
use crate::repo::snapshot::{FileEntry, PgBackupInfo, Snapshot};
use crate::repo::wal::{ArchivedHeader, WalArchive, WalKind, WalName};
use crate::repo::{Repository, SnapshotList, fsutil};
use crate::source::postgres::Lsn;

/// Where recovery stops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// Replay all archived WAL (no target).
    EndOfWal,
    /// Stop as soon as the backup is consistent (`recovery_target = 'immediate'`).
    Immediate,
    Time(Timestamp),
    Lsn(Lsn),
    /// A restore point made with `pg_create_restore_point(NAME)`.
    Name(String),
}

/// Which timeline recovery follows (`recovery_target_timeline`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TimelineChoice {
    /// The newest timeline in the archive that descends from the backup's.
    #[default]
    Latest,
    /// The backup's own timeline.
    Current,
    Id(u32),
}

impl std::str::FromStr for TimelineChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "latest" => Ok(TimelineChoice::Latest),
            "current" => Ok(TimelineChoice::Current),
            n => n.parse().map(TimelineChoice::Id).map_err(|_| {
                format!("--timeline {s:?}: expected latest, current or a timeline number")
            }),
        }
    }
}

impl TimelineChoice {
    fn setting(self) -> String {
        match self {
            TimelineChoice::Latest => "'latest'".into(),
            TimelineChoice::Current => "'current'".into(),
            TimelineChoice::Id(n) => format!("'{n}'"),
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
    pub repo_root: PathBuf,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct PgRestored {
    pub snapshot: String,
    pub to: PathBuf,
    pub files: usize,
    pub bytes: u64,
    /// WAL segments checked in the archive, first and last.
    pub wal_from: String,
    pub wal_to: String,
    pub recovery_settings: Vec<String>,
}

/// Restores base backup `id` into `opts.to`, set up to recover to the target.
pub fn restore_postgres(
    repo: &Repository,
    id: SnapshotId,
    snap: &Snapshot,
    opts: &PgRestoreOptions,
) -> Result<PgRestored> {
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
            "{t} is before base backup {} finished ({}); it cannot recover to an earlier \
             time: choose an older base backup, or omit the snapshot to let --at choose",
            id.short(),
            pg.stop_time
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
    // The WAL first: nothing is written when recovery could not succeed.
    let archive = WalArchive::new(repo.root());
    let names = archive.list(pg.system_identifier)?;
    let (wal_from, wal_to) = check_wal(&archive, &names, pg, &opts.target, opts.timeline)?;
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
    let settings = recovery_settings(pg, opts);
    append_settings(root, id, &settings)?;
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
    if let Err(e) = fs::rename(&staged, &target_dir) {
        let _ = fs::remove_dir_all(&staged);
        return Err(io_err(format!(
            "renaming the restored cluster to {}",
            target_dir.display()
        ))(e));
    }
    fsutil::sync_dir(parent).map_err(io_err(format!("syncing {}", parent.display())))?;
    Ok(PgRestored {
        snapshot: id.to_hex(),
        to: target_dir,
        files: snap.files.len(),
        bytes,
        wal_from: wal_from.to_string(),
        wal_to: wal_to.to_string(),
        recovery_settings: settings,
    })
}

/// The newest base backup that ended at or before `lsn` (of `source`, a data
/// directory, when given).
pub fn select_by_lsn<'a>(
    list: &'a SnapshotList,
    lsn: Lsn,
    source: Option<&str>,
) -> Result<&'a (SnapshotId, Snapshot)> {
    list.ok
        .iter()
        .rev()
        .filter(|(_, s)| source.is_none_or(|src| s.sources().iter().any(|p| p == src)))
        .find(|(_, s)| s.postgres.as_ref().is_some_and(|p| p.stop_lsn <= lsn))
        .ok_or_else(|| {
            Error::Usage(format!(
                "no base backup ended at or before LSN {lsn}; list them with `rewindb snapshots`"
            ))
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
fn recovery_settings(pg: &PgBackupInfo, opts: &PgRestoreOptions) -> Vec<String> {
    let command = format!(
        "{} --repo {} wal fetch --system-id {} %f %p",
        shell_word(&opts.rewindb_path.display().to_string()),
        shell_word(&opts.repo_root.display().to_string()),
        pg.system_identifier
    );
    let mut out = vec![
        format!("restore_command = {}", quote(&command)),
        format!("recovery_target_timeline = {}", opts.timeline.setting()),
    ];
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

/// A timeline's history: (timeline, first segment number on it), oldest first.
type Lineage = Vec<(u32, u64)>;

/// The timeline recovery will follow, with where each of its ancestors hands
/// over: the backup's own (`current`), a given one, or (`latest`) the newest
/// in the archive that descends from the backup's.
fn target_lineage(
    archive: &WalArchive,
    pg: &PgBackupInfo,
    names: &[WalName],
    choice: TimelineChoice,
) -> Result<Lineage> {
    let seg = pg.wal_segment_size;
    let mut best: Lineage = vec![(pg.timeline, 0)];
    let wanted = match choice {
        TimelineChoice::Current => return Ok(best),
        TimelineChoice::Id(n) if n == pg.timeline => return Ok(best),
        TimelineChoice::Id(n) => Some(n),
        TimelineChoice::Latest => None,
    };
    for name in names
        .iter()
        .filter(|n| n.kind == WalKind::History && wanted.is_none_or(|w| n.timeline == w))
    {
        if name.timeline <= best.last().map_or(0, |l| l.0) {
            continue;
        }
        let Some(path) = archive.locate(pg.system_identifier, name) else {
            continue;
        };
        let text = String::from_utf8_lossy(&archive.read_file(&path, name)?).into_owned();
        // Lines: parent timeline, switch LSN, reason.
        let mut lineage: Lineage = Vec::new();
        let mut begin = 0u64;
        for line in text.lines() {
            let mut fields = line.split_whitespace();
            let (Some(tli), Some(lsn)) = (fields.next(), fields.next()) else {
                continue;
            };
            let (Ok(tli), Ok(lsn)) = (tli.parse::<u32>(), lsn.parse::<Lsn>()) else {
                continue;
            };
            lineage.push((tli, begin));
            begin = lsn.0 / seg;
        }
        lineage.push((name.timeline, begin));
        // Usable when the backup's timeline is an ancestor and the switch
        // away from it comes after the backup's start.
        let from_backup = lineage.iter().position(|(t, _)| *t == pg.timeline);
        let start = pg.start_lsn.0 / seg;
        if let Some(i) = from_backup
            && lineage.get(i + 1).is_none_or(|(_, b)| *b >= start)
        {
            best = lineage;
        }
    }
    if let Some(n) = wanted
        && best.last().map(|l| l.0) != Some(n)
    {
        return Err(Error::Usage(format!(
            "timeline {n} cannot be followed from this base backup (timeline {}): its history \
             file is not in the repository or it does not descend from the backup's timeline \
             after the backup started",
            pg.timeline
        )));
    }
    Ok(best)
}

/// Checks the archive holds every WAL segment recovery will read, from the
/// backup's start to the target. Returns the first and last segment.
/// `names` is the cluster's archive listing ([`WalArchive::list`]), sorted.
fn check_wal(
    archive: &WalArchive,
    names: &[WalName],
    pg: &PgBackupInfo,
    target: &RecoveryTarget,
    choice: TimelineChoice,
) -> Result<(WalName, WalName)> {
    let seg = pg.wal_segment_size;
    let lineage = target_lineage(archive, pg, names, choice)?;
    let timeline_of = |segno: u64| {
        lineage
            .iter()
            .rev()
            .find(|(_, begin)| *begin <= segno)
            .map_or(pg.timeline, |(t, _)| *t)
    };
    let have = |name: &WalName| names.binary_search(name).is_ok();
    let first = pg.start_lsn.0 / seg;
    let stop = pg.stop_lsn.0.saturating_sub(1) / seg;
    let must_reach = match target {
        RecoveryTarget::Lsn(l) => l.0 / seg,
        _ => stop,
    };
    let mut segno = first;
    let mut last_header: Option<(WalName, ArchivedHeader)> = None;
    loop {
        let name = WalName::segment(timeline_of(segno), segno, seg);
        if !have(&name) {
            if segno <= must_reach {
                let other_timeline = match name.timeline != pg.timeline {
                    true => format!(
                        " (recovery follows timeline {}, the newest in the repository that \
                         descends from the backup's; give --timeline current to stay on \
                         timeline {})",
                        name.timeline, pg.timeline
                    ),
                    false => String::new(),
                };
                return Err(Error::Usage(format!(
                    "WAL segment {name} is not in the repository, and recovery of base backup \
                     (start {}, timeline {}) needs it{}{other_timeline}; nothing was written. \
                     Restore an older base backup or an earlier target",
                    pg.start_lsn,
                    pg.timeline,
                    match target {
                        RecoveryTarget::Lsn(l) => format!(" to reach LSN {l}"),
                        _ => " to become consistent".to_string(),
                    }
                )));
            }
            break;
        }
        if let RecoveryTarget::Time(t) = target
            && segno > must_reach
        {
            let path = archive.locate(pg.system_identifier, &name).expect("listed");
            let header = archive.header(&path)?;
            if header.pushed_at > *t {
                // Archived after TIME. Push time stands in for the moment the
                // server finished the segment (a little earlier): the stop
                // segment is never taken as this proof, since the backup
                // itself finished it, so a TIME just after the backup needs
                // one more segment rather than risk recovery ending short.
                return Ok((WalName::segment(timeline_of(first), first, seg), name));
            }
            last_header = Some((name.clone(), header));
        }
        segno += 1;
    }
    let last = WalName::segment(timeline_of(segno - 1), segno - 1, seg);
    if let RecoveryTarget::Time(t) = target {
        let (newest, when) = match &last_header {
            Some((n, h)) => (n.to_string(), h.pushed_at.to_string()),
            None => (last.to_string(), "before the target".to_string()),
        };
        return Err(Error::Usage(format!(
            "the archived WAL ends before {t}: the newest contiguous segment is {newest}, \
             archived {when}, and {} is not in the repository; nothing was written. Wait for \
             the server to archive more WAL (or run SELECT pg_switch_wal()), or choose an \
             earlier time",
            WalName::segment(timeline_of(segno), segno, seg)
        )));
    }
    Ok((WalName::segment(timeline_of(first), first, seg), last))
}

/// Checks the archive holds the WAL a base backup needs to become consistent
/// (its start to its stop); the error names the first missing segment.
/// `names` is the cluster's archive listing.
pub fn wal_for_consistency(
    archive: &WalArchive,
    names: &[WalName],
    pg: &PgBackupInfo,
) -> Result<()> {
    check_wal(
        archive,
        names,
        pg,
        &RecoveryTarget::Immediate,
        TimelineChoice::Current,
    )
    .map(|_| ())
}

/// A span of time any moment of which a restore can reach: from when a base
/// backup finished to the newest WAL archived without a gap after it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PitrWindow {
    #[serde(with = "u64_text")]
    pub system_identifier: u64,
    pub from: Timestamp,
    pub to: Timestamp,
    /// The last segment of the unbroken WAL.
    pub last_wal: String,
}

mod u64_text {
    pub fn serialize<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }
}

/// The PITR windows of every cluster in the repository, oldest first, and a
/// note for each base backup whose WAL is incomplete.
pub fn pitr_windows(
    repo: &Repository,
    list: &[(SnapshotId, Snapshot)],
) -> Result<(Vec<PitrWindow>, Vec<String>)> {
    let archive = WalArchive::new(repo.root());
    let mut windows: Vec<PitrWindow> = Vec::new();
    let mut notes = Vec::new();
    // Each cluster's archive is listed once, however many backups it has.
    let mut listings: HashMap<u64, Vec<WalName>> = HashMap::new();
    for (id, snap) in list {
        let Some(pg) = &snap.postgres else { continue };
        let names = match listings.entry(pg.system_identifier) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(archive.list(pg.system_identifier)?),
        };
        match check_wal(
            &archive,
            names,
            pg,
            &RecoveryTarget::EndOfWal,
            TimelineChoice::Latest,
        ) {
            Ok((_, last)) => {
                let path = archive.locate(pg.system_identifier, &last).expect("listed");
                let to = archive.header(&path)?.pushed_at.max(pg.stop_time);
                let from = pg.stop_time;
                match windows.iter_mut().find(|w| {
                    w.system_identifier == pg.system_identifier && w.from <= from && from <= w.to
                }) {
                    Some(w) => {
                        if to > w.to {
                            w.to = to;
                            w.last_wal = last.to_string();
                        }
                    }
                    None => windows.push(PitrWindow {
                        system_identifier: pg.system_identifier,
                        from,
                        to,
                        last_wal: last.to_string(),
                    }),
                }
            }
            Err(e) => notes.push(format!(
                "base backup {} cannot be restored: {e}",
                id.short()
            )),
        }
    }
    Ok((windows, notes))
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
    fn quoting() {
        assert_eq!(quote("it's"), "'it''s'");
        assert_eq!(shell_word("/usr/bin/rewindb"), "/usr/bin/rewindb");
        assert_eq!(shell_word("/my repo/x"), "'/my repo/x'");
        assert_eq!(shell_word("a'b"), r"'a'\''b'");
    }
}
