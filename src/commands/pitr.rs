//! What the WAL archive lets a base backup reach: the timelines read from
//! the archive, the timeline a recovery follows, the WAL it needs (and the
//! first gap), and the PITR windows that `snapshots`, `status` and `check`
//! show, one per timeline.
//!
//! The choice between timelines is [`crate::timeline`]'s pure logic; this
//! module reads the facts it needs from the archive (segment names, history
//! files, the push times in a few archive headers) and turns its answers into
//! messages that say what to type next.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;

use crate::error::{Error, RepoError, Result};
use crate::id::SnapshotId;
use crate::repo::snapshot::{PgBackupInfo, Snapshot};
use crate::repo::wal::{ArchivedHeader, WalArchive, WalKind, WalName};
use crate::source::postgres::Lsn;
use crate::time::show;
use crate::timeline::{self, SegmentSpan, Target, Timeline, TimelineChoice, Unresolved};

/// Where recovery stops.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
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

impl RecoveryTarget {
    fn for_timelines(&self) -> Target {
        match self {
            RecoveryTarget::Time(t) => Target::Time(*t),
            RecoveryTarget::Lsn(l) => Target::Lsn(*l),
            _ => Target::End,
        }
    }
}

/// One cluster's archive, listed once: its file names (sorted) and its
/// timelines.
pub struct ClusterArchive {
    pub system_identifier: u64,
    /// The cluster's WAL segment size (from its base backups).
    pub seg_size: u64,
    /// What could not be read (a damaged history file): the timeline tree
    /// is then uncertain, and only an explicit `--timeline` is followed.
    pub problems: Vec<String>,
    pub names: Vec<WalName>,
    pub timelines: Vec<Timeline>,
}

impl ClusterArchive {
    /// Lists the archive of cluster `system_identifier` and reads what its
    /// timelines need: history files, and the headers of each timeline's
    /// first and last segment. `seg_size`: the cluster's WAL segment size.
    pub fn read(
        archive: &WalArchive,
        system_identifier: u64,
        seg_size: u64,
    ) -> Result<ClusterArchive, RepoError> {
        let names = archive.list(system_identifier)?;
        let mut spans: BTreeMap<u32, (&WalName, &WalName)> = BTreeMap::new();
        let mut histories: BTreeMap<u32, &WalName> = BTreeMap::new();
        for name in &names {
            match name.kind {
                WalKind::Segment => {
                    let e = spans.entry(name.timeline).or_insert((name, name));
                    e.1 = name; // sorted: the last seen is the newest
                }
                WalKind::History => {
                    histories.insert(name.timeline, name);
                }
                WalKind::Partial | WalKind::Backup => {}
            }
        }
        // Push times only inform listings and the time a timeline was
        // born: an unreadable header loses the time, not the timeline
        // (`check` reports the damage with the backups it affects).
        let pushed = |name: &WalName| -> Option<Timestamp> {
            archive
                .header(system_identifier, name)
                .ok()
                .flatten()
                .map(|h| h.pushed_at)
        };
        let mut problems = Vec::new();
        let mut ids: Vec<u32> = spans.keys().chain(histories.keys()).copied().collect();
        ids.sort();
        ids.dedup();
        let mut timelines = Vec::new();
        for id in ids {
            let (history, forked_at) = match histories.get(&id) {
                // Removed (by gc) since the listing: as if never archived.
                Some(name) => match archive.read(system_identifier, name) {
                    Ok(Some(text)) => (
                        timeline::parse_history(&String::from_utf8_lossy(&text)),
                        pushed(name),
                    ),
                    Ok(None) => (Vec::new(), None),
                    Err(e) => {
                        problems.push(format!(
                            "history file {name} cannot be read ({e}), so it is not \
                             known where timeline {id} forked"
                        ));
                        (Vec::new(), None)
                    }
                },
                None => (Vec::new(), None),
            };
            let segments = spans.get(&id).map(|(first, last)| SegmentSpan {
                first: first.segno(seg_size),
                last: last.segno(seg_size),
                first_pushed: pushed(first),
                last_pushed: pushed(last),
            });
            timelines.push(Timeline {
                id,
                history,
                forked_at,
                segments,
            });
        }
        Ok(ClusterArchive {
            system_identifier,
            seg_size,
            problems,
            names,
            timelines,
        })
    }

    fn have(&self, name: &WalName) -> bool {
        self.names.binary_search(name).is_ok()
    }
}

/// The WAL a recovery will read, as planned.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct WalPlan {
    /// The timeline recovery follows (written as `recovery_target_timeline`).
    pub timeline: u32,
    /// First and last segment recovery reads.
    pub from: String,
    pub to: String,
    /// Why recovery could not reach the target with what is archived (the
    /// first missing segment); `None` when everything is there.
    pub missing: Option<String>,
}

/// Chooses the timeline for recovering base backup `pg` to `target`, and
/// checks the archive holds every segment from the backup's start to the
/// target. An ambiguous target is an error listing each candidate.
pub fn plan_wal(
    cluster: &ClusterArchive,
    archive: &WalArchive,
    id: SnapshotId,
    pg: &PgBackupInfo,
    target: &RecoveryTarget,
    choice: TimelineChoice,
) -> Result<WalPlan> {
    let seg = pg.wal_segment_size;
    let timelines = &cluster.timelines;
    let choice = match target {
        RecoveryTarget::Immediate => TimelineChoice::Current,
        _ => choice,
    };
    if let (TimelineChoice::Auto | TimelineChoice::Latest, Some(problem)) =
        (choice, cluster.problems.first())
    {
        return Err(Error::Usage(format!(
            "{problem}: rewindb cannot tell which histories the archive holds, and does not \
             guess. Run `rewindb check`; name the timeline to follow with --timeline N (or \
             current) if you know it"
        )));
    }
    let chosen = timeline::resolve(
        timelines,
        pg.timeline,
        pg.start_lsn,
        seg,
        target.for_timelines(),
        choice,
    )
    .map_err(|e| unresolved(e, timelines, id, pg, target))?;
    let lineage = timeline::lineage(timelines, pg.timeline, chosen, seg)
        .unwrap_or_else(|| vec![(pg.timeline, 0)]);
    let (from, to, missing) = match walk_wal(cluster, archive, pg, target, &lineage)? {
        Walked::Reaches(from, to) => (from, to, None),
        Walked::Gap(from, to, why) => (from, to, Some(why)),
    };
    Ok(WalPlan {
        timeline: chosen,
        from: from.to_string(),
        to: to.to_string(),
        missing,
    })
}

/// The message for a timeline that could not be chosen.
fn unresolved(
    e: Unresolved,
    timelines: &[Timeline],
    id: SnapshotId,
    pg: &PgBackupInfo,
    target: &RecoveryTarget,
) -> Error {
    match e {
        Unresolved::NotDescendant(n) => {
            let tree = timeline::descendants(timelines, pg.timeline, pg.start_lsn);
            let ids: Vec<String> = tree.iter().map(|t| t.id.to_string()).collect();
            Error::Usage(format!(
                "timeline {n} cannot be followed from base backup {} (timeline {}): its \
                 history file is not in the repository, or it does not leave timeline {} after \
                 the backup started. Timelines this backup can follow: {}",
                id.short(),
                pg.timeline,
                pg.timeline,
                ids.join(", ")
            ))
        }
        Unresolved::Ambiguous(ids) => {
            let what = match target {
                RecoveryTarget::Time(t) => format!("time {}", show(*t)),
                RecoveryTarget::Lsn(l) => format!("LSN {l}"),
                RecoveryTarget::Name(n) => format!("restore point {n:?}"),
                _ => "the end of the archived WAL".to_string(),
            };
            let mut msg = format!(
                "{what} lies on {} timelines of the archive that descend from base backup {} \
                 (timeline {}): two histories were archived side by side (a restore drill or a \
                 second server promoted while the first went on), and rewindb does not guess \
                 which one you mean. Nothing was written. Name one:",
                ids.len(),
                id.short(),
                pg.timeline
            );
            for t in timelines.iter().filter(|t| ids.contains(&t.id)) {
                msg.push_str(&format!(
                    "\n  --timeline {:<4} {}",
                    t.id,
                    describe_timeline(t)
                ));
            }
            if !ids.contains(&pg.timeline) {
                msg.push_str(&format!(
                    "\n  --timeline current  stays on the backup's own timeline {}",
                    pg.timeline
                ));
            }
            msg.push_str(
                "\nA drill restored with `--archive-mode off` archives nothing; see \
                 docs/operations.md, \"Restore drills\"",
            );
            Error::Usage(msg)
        }
    }
}

/// "forked from timeline 1 at 0/5000A28 (2026-11-23 14:10:11); WAL archived
/// 2026-11-23 14:10:11 to 14:20:05".
pub fn describe_timeline(t: &Timeline) -> String {
    let origin = match (t.parent(), t.forked_at) {
        (Some((parent, lsn)), Some(at)) => {
            format!("forked from timeline {parent} at {lsn} ({})", show(at))
        }
        (Some((parent, lsn)), None) => format!("forked from timeline {parent} at {lsn}"),
        (None, _) => "no history file (the cluster's first timeline)".to_string(),
    };
    match t.covers() {
        Some((from, to)) => format!(
            "timeline {}: {origin}; WAL archived {} to {}",
            t.id,
            show(from),
            show(to)
        ),
        None => format!(
            "timeline {}: {origin}; no complete segment archived yet",
            t.id
        ),
    }
}

enum Walked {
    /// Every segment recovery needs is archived: first and last.
    Reaches(WalName, WalName),
    /// The first and last segment looked at, and what is missing.
    Gap(WalName, WalName, String),
}

/// Walks the segments recovery reads along `lineage` (timeline, first
/// segment on it), from the backup's start to the target.
fn walk_wal(
    cluster: &ClusterArchive,
    archive: &WalArchive,
    pg: &PgBackupInfo,
    target: &RecoveryTarget,
    lineage: &[(u32, u64)],
) -> Result<Walked, RepoError> {
    let seg = pg.wal_segment_size;
    let timeline_of = |segno: u64| {
        lineage
            .iter()
            .rev()
            .find(|(_, begin)| *begin <= segno)
            .map_or(pg.timeline, |(t, _)| *t)
    };
    let first = pg.start_lsn.0 / seg;
    let first_name = WalName::segment(timeline_of(first), first, seg);
    let stop = pg.stop_lsn.0.saturating_sub(1) / seg;
    let must_reach = match target {
        RecoveryTarget::Lsn(l) => l.0 / seg,
        _ => stop,
    };
    let mut segno = first;
    let mut last_header: Option<(WalName, ArchivedHeader)> = None;
    loop {
        let name = WalName::segment(timeline_of(segno), segno, seg);
        if !cluster.have(&name) {
            if segno <= must_reach {
                let why = format!(
                    "WAL segment {name} is not in the repository, and recovery of the base \
                     backup (start {}, timeline {}) needs it{}{}; restore an older base \
                     backup or an earlier target",
                    pg.start_lsn,
                    pg.timeline,
                    match target {
                        RecoveryTarget::Lsn(l) => format!(" to reach LSN {l}"),
                        _ => " to become consistent".to_string(),
                    },
                    match name.timeline != pg.timeline {
                        true => format!(
                            " (recovery follows timeline {}, which took over from the backup's; \
                             --timeline current stays on timeline {})",
                            name.timeline, pg.timeline
                        ),
                        false => String::new(),
                    }
                );
                return Ok(Walked::Gap(first_name, name, why));
            }
            break;
        }
        if let RecoveryTarget::Time(t) = target
            && segno > must_reach
        {
            // Only here does a push time matter; a file removed (by gc)
            // since the listing ends the walk as a missing one would.
            let Some(archived) = archive.header(pg.system_identifier, &name)? else {
                break;
            };
            if archived.pushed_at > *t {
                // Archived after TIME. Push time stands in for the moment the
                // server finished the segment (a little earlier): the stop
                // segment is never taken as this proof, since the backup
                // itself finished it, so a TIME just after the backup needs
                // one more segment rather than risk recovery ending short.
                return Ok(Walked::Reaches(first_name, name));
            }
            last_header = Some((name.clone(), archived));
        }
        segno += 1;
    }
    let last = WalName::segment(timeline_of(segno - 1), segno - 1, seg);
    if let RecoveryTarget::Time(t) = target {
        let (newest, when) = match &last_header {
            Some((n, h)) => (n.to_string(), show(h.pushed_at)),
            None => (last.to_string(), "before the target".to_string()),
        };
        let next = WalName::segment(timeline_of(segno), segno, seg);
        let why = format!(
            "the archived WAL on timeline {} ends before {}: the newest contiguous segment is \
             {newest}, archived {when}, and {next} is not in the repository. Wait for the \
             server to archive more WAL (the segment in progress is archived when it fills, at \
             archive_timeout, or after SELECT pg_switch_wal()), or choose an earlier time",
            next.timeline,
            show(*t)
        );
        return Ok(Walked::Gap(first_name, last, why));
    }
    Ok(Walked::Reaches(first_name, last))
}

/// Whether the archive holds the WAL a base backup needs to become
/// consistent (its start to its stop): `Some` names the first missing segment.
pub fn wal_for_consistency(
    cluster: &ClusterArchive,
    archive: &WalArchive,
    pg: &PgBackupInfo,
) -> Result<Option<String>, RepoError> {
    match walk_wal(
        cluster,
        archive,
        pg,
        &RecoveryTarget::Immediate,
        &[(pg.timeline, 0)],
    )? {
        Walked::Reaches(..) => Ok(None),
        Walked::Gap(_, _, why) => Ok(Some(why)),
    }
}

/// A span of time any moment of which a restore can reach on one timeline:
/// from when a base backup finished (or the timeline forked, if later) to
/// the newest WAL archived without a gap after it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PitrWindow {
    #[serde(with = "u64_text")]
    pub system_identifier: u64,
    pub timeline: u32,
    pub from: Timestamp,
    pub to: Timestamp,
    /// The last segment of the unbroken WAL.
    pub last_wal: String,
}

/// One cluster's timelines as listings show them.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClusterTimelines {
    #[serde(with = "u64_text")]
    pub system_identifier: u64,
    pub timelines: Vec<Timeline>,
    /// (parent, child): the parent holds WAL past the child's fork,
    /// so a target after the fork needs `--timeline`.
    pub diverged: Vec<(u32, u32)>,
}

mod u64_text {
    pub fn serialize<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }
}

/// What the archive offers: PITR windows per cluster and timeline, every
/// cluster's timelines, and a note for each base backup that cannot be
/// restored.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ArchiveView {
    pub windows: Vec<PitrWindow>,
    pub clusters: Vec<ClusterTimelines>,
    pub notes: Vec<String>,
}

impl ArchiveView {
    /// The window a base backup opens or belongs to on its own timeline.
    pub fn window_of(&self, pg: &PgBackupInfo) -> Option<&PitrWindow> {
        self.windows.iter().find(|w| {
            w.system_identifier == pg.system_identifier
                && w.timeline == pg.timeline
                && w.from <= pg.stop_time
                && pg.stop_time <= w.to
        })
    }
}

/// The PITR windows of every cluster with a base backup in `list`, one per
/// timeline each backup can follow, and each such cluster's timelines.
pub fn archive_view(
    archive: &WalArchive,
    list: &[(SnapshotId, Snapshot)],
) -> Result<ArchiveView, RepoError> {
    archive_view_of(archive, list, HashMap::new())
}

/// [`archive_view`] reusing the clusters a caller already read (`check`
/// lists every archive anyway); the others are read here, once each.
pub fn archive_view_of(
    archive: &WalArchive,
    list: &[(SnapshotId, Snapshot)],
    mut clusters: HashMap<u64, ClusterArchive>,
) -> Result<ArchiveView, RepoError> {
    let mut view = ArchiveView::default();
    let mut order = Vec::new();
    for (id, snap) in list {
        let Some(pg) = &snap.postgres else { continue };
        if !order.contains(&pg.system_identifier) {
            order.push(pg.system_identifier);
        }
        let cluster = match clusters.entry(pg.system_identifier) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(ClusterArchive::read(
                archive,
                pg.system_identifier,
                pg.wal_segment_size,
            )?),
        };
        let seg = pg.wal_segment_size;
        let timelines = &cluster.timelines;
        let tree = timeline::descendants(timelines, pg.timeline, pg.start_lsn);
        let mut any = false;
        let mut why_not = None;
        for t in tree {
            let lineage = timeline::lineage(timelines, pg.timeline, t.id, seg)
                .unwrap_or_else(|| vec![(pg.timeline, 0)]);
            let last = match walk_wal(cluster, archive, pg, &RecoveryTarget::EndOfWal, &lineage) {
                Ok(Walked::Reaches(_, last)) => last,
                Ok(Walked::Gap(_, _, why)) => {
                    why_not.get_or_insert(why);
                    continue;
                }
                Err(e) => {
                    why_not.get_or_insert(e.to_string());
                    continue;
                }
            };
            // Only WAL on this timeline itself opens a window on it.
            if last.timeline != t.id {
                continue;
            }
            // Damage is `check`'s to report, with what it affects.
            let Some(h) = archive.header(pg.system_identifier, &last).ok().flatten() else {
                continue;
            };
            any = true;
            let from = t.forked_at.map_or(pg.stop_time, |f| f.max(pg.stop_time));
            let to = h.pushed_at.max(from);
            match view.windows.iter_mut().find(|w| {
                w.system_identifier == pg.system_identifier
                    && w.timeline == t.id
                    && w.from <= from
                    && from <= w.to
            }) {
                Some(w) => {
                    if to > w.to {
                        w.to = to;
                        w.last_wal = last.to_string();
                    }
                }
                None => view.windows.push(PitrWindow {
                    system_identifier: pg.system_identifier,
                    timeline: t.id,
                    from,
                    to,
                    last_wal: last.to_string(),
                }),
            }
        }
        if !any && let Some(why) = why_not {
            view.notes.push(format!(
                "base backup {} cannot be restored: {why}",
                id.short()
            ));
        }
    }
    view.windows
        .sort_by_key(|w| (w.system_identifier, w.timeline, w.from));
    for sysid in order {
        let cluster = clusters.remove(&sysid).expect("read above");
        let diverged = timeline::diverged(&cluster.timelines, cluster.seg_size);
        for problem in &cluster.problems {
            view.notes.push(format!("cluster {sysid}: {problem}"));
        }
        for (parent, child) in &diverged {
            view.notes.push(format!(
                "cluster {sysid}: timeline {child} forked from timeline {parent}, and timeline \
                 {parent} holds WAL past the fork: two histories (a restore drill archiving into \
                 this repository?). A restore to a point after timeline {child} began must name \
                 one with --timeline"
            ));
        }
        view.clusters.push(ClusterTimelines {
            system_identifier: sysid,
            timelines: cluster.timelines,
            diverged,
        });
    }
    Ok(view)
}
