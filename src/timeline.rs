//! Timelines in a cluster's WAL archive: their tree, where each forked, the
//! span its archived WAL covers, and which of them a recovery target lies on.
//!
//! A timeline is born when a server promotes: it archives `NNNNNNNN.history`
//! (its ancestors and the LSN where each handed over) and then its own
//! segments. Two kinds of birth look alike in the history files and must not
//! be confused by a restore:
//! - a failover, or a point-in-time restore that replaces the old server: the
//!   parent stops archiving before the child is born, and everything later
//!   is on the child;
//! - a restore drill, or a split brain: the parent goes on archiving after
//!   the child is born (production keeps running), so two histories exist
//!   side by side.
//!
//! [`candidates`] tells them apart by the archive alone ([`went_on`]), and
//! [`resolve`] refuses to pick between two histories that both hold the
//! target: ambiguity is an error listing each candidate, never a guess.
//!
//! Pure: [`Timeline`] values come from `commands::pg_restore`, which reads the
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

/// The complete segments archived on one timeline (not `.partial` files).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SegmentSpan {
    pub first: u64,
    pub last: u64,
    pub first_pushed: Timestamp,
    pub last_pushed: Timestamp,
}

impl Timeline {
    /// The timeline it forked from, and the LSN where it begins.
    pub fn parent(&self) -> Option<(u32, Lsn)> {
        self.history.last().copied()
    }

    /// From when to when its archived WAL was written (as archived).
    pub fn covers(&self) -> Option<(Timestamp, Timestamp)> {
        let span = self.segments?;
        let from = self
            .forked_at
            .map_or(span.first_pushed, |f| f.min(span.first_pushed));
        Some((from, span.last_pushed))
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
/// backup: those that exist at the target (a child from when it was born)
/// and have not handed over to a child by then. A parent hands over when a
/// child is born and the parent archives nothing more ([`went_on`]); a
/// parent that goes on (production beside a drill's promotion) stays a
/// candidate beside the child.
pub fn candidates(
    timelines: &[Timeline],
    base: u32,
    start: Lsn,
    seg_size: u64,
    target: Target,
) -> Vec<u32> {
    let tree = descendants(timelines, base, start);
    let begun = |t: &Timeline| {
        t.id == base
            || match (target, t.parent()) {
                (Target::Time(at), _) => t.forked_at.is_some_and(|f| f <= at),
                (Target::Lsn(lsn), Some((_, begin))) => begin <= lsn,
                (Target::Lsn(_), None) => false,
                (Target::End, _) => true,
            }
    };
    let handed_over = |t: &Timeline| {
        tree.iter().any(|child| {
            child.parent().is_some_and(|(parent, _)| parent == t.id)
                && begun(child)
                && !went_on(t, child, seg_size)
        })
    };
    tree.iter()
        .filter(|t| begun(t) && !handed_over(t))
        .map(|t| t.id)
        .collect()
}

/// Whether `parent` went on after `child` forked from it: it archived a
/// segment at or past the fork after the child's history file was archived
/// (the child's server promoted). A parent that stopped first (a failover, a
/// restore that replaced it) hands its history over to the child.
pub fn went_on(parent: &Timeline, child: &Timeline, seg_size: u64) -> bool {
    let (Some(span), Some(born), Some((_, fork))) =
        (parent.segments, child.forked_at, child.parent())
    else {
        return false;
    };
    span.last_pushed > born && span.last >= fork.0 / seg_size
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

/// Pairs (parent, child) where the parent went on archiving after the
/// child was born ([`went_on`]): two histories side by side, so a target
/// after the fork is ambiguous until `--timeline` names one.
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

    /// A timeline with segments `first..=last` archived from minute
    /// `pushed.0` to `pushed.1`.
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
                first_pushed: at(pushed.0),
                last_pushed: at(pushed.1),
            }),
        }
    }

    /// Production on timeline 1 archives segments 1..=20 over minutes 0..40.
    /// A drill restored to segment 5 promotes at minute 20 (timeline 2) and
    /// archives segments 5..=7; production goes on.
    fn drill() -> Vec<Timeline> {
        vec![
            tl(1, &[], None, (1, 20), (0, 40)),
            tl(2, &[(1, 5)], Some(20), (5, 7), (20, 25)),
        ]
    }

    /// A failover: timeline 1 stops at segment 9, timeline 2 forks there at
    /// minute 18 and goes on.
    fn failover() -> Vec<Timeline> {
        vec![
            tl(1, &[], None, (1, 9), (0, 18)),
            tl(2, &[(1, 9)], Some(18), (9, 30), (18, 60)),
        ]
    }

    #[test]
    fn after_a_drill_forks_a_later_target_is_ambiguous() {
        let tls = drill();
        let start = seg_lsn(2);
        let auto = |target| resolve(&tls, 1, start, SEG, target, TimelineChoice::Auto);
        // Before the drill promoted, only production's history exists.
        assert_eq!(auto(Target::Time(at(19))), Ok(1));
        // After: both histories hold the time; refuse and name both.
        assert_eq!(
            auto(Target::Time(at(30))),
            Err(Unresolved::Ambiguous(vec![1, 2]))
        );
        assert_eq!(auto(Target::End), Err(Unresolved::Ambiguous(vec![1, 2])));
        // An LSN before the fork is production's; after it, on both.
        assert_eq!(auto(Target::Lsn(seg_lsn(4))), Ok(1));
        assert_eq!(
            auto(Target::Lsn(seg_lsn(6))),
            Err(Unresolved::Ambiguous(vec![1, 2]))
        );
        // Named, each is followed.
        for n in [1, 2] {
            assert_eq!(
                resolve(&tls, 1, start, SEG, Target::End, TimelineChoice::Id(n)),
                Ok(n)
            );
        }
        assert_eq!(diverged(&tls, SEG), vec![(1, 2)]);
    }

    #[test]
    fn a_failover_hands_over_to_the_new_timeline() {
        let tls = failover();
        let start = seg_lsn(2);
        let auto = |target| resolve(&tls, 1, start, SEG, target, TimelineChoice::Auto);
        assert_eq!(auto(Target::Time(at(10))), Ok(1));
        assert_eq!(auto(Target::Time(at(30))), Ok(2));
        assert_eq!(auto(Target::End), Ok(2));
        assert!(diverged(&tls, SEG).is_empty());
        assert_eq!(lineage(&tls, 1, 2, SEG), Some(vec![(1, 0), (2, 9)]));
    }

    #[test]
    fn a_restore_that_replaced_production_takes_over_its_history() {
        // Production archived segments 1..=20 until minute 30, then was
        // replaced by a restore to segment 5 that promoted at minute 35.
        let tls = vec![
            tl(1, &[], None, (1, 20), (0, 30)),
            tl(2, &[(1, 5)], Some(35), (5, 9), (35, 50)),
        ];
        let start = seg_lsn(2);
        let auto = |target| resolve(&tls, 1, start, SEG, target, TimelineChoice::Auto);
        assert_eq!(auto(Target::Time(at(25))), Ok(1));
        assert_eq!(auto(Target::Time(at(40))), Ok(2));
        assert_eq!(auto(Target::End), Ok(2));
        assert!(diverged(&tls, SEG).is_empty());
        // Production archiving once more after the promotion: two histories.
        let mut split = tls.clone();
        split[0].segments.as_mut().unwrap().last_pushed = at(36);
        assert_eq!(diverged(&split, SEG), vec![(1, 2)]);
        assert_eq!(
            resolve(&split, 1, start, SEG, Target::End, TimelineChoice::Auto),
            Err(Unresolved::Ambiguous(vec![1, 2]))
        );
    }

    #[test]
    fn a_drill_before_the_backup_is_not_its_descendant() {
        // Backup taken on timeline 1 at segment 8, after the drill forked at 5.
        let tls = drill();
        let start = seg_lsn(8);
        assert_eq!(
            descendants(&tls, 1, start)
                .iter()
                .map(|t| t.id)
                .collect::<Vec<_>>(),
            vec![1]
        );
        assert_eq!(
            resolve(&tls, 1, start, SEG, Target::End, TimelineChoice::Auto),
            Ok(1)
        );
        assert_eq!(
            resolve(&tls, 1, start, SEG, Target::End, TimelineChoice::Id(2)),
            Err(Unresolved::NotDescendant(2))
        );
        assert_eq!(lineage(&tls, 1, 3, SEG), None);
    }

    #[test]
    fn a_chain_of_failovers_follows_to_the_last() {
        let mut tls = failover();
        // Timeline 2 stops at segment 15, minute 40, when 3 takes over.
        let span = tls[1].segments.as_mut().unwrap();
        (span.last, span.last_pushed) = (15, at(40));
        tls.push(tl(3, &[(1, 9), (2, 15)], Some(40), (15, 22), (40, 50)));
        let start = seg_lsn(2);
        assert_eq!(
            resolve(&tls, 1, start, SEG, Target::End, TimelineChoice::Auto),
            Ok(3)
        );
        assert_eq!(
            resolve(
                &tls,
                1,
                start,
                SEG,
                Target::Time(at(30)),
                TimelineChoice::Auto
            ),
            Ok(2)
        );
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
            resolve(&tls, 1, start, SEG, Target::End, TimelineChoice::Latest),
            Ok(3)
        );
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
