//! Timelines in a cluster's WAL archive: their tree, where each forked, the
//! span its archived WAL covers, and which of them a recovery target lies on.
//!
//! A timeline is born when a server promotes: it archives `NNNNNNNN.history`
//! (its ancestors and the LSN where each handed over) and then its own
//! segments. Two kinds of birth look alike in the history files and must not
//! be confused by a restore:
//! - a failover: the old server stops inside the segment where the new one
//!   takes over; that segment is archived whole only on the new timeline (the
//!   old one's copy at most as `.partial`), and everything later is on the
//!   child;
//! - a restore drill, a split brain, or a restore that replaced production
//!   after it had gone on: the parent's copy of the fork segment (or later
//!   ones) is archived complete, so the parent holds WAL past the fork and
//!   two histories exist side by side.
//!
//! [`candidates`] tells them apart by the archive alone ([`went_on`]), and
//! [`resolve`] refuses to pick between two histories that both hold the
//! target: ambiguity is an error listing each candidate, never a guess. A
//! drill is a second history from the moment its server promotes, however
//! quiet production is: the drill's restore needed production's copy of the
//! fork segment, so that copy is in the archive.
//!
//! Pure: [`Timeline`] values come from `commands::pitr`, which reads the
//! archive. Nothing here touches files.

use jiff::Timestamp;

use crate::source::postgres::Lsn;

/// What the archive says about one timeline of a cluster.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Timeline {
    pub id: u32,
    /// Its history file: each earlier timeline and the LSN where the next
    /// one begins, oldest first. Empty for a timeline with no history file
    /// archived (timeline 1, or one whose history is missing).
    pub history: Vec<(u32, Lsn)>,
    /// When its history file was archived: about when its server promoted.
    pub forked_at: Option<Timestamp>,
    /// Its complete segments in the archive, when it has any.
    pub segments: Option<SegmentSpan>,
}

/// The complete segments archived on one timeline (not `.partial` files):
/// their numbers from the names, and when the first and last were archived
/// (`None` when that header could not be read).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SegmentSpan {
    pub first: u64,
    pub last: u64,
    pub first_pushed: Option<Timestamp>,
    pub last_pushed: Option<Timestamp>,
}

impl Timeline {
    /// The timeline it forked from, and the LSN where it begins.
    pub fn parent(&self) -> Option<(u32, Lsn)> {
        self.history.last().copied()
    }

    /// From when to when its archived WAL was written (as archived).
    pub fn covers(&self) -> Option<(Timestamp, Timestamp)> {
        let span = self.segments?;
        let first = match (self.forked_at, span.first_pushed) {
            (Some(f), Some(p)) => f.min(p),
            (f, p) => f.or(p)?,
        };
        Some((first, span.last_pushed?))
    }
}

/// Where recovery stops, as far as choosing a timeline is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Time(Timestamp),
    Lsn(Lsn),
    /// The end of the archived WAL, or a named restore point (which could be
    /// anywhere along it).
    End,
}

/// Which timeline to follow, as the user asked (`restore --timeline`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TimelineChoice {
    /// The one timeline the target lies on; refused when there are several.
    #[default]
    Auto,
    /// The highest-numbered timeline descending from the backup's
    /// (PostgreSQL's `latest`): an explicit choice, never the default.
    Latest,
    /// The backup's own timeline.
    Current,
    Id(u32),
}

impl std::str::FromStr for TimelineChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(TimelineChoice::Auto),
            "latest" => Ok(TimelineChoice::Latest),
            "current" => Ok(TimelineChoice::Current),
            n => n.parse().map(TimelineChoice::Id).map_err(|_| {
                format!("--timeline {s:?}: expected a timeline number, current, latest or auto")
            }),
        }
    }
}

/// Why no single timeline could be chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unresolved {
    /// The target lies on several timelines: these, oldest first.
    Ambiguous(Vec<u32>),
    /// The asked-for timeline does not descend from the backup's after the
    /// backup started (or its history file is not archived).
    NotDescendant(u32),
}

/// The timelines recovery of a base backup (on timeline `base`, started at
/// `start`) can follow: the backup's own and every archived one whose
/// history leaves `base` at or after `start`, in id order.
pub fn descendants(timelines: &[Timeline], base: u32, start: Lsn) -> Vec<&Timeline> {
    let mut out: Vec<&Timeline> = timelines
        .iter()
        .filter(|t| {
            t.id == base
                || t.history
                    .iter()
                    .position(|(id, _)| *id == base)
                    .is_some_and(|i| t.history[i].1 >= start)
        })
        .collect();
    out.sort_by_key(|t| t.id);
    out
}

/// The timelines on which `target` lies, among the descendants of the
/// backup. A timeline that handed over to a child (a failover: it holds no
/// complete segment from the fork on) is never one: the child's history
/// holds the parent's up to the fork, and recovery to a target before the
/// fork stops there. Where a parent went on past a child's fork ([`went_on`]:
/// two histories), the child counts only from when it was born: a time at
/// or after its history file was archived, or an LSN at or after its fork.
pub fn candidates(
    timelines: &[Timeline],
    base: u32,
    start: Lsn,
    seg_size: u64,
    target: Target,
) -> Vec<u32> {
    let tree = descendants(timelines, base, start);
    let find = |id: u32| tree.iter().find(|t| t.id == id).copied();
    let begun = |t: &Timeline| match (target, t.parent()) {
        (Target::Time(at), _) => t.forked_at.is_some_and(|f| f <= at),
        (Target::Lsn(lsn), Some((_, begin))) => begin <= lsn,
        (Target::Lsn(_), None) => false,
        (Target::End, _) => true,
    };
    // Whether the target can be on `t`: every fork between the backup's
    // timeline and `t` was a handover, or was born by the target.
    let active = |t: &Timeline| {
        let mut cur = t;
        loop {
            if cur.id == base {
                return true;
            }
            let Some(parent) = cur.parent().and_then(|(p, _)| find(p)) else {
                return false;
            };
            if went_on(parent, cur, seg_size) && !begun(cur) {
                return false;
            }
            cur = parent;
        }
    };
    let handed_over = |t: &Timeline| {
        tree.iter().any(|child| {
            child.parent().is_some_and(|(parent, _)| parent == t.id) && !went_on(t, child, seg_size)
        })
    };
    tree.iter()
        .filter(|t| active(t) && !handed_over(t))
        .map(|t| t.id)
        .collect()
}

/// Whether `parent` went on past `child`'s fork: it has a complete segment
/// at or after the segment where the child begins. A failover leaves the old
/// timeline's fork segment incomplete (at most a `.partial`); a drill, a
/// split brain, or a restore that replaced a server that had gone on all
/// leave it complete.
pub fn went_on(parent: &Timeline, child: &Timeline, seg_size: u64) -> bool {
    let (Some(span), Some((_, fork))) = (parent.segments, child.parent()) else {
        return false;
    };
    span.last >= fork.0 / seg_size
}

/// The timeline to follow for `choice`.
pub fn resolve(
    timelines: &[Timeline],
    base: u32,
    start: Lsn,
    seg_size: u64,
    target: Target,
    choice: TimelineChoice,
) -> Result<u32, Unresolved> {
    let tree = descendants(timelines, base, start);
    match choice {
        TimelineChoice::Current => Ok(base),
        TimelineChoice::Id(n) if tree.iter().any(|t| t.id == n) => Ok(n),
        TimelineChoice::Id(n) => Err(Unresolved::NotDescendant(n)),
        TimelineChoice::Latest => Ok(tree.iter().map(|t| t.id).max().unwrap_or(base)),
        TimelineChoice::Auto => match candidates(timelines, base, start, seg_size, target)[..] {
            [one] => Ok(one),
            // Unreachable with a well-formed tree (a leaf always qualifies);
            // the backup's own timeline is then the safe reading.
            [] => Ok(base),
            ref many => Err(Unresolved::Ambiguous(many.to_vec())),
        },
    }
}

/// The path from the backup's timeline to `to`: each timeline and the
/// segment number where it begins (the backup's own from 0), oldest first.
/// `None` when `to` does not descend from `base`.
pub fn lineage(
    timelines: &[Timeline],
    base: u32,
    to: u32,
    seg_size: u64,
) -> Option<Vec<(u32, u64)>> {
    if to == base {
        return Some(vec![(base, 0)]);
    }
    let t = timelines.iter().find(|t| t.id == to)?;
    let from = t.history.iter().position(|(id, _)| *id == base)?;
    let mut out = vec![(base, 0)];
    for (i, (_, switch)) in t.history.iter().enumerate().skip(from) {
        let next = t.history.get(i + 1).map_or(to, |(id, _)| *id);
        out.push((next, switch.0 / seg_size));
    }
    Some(out)
}

/// Pairs (parent, child) where the parent went on past the child's fork
/// ([`went_on`]): two histories side by side, so a target after the child
/// began is ambiguous until `--timeline` names one.
pub fn diverged(timelines: &[Timeline], seg_size: u64) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for child in timelines {
        let Some((parent, _)) = child.parent() else {
            continue;
        };
        if timelines
            .iter()
            .any(|p| p.id == parent && went_on(p, child, seg_size))
        {
            out.push((parent, child.id));
        }
    }
    out
}

/// Parses a timeline history file: `parent-timeline switch-LSN reason`
/// lines; comments and malformed lines are skipped, as PostgreSQL does.
pub fn parse_history(text: &str) -> Vec<(u32, Lsn)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let tli = fields.next()?.parse::<u32>().ok()?;
            let lsn = fields.next()?.parse::<Lsn>().ok()?;
            Some((tli, lsn))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 << 20;

    fn at(minute: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + minute * 60).unwrap()
    }

    fn seg_lsn(segno: u64) -> Lsn {
        Lsn(segno * SEG + 0x28)
    }

    /// A timeline with complete segments `first..=last` archived from
    /// minute `pushed.0` to `pushed.1`.
    fn tl(
        id: u32,
        history: &[(u32, u64)],
        forked: Option<i64>,
        segs: (u64, u64),
        pushed: (i64, i64),
    ) -> Timeline {
        Timeline {
            id,
            history: history.iter().map(|(t, s)| (*t, seg_lsn(*s))).collect(),
            forked_at: forked.map(at),
            segments: Some(SegmentSpan {
                first: segs.0,
                last: segs.1,
                first_pushed: Some(at(pushed.0)),
                last_pushed: Some(at(pushed.1)),
            }),
        }
    }

    fn auto(tls: &[Timeline], start: u64, target: Target) -> Result<u32, Unresolved> {
        resolve(tls, 1, seg_lsn(start), SEG, target, TimelineChoice::Auto)
    }

    /// Production on timeline 1 archives segments 1..=20 over minutes 0..40.
    /// A drill restored into segment 5 promotes at minute 20 (timeline 2)
    /// and archives segments 5..=7; production goes on.
    fn drill() -> Vec<Timeline> {
        vec![
            tl(1, &[], None, (1, 20), (0, 40)),
            tl(2, &[(1, 5)], Some(20), (5, 7), (20, 25)),
        ]
    }

    /// A failover: the old server dies inside segment 9 (archived complete
    /// up to 8, at minute 17); timeline 2 takes over in segment 9 at minute
    /// 18 and goes on.
    fn failover() -> Vec<Timeline> {
        vec![
            tl(1, &[], None, (1, 8), (0, 17)),
            tl(2, &[(1, 9)], Some(18), (9, 30), (18, 60)),
        ]
    }

    #[test]
    fn after_a_drill_forks_a_later_target_is_ambiguous() {
        let tls = drill();
        // Before the drill promoted, only production's history exists.
        assert_eq!(auto(&tls, 2, Target::Time(at(19))), Ok(1));
        // After: both histories hold the time; refuse and name both.
        assert_eq!(
            auto(&tls, 2, Target::Time(at(30))),
            Err(Unresolved::Ambiguous(vec![1, 2]))
        );
        assert_eq!(
            auto(&tls, 2, Target::End),
            Err(Unresolved::Ambiguous(vec![1, 2]))
        );
        // An LSN before the fork is production's; after it, on both.
        assert_eq!(auto(&tls, 2, Target::Lsn(seg_lsn(4))), Ok(1));
        assert_eq!(
            auto(&tls, 2, Target::Lsn(seg_lsn(6))),
            Err(Unresolved::Ambiguous(vec![1, 2]))
        );
        // Named, each is followed.
        for n in [1, 2] {
            assert_eq!(
                resolve(&tls, 1, seg_lsn(2), SEG, Target::End, TimelineChoice::Id(n)),
                Ok(n)
            );
        }
        assert_eq!(diverged(&tls, SEG), vec![(1, 2)]);
    }

    /// Regression (review): a drill beside a production that archived
    /// nothing since the drill promoted was taken for a failover, and a
    /// restore followed the drill. Production's copy of the fork segment,
    /// which the drill's own restore needed, makes it a second history.
    #[test]
    fn a_drill_beside_a_quiet_production_is_a_second_history_at_once() {
        let tls = vec![
            tl(1, &[], None, (1, 5), (0, 10)),
            tl(2, &[(1, 5)], Some(20), (5, 6), (20, 22)),
        ];
        assert_eq!(
            auto(&tls, 2, Target::Time(at(30))),
            Err(Unresolved::Ambiguous(vec![1, 2]))
        );
        assert_eq!(
            auto(&tls, 2, Target::End),
            Err(Unresolved::Ambiguous(vec![1, 2]))
        );
        assert_eq!(auto(&tls, 2, Target::Time(at(15))), Ok(1));
    }

    #[test]
    fn a_failover_hands_over_to_the_new_timeline() {
        let tls = failover();
        // Every target follows timeline 2, which holds timeline 1's WAL up
        // to the fork: even a time before the failover, whose segment 9
        // exists whole only on timeline 2.
        assert_eq!(auto(&tls, 2, Target::Time(at(10))), Ok(2));
        assert_eq!(auto(&tls, 2, Target::Time(at(30))), Ok(2));
        assert_eq!(auto(&tls, 2, Target::Lsn(seg_lsn(5))), Ok(2));
        assert_eq!(auto(&tls, 2, Target::End), Ok(2));
        assert!(diverged(&tls, SEG).is_empty());
        assert_eq!(lineage(&tls, 1, 2, SEG), Some(vec![(1, 0), (2, 9)]));
    }

    /// A restore to segment 5 that replaced production after production had
    /// gone on to segment 20: the archive cannot tell it from a drill, so a
    /// target after its promotion needs `--timeline` (once: base backups
    /// taken on the new timeline do not descend from the old one).
    #[test]
    fn a_restore_that_replaced_production_after_it_went_on_is_a_second_history() {
        let tls = vec![
            tl(1, &[], None, (1, 20), (0, 30)),
            tl(2, &[(1, 5)], Some(35), (5, 9), (35, 50)),
        ];
        assert_eq!(auto(&tls, 2, Target::Time(at(25))), Ok(1));
        assert_eq!(
            auto(&tls, 2, Target::Time(at(40))),
            Err(Unresolved::Ambiguous(vec![1, 2]))
        );
        assert_eq!(diverged(&tls, SEG), vec![(1, 2)]);
        // A backup taken on timeline 2 has one history.
        assert_eq!(
            resolve(&tls, 2, seg_lsn(7), SEG, Target::End, TimelineChoice::Auto),
            Ok(2)
        );
    }

    #[test]
    fn a_drill_before_the_backup_is_not_its_descendant() {
        // Backup taken on timeline 1 at segment 8, after the drill forked at 5.
        let tls = drill();
        let ids = |start| {
            descendants(&tls, 1, seg_lsn(start))
                .iter()
                .map(|t| t.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(8), vec![1]);
        assert_eq!(ids(2), vec![1, 2]);
        assert_eq!(auto(&tls, 8, Target::End), Ok(1));
        assert_eq!(
            resolve(&tls, 1, seg_lsn(8), SEG, Target::End, TimelineChoice::Id(2)),
            Err(Unresolved::NotDescendant(2))
        );
    }

    #[test]
    fn a_chain_of_failovers_follows_to_the_last() {
        let mut tls = failover();
        // Timeline 2 dies inside segment 15, where 3 takes over.
        let span = tls[1].segments.as_mut().unwrap();
        (span.last, span.last_pushed) = (14, Some(at(39)));
        tls.push(tl(3, &[(1, 9), (2, 15)], Some(40), (15, 22), (40, 50)));
        assert_eq!(auto(&tls, 2, Target::End), Ok(3));
        assert_eq!(auto(&tls, 2, Target::Time(at(30))), Ok(3));
        assert_eq!(
            lineage(&tls, 1, 3, SEG),
            Some(vec![(1, 0), (2, 9), (3, 15)])
        );
        // A backup taken on timeline 2 follows on to 3.
        assert_eq!(
            resolve(&tls, 2, seg_lsn(12), SEG, Target::End, TimelineChoice::Auto),
            Ok(3)
        );
        assert_eq!(
            resolve(
                &tls,
                1,
                seg_lsn(2),
                SEG,
                Target::End,
                TimelineChoice::Latest
            ),
            Ok(3)
        );
        // A drill forked from timeline 3 beside it: a second history there.
        tls.push(tl(
            4,
            &[(1, 9), (2, 15), (3, 18)],
            Some(45),
            (18, 19),
            (45, 46),
        ));
        assert_eq!(
            auto(&tls, 2, Target::End),
            Err(Unresolved::Ambiguous(vec![3, 4]))
        );
        assert_eq!(auto(&tls, 2, Target::Time(at(42))), Ok(3));
    }

    #[test]
    fn history_files_parse_as_postgres_writes_them() {
        let text = "1\t0/5000A28\tno recovery target specified\n\n# comment\n2\t0/9000000\tat restore point \"x\"\n";
        assert_eq!(
            parse_history(text),
            vec![(1, Lsn(0x5000A28)), (2, Lsn(0x9000000))]
        );
    }

    #[test]
    fn timeline_choices_parse() {
        assert_eq!("3".parse(), Ok(TimelineChoice::Id(3)));
        assert_eq!("current".parse(), Ok(TimelineChoice::Current));
        assert_eq!("latest".parse(), Ok(TimelineChoice::Latest));
        assert_eq!("auto".parse(), Ok(TimelineChoice::Auto));
        assert!("newest".parse::<TimelineChoice>().is_err());
    }
}
