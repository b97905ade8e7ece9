//! Retention policies: which snapshots of one source to keep (`forget`).
//!
//! Pure code, no clock and no files: [`apply`] takes the snapshots' times and
//! flags and returns, for each, the reasons it is kept (none: it goes). The
//! rules are restic's and borg's: going from the newest snapshot to the
//! oldest, `--keep-daily N` keeps the newest snapshot of each of the N most
//! recent days that have one (hourly, weekly, monthly, yearly alike);
//! `--keep-last N` keeps the N newest; `--keep-within D` keeps every snapshot
//! taken within D of the newest one (not of now: a backup that stopped
//! running does not make its history expire). Rules do not share counts:
//! a snapshot kept by one rule still fills the others' buckets.
//!
//! Whatever the policy, a protected snapshot, one whose label is listed in
//! `keep_labels`, and the newest snapshot of the source are kept.

use std::fmt;

use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};
use serde::Serialize;

/// What to keep. Counts of 0 disable a rule.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub last: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
    /// Keep everything taken within this span of the newest snapshot.
    pub within: Option<Span>,
    /// Snapshots with one of these labels are kept.
    pub keep_labels: Vec<String>,
}

impl Policy {
    /// Whether any rule that keeps older snapshots is set (the newest and
    /// protected ones are kept regardless).
    pub fn is_empty(&self) -> bool {
        self.last == 0
            && self.hourly == 0
            && self.daily == 0
            && self.weekly == 0
            && self.monthly == 0
            && self.yearly == 0
            && self.within.is_none()
            && self.keep_labels.is_empty()
    }
}

/// One snapshot as the policy sees it.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub time: Timestamp,
    pub protected: bool,
    pub label: Option<String>,
}

/// Why a snapshot is kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// The newest snapshot of its source: never removed by a policy.
    Newest,
    Protected,
    /// Its label is one of `--keep-label`.
    Label,
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
    Within,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Newest => "newest",
            Reason::Protected => "protected",
            Reason::Label => "label",
            Reason::Last => "last",
            Reason::Hourly => "hourly",
            Reason::Daily => "daily",
            Reason::Weekly => "weekly",
            Reason::Monthly => "monthly",
            Reason::Yearly => "yearly",
            Reason::Within => "within",
        })
    }
}

/// A calendar bucket rule: keeps the newest snapshot of each of the `count`
/// most recent buckets.
struct BucketRule {
    reason: Reason,
    count: u32,
    last_bucket: Option<(i32, i32, i32, i32)>,
}

/// The bucket a time falls in for a rule, as (year, month or week, day, hour)
/// truncated to the rule's unit, in `tz`.
fn bucket(reason: &Reason, t: Timestamp, tz: &TimeZone) -> (i32, i32, i32, i32) {
    let z = t.to_zoned_datetime(tz.clone());
    let (y, m, d, h) = (
        i32::from(z.year()),
        i32::from(z.month()),
        i32::from(z.day()),
        i32::from(z.hour()),
    );
    match reason {
        Reason::Hourly => (y, m, d, h),
        Reason::Daily => (y, m, d, 0),
        Reason::Weekly => {
            let w = z.date().iso_week_date();
            (i32::from(w.year()), i32::from(w.week()), 0, 0)
        }
        Reason::Monthly => (y, m, 0, 0),
        Reason::Yearly => (y, 0, 0, 0),
        _ => unreachable!("not a bucket rule"),
    }
}

/// Decides, for snapshots of one source (any order), why each is kept; an
/// empty list means it is forgotten. Calendar buckets are taken in `tz`
/// (rewindb passes UTC, so that a policy means the same on every host).
///
/// ```
/// use jiff::tz::TimeZone;
/// use rewindb::retention::{Candidate, Policy, Reason, apply};
///
/// let at = |s: &str| Candidate { time: s.parse().unwrap(), protected: false, label: None };
/// let snaps = [at("2026-11-01T10:00Z"), at("2026-11-01T22:00Z"), at("2026-11-02T09:00Z")];
/// let policy = Policy { daily: 2, ..Policy::default() };
/// let kept = apply(&policy, &snaps, &TimeZone::UTC);
/// assert!(kept[0].is_empty()); // not the newest of its day
/// assert_eq!(kept[1], [Reason::Daily]);
/// assert_eq!(kept[2], [Reason::Newest, Reason::Daily]);
/// ```
pub fn apply(policy: &Policy, snaps: &[Candidate], tz: &TimeZone) -> Vec<Vec<Reason>> {
    let mut order: Vec<usize> = (0..snaps.len()).collect();
    // Newest first; equal times keep their given order, later entries first.
    order.sort_by(|&a, &b| snaps[b].time.cmp(&snaps[a].time).then(b.cmp(&a)));
    let mut reasons = vec![Vec::new(); snaps.len()];
    let Some(&newest) = order.first() else {
        return reasons;
    };
    let within_from = policy.within.map(|span| {
        snaps[newest]
            .time
            .to_zoned_datetime(tz.clone())
            .checked_sub(span)
            .map(|z| z.timestamp())
            .unwrap_or(Timestamp::MIN)
    });
    let mut rules: Vec<BucketRule> = [
        (Reason::Hourly, policy.hourly),
        (Reason::Daily, policy.daily),
        (Reason::Weekly, policy.weekly),
        (Reason::Monthly, policy.monthly),
        (Reason::Yearly, policy.yearly),
    ]
    .into_iter()
    .map(|(reason, count)| BucketRule {
        reason,
        count,
        last_bucket: None,
    })
    .collect();
    for (rank, &i) in order.iter().enumerate() {
        let s = &snaps[i];
        let why = &mut reasons[i];
        if i == newest {
            why.push(Reason::Newest);
        }
        if s.protected {
            why.push(Reason::Protected);
        }
        if s.label
            .as_ref()
            .is_some_and(|l| policy.keep_labels.contains(l))
        {
            why.push(Reason::Label);
        }
        if rank < policy.last as usize {
            why.push(Reason::Last);
        }
        for rule in &mut rules {
            if rule.count == 0 {
                continue;
            }
            let b = bucket(&rule.reason, s.time, tz);
            if rule.last_bucket != Some(b) {
                rule.last_bucket = Some(b);
                rule.count -= 1;
                why.push(rule.reason.clone());
            }
        }
        if within_from.is_some_and(|from| s.time >= from) {
            why.push(Reason::Within);
        }
    }
    reasons
}

/// Parses `--keep-within`: "7d", "36h", "2w", "1y 6mo", or ISO 8601 ("P7D").
pub fn parse_span(s: &str) -> Result<Span, String> {
    let span: Span = s.trim().parse().map_err(|_| {
        format!(
            "malformed duration {s:?}: write it like \"7d\", \"36h\", \"2w\", \"1y 6mo\" \
             or \"P7D\""
        )
    })?;
    if span.is_negative() || span.is_zero() {
        return Err(format!("duration {s:?} must be positive"));
    }
    Ok(span)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snaps(times: &[&str]) -> Vec<Candidate> {
        times
            .iter()
            .map(|t| Candidate {
                time: t.parse().unwrap(),
                protected: false,
                label: None,
            })
            .collect()
    }

    /// The indices kept, in the given order.
    fn kept(policy: &Policy, s: &[Candidate]) -> Vec<usize> {
        apply(policy, s, &TimeZone::UTC)
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.is_empty())
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn nothing_to_decide() {
        assert!(apply(&Policy::default(), &[], &TimeZone::UTC).is_empty());
    }

    #[test]
    fn empty_policy_keeps_only_the_newest() {
        let s = snaps(&[
            "2026-01-01T00:00Z",
            "2026-01-02T00:00Z",
            "2026-01-03T00:00Z",
        ]);
        assert!(Policy::default().is_empty());
        assert_eq!(kept(&Policy::default(), &s), [2]);
    }

    #[test]
    fn last_keeps_the_newest_n_in_any_input_order() {
        let s = snaps(&[
            "2026-01-03T00:00Z",
            "2026-01-01T00:00Z",
            "2026-01-04T00:00Z",
            "2026-01-02T00:00Z",
        ]);
        let p = Policy {
            last: 2,
            ..Policy::default()
        };
        assert_eq!(kept(&p, &s), [0, 2]);
        let r = apply(&p, &s, &TimeZone::UTC);
        assert_eq!(r[2], [Reason::Newest, Reason::Last]);
        assert_eq!(r[0], [Reason::Last]);
    }

    #[test]
    fn hourly_keeps_the_newest_of_each_hour() {
        let s = snaps(&[
            "2026-03-01T10:05Z",
            "2026-03-01T10:55Z", // newest of 10:00
            "2026-03-01T11:10Z",
            "2026-03-01T11:59:59Z", // newest of 11:00
            "2026-03-01T13:00Z",    // newest of 13:00 (no snapshot at 12:00)
        ]);
        let p = Policy {
            hourly: 3,
            ..Policy::default()
        };
        assert_eq!(kept(&p, &s), [1, 3, 4]);
        let p = Policy {
            hourly: 2,
            ..Policy::default()
        };
        assert_eq!(kept(&p, &s), [3, 4]);
    }

    #[test]
    fn daily_across_a_month_and_a_year_boundary() {
        let s = snaps(&[
            "2025-12-30T08:00Z",
            "2025-12-31T08:00Z",
            "2025-12-31T23:59:59Z", // newest of Dec 31
            "2026-01-01T00:00Z",    // a new day, month and year
            "2026-01-01T06:00Z",
        ]);
        let p = Policy {
            daily: 2,
            ..Policy::default()
        };
        assert_eq!(kept(&p, &s), [2, 4]);
        let p = Policy {
            daily: 10,
            ..Policy::default()
        };
        assert_eq!(kept(&p, &s), [0, 2, 4]);
    }

    #[test]
    fn weekly_uses_iso_weeks_across_the_year_boundary() {
        // 2026-01-01 is a Thursday: ISO week 1 of 2026 began on Monday 2025-12-29.
        let s = snaps(&[
            "2025-12-27T12:00Z", // Saturday, week 52 of 2025
            "2025-12-28T12:00Z", // Sunday, week 52 of 2025: its newest
            "2025-12-29T12:00Z", // Monday, week 1 of 2026
            "2026-01-04T12:00Z", // Sunday, week 1 of 2026: its newest
            "2026-01-05T00:00Z", // Monday, week 2
        ]);
        let p = Policy {
            weekly: 3,
            ..Policy::default()
        };
        assert_eq!(kept(&p, &s), [1, 3, 4]);
    }

    #[test]
    fn monthly_and_yearly() {
        let s = snaps(&[
            "2024-06-15T00:00Z",
            "2024-12-31T23:00Z", // newest of 2024, and of December
            "2025-01-31T00:00Z",
            "2025-02-28T00:00Z", // newest of February
            "2025-03-01T00:00Z", // newest of March and of 2025
        ]);
        let monthly = Policy {
            monthly: 3,
            ..Policy::default()
        };
        assert_eq!(kept(&monthly, &s), [2, 3, 4]);
        let yearly = Policy {
            yearly: 5,
            ..Policy::default()
        };
        assert_eq!(kept(&yearly, &s), [1, 4]);
        let both = Policy {
            monthly: 2,
            yearly: 2,
            ..Policy::default()
        };
        let r = apply(&both, &s, &TimeZone::UTC);
        assert_eq!(r[1], [Reason::Yearly]);
        assert_eq!(r[3], [Reason::Monthly]);
        assert_eq!(r[4], [Reason::Newest, Reason::Monthly, Reason::Yearly]);
        assert!(r[0].is_empty() && r[2].is_empty());
    }

    #[test]
    fn within_counts_back_from_the_newest_snapshot_not_from_now() {
        let s = snaps(&[
            "2026-01-01T00:00Z",
            "2026-01-08T00:00Z",
            "2026-01-09T12:00Z",
            "2026-01-10T00:00Z",
        ]);
        let p = Policy {
            within: Some(parse_span("2d").unwrap()),
            ..Policy::default()
        };
        assert_eq!(kept(&p, &s), [1, 2, 3]);
        let p = Policy {
            within: Some(parse_span("36h").unwrap()),
            ..Policy::default()
        };
        assert_eq!(kept(&p, &s), [2, 3]);
    }

    #[test]
    fn within_a_month_is_calendar_aware() {
        // One month before March 31 is February 28 (2026 is not a leap year).
        let s = snaps(&[
            "2026-02-27T23:00Z",
            "2026-02-28T00:00Z",
            "2026-03-31T00:00Z",
        ]);
        let p = Policy {
            within: Some(parse_span("1mo").unwrap()),
            ..Policy::default()
        };
        assert_eq!(kept(&p, &s), [1, 2]);
    }

    #[test]
    fn protected_and_labelled_snapshots_survive_any_policy() {
        let mut s = snaps(&[
            "2026-01-01T00:00Z",
            "2026-01-02T00:00Z",
            "2026-01-03T00:00Z",
            "2026-01-04T00:00Z",
        ]);
        s[0].protected = true;
        s[1].label = Some("before-migration".into());
        s[2].label = Some("hourly".into());
        let p = Policy {
            last: 1,
            keep_labels: vec!["before-migration".into()],
            ..Policy::default()
        };
        let r = apply(&p, &s, &TimeZone::UTC);
        assert_eq!(r[0], [Reason::Protected]);
        assert_eq!(r[1], [Reason::Label]);
        assert!(r[2].is_empty());
        assert_eq!(r[3], [Reason::Newest, Reason::Last]);
    }

    #[test]
    fn buckets_are_taken_in_the_given_time_zone() {
        // 23:30 and 00:30 UTC on consecutive days are the same day at UTC-5.
        let s = snaps(&["2026-05-01T23:30Z", "2026-05-02T00:30Z"]);
        let p = Policy {
            daily: 5,
            ..Policy::default()
        };
        assert_eq!(kept(&p, &s), [0, 1]);
        let est = TimeZone::fixed(jiff::tz::offset(-5));
        let r = apply(&p, &s, &est);
        assert!(r[0].is_empty());
        // Times given with an offset are the same instants: UTC buckets.
        let s2 = snaps(&["2026-05-01T18:30-05:00", "2026-05-01T19:30-05:00"]);
        assert_eq!(kept(&p, &s2), [0, 1]);
    }

    #[test]
    fn rules_combine_like_restic() {
        // Hourly backups over three days; keep 4 hourly, 3 daily.
        let mut times = Vec::new();
        for day in 1..=3 {
            for hour in [0, 6, 12, 18] {
                times.push(format!("2026-07-0{day}T{hour:02}:00Z"));
            }
        }
        let refs: Vec<&str> = times.iter().map(String::as_str).collect();
        let s = snaps(&refs);
        let p = Policy {
            hourly: 4,
            daily: 3,
            ..Policy::default()
        };
        // The last four, plus the newest of days 1 and 2 (18:00).
        assert_eq!(kept(&p, &s), [3, 7, 8, 9, 10, 11]);
    }

    #[test]
    fn spans() {
        for ok in ["7d", "36h", "2w", "1y 6mo", "P7D", "90 minutes"] {
            assert!(parse_span(ok).is_ok(), "{ok}");
        }
        for bad in ["", "soon", "-3d", "0d", "7"] {
            assert!(parse_span(bad).is_err(), "{bad}");
        }
    }
}
