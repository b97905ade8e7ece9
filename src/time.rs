//! Parsing the TIME a user types (`restore --at`, `snapshots --since`), and
//! showing times the way listings do (choosing a snapshot by time is
//! `crate::selection`'s).
//!
//! Listings show times to the second ([`show`]), so a time written to the
//! second means that whole second: `--at "… 19:51:54+00"` includes a snapshot
//! taken at 19:51:54.79, the one the listing printed as 19:51:54.
//!
//! Pure functions: no clock, no files.

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;

/// Parses an absolute time. With an offset (`2026-11-23 14:05:00+00`,
/// `2026-11-23T14:05:00Z`) it is exact; without one (`2026-11-23 14:05`) it is
/// read in `local`. The result is the first instant the text names; see
/// [`parse_through`] for the last.
///
/// ```
/// use jiff::tz::TimeZone;
/// use rewindb::time::parse_time;
///
/// let utc = parse_time("2026-11-23 14:05:00+00", &TimeZone::UTC).unwrap();
/// let local = parse_time("2026-11-23 15:05", &TimeZone::fixed(jiff::tz::offset(1))).unwrap();
/// assert_eq!(utc, local);
/// assert!(parse_time("tuesday", &TimeZone::UTC).is_err());
/// ```
pub fn parse_time(s: &str, local: &TimeZone) -> Result<Timestamp, String> {
    let t = s.trim();
    if let Ok(ts) = t.parse::<Timestamp>() {
        return Ok(ts);
    }
    if let Ok(z) = t.parse::<jiff::ZonedDateTime>() {
        return Ok(z.timestamp());
    }
    let civil = t.parse::<DateTime>().or_else(|_| {
        t.parse::<Date>()
            .map(|d| d.to_datetime(jiff::civil::Time::midnight()))
    });
    if let Ok(Ok(ts)) = civil.map(|dt| local.to_timestamp(dt)) {
        return Ok(ts);
    }
    Err(format!(
        "malformed time {s:?}: write it like \"2026-11-23 14:05:00+00\", \
         \"2026-11-23T14:05:00Z\" or \"2026-11-23 14:05\" (local time)"
    ))
}

/// Parses a time as the last instant it includes: a time written to the
/// second without a fraction (`19:51:54`) runs to the end of that second, as
/// listings print times truncated to the second. Minutes and dates are exact
/// (`14:05` is 14:05:00): a PITR target of "14:05" must not replay 14:05:30.
///
/// ```
/// use jiff::tz::TimeZone;
/// use rewindb::time::parse_through;
///
/// let t = parse_through("2026-11-23 19:51:54+00", &TimeZone::UTC).unwrap();
/// assert_eq!(t.to_string(), "2026-11-23T19:51:54.999999999Z");
/// let exact = parse_through("2026-11-23 19:51:54.5+00", &TimeZone::UTC).unwrap();
/// assert_eq!(exact.to_string(), "2026-11-23T19:51:54.5Z");
/// ```
pub fn parse_through(s: &str, local: &TimeZone) -> Result<Timestamp, String> {
    let t = parse_time(s, local)?;
    if !written_to_the_second(s.trim()) {
        return Ok(t);
    }
    Ok(t.checked_add(jiff::SignedDuration::from_nanos(999_999_999))
        .unwrap_or(t))
}

/// Whether the time of day in `s` (after the date) has seconds and no fraction.
fn written_to_the_second(s: &str) -> bool {
    let Some(time) = s.get(11..) else {
        return false;
    };
    let clock: String = time
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ':')
        .collect();
    let after = time[clock.len()..].chars().next();
    clock.matches(':').count() == 2 && !matches!(after, Some('.' | ','))
}

/// A time as listings and messages show it: UTC, to the second (truncated),
/// so that what is printed can be typed back into `--at`.
pub fn show(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn parses_the_forms_the_docs_show() {
        let tz = TimeZone::UTC;
        let want = utc("2026-11-23T14:05:00Z");
        assert_eq!(parse_time("2026-11-23 14:05:00+00", &tz).unwrap(), want);
        assert_eq!(parse_time("2026-11-23T14:05:00Z", &tz).unwrap(), want);
        assert_eq!(parse_time("2026-11-23 14:05", &tz).unwrap(), want);
        assert_eq!(parse_time("2026-11-23 16:05:00+02:00", &tz).unwrap(), want);
        assert_eq!(
            parse_time("2026-11-23", &tz).unwrap(),
            utc("2026-11-23T00:00:00Z")
        );
    }

    #[test]
    fn local_time_uses_the_given_zone() {
        let tz = TimeZone::fixed(jiff::tz::offset(-5));
        assert_eq!(
            parse_time("2026-11-23 09:05", &tz).unwrap(),
            utc("2026-11-23T14:05:00Z")
        );
    }

    #[test]
    fn rejects_malformed_times() {
        for bad in ["yesterday", "2026-13-01", "14:05", "", "2026-11-23 25:00"] {
            let e = parse_time(bad, &TimeZone::UTC).unwrap_err();
            assert!(e.contains("malformed time"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_time_to_the_second_covers_that_second() {
        let tz = TimeZone::UTC;
        let through = |s: &str| parse_through(s, &tz).unwrap();
        // Regression: a time copied from `snapshots` missed the snapshot
        // taken 0.79 s into the printed second.
        let taken = utc("2026-11-23T19:51:54.79Z");
        assert!(taken <= through("2026-11-23 19:51:54+00"));
        assert!(taken <= through("2026-11-23T19:51:54Z"));
        assert!(taken <= through("2026-11-23 19:51:54"));
        assert!(taken <= through("2026-11-23 20:51:54+01:00"));
        assert!(taken > through("2026-11-23 19:51:54.5+00"));
        assert!(taken > through("2026-11-23 19:51:53+00"));
        // Minutes and dates stay exact.
        assert_eq!(through("2026-11-23 19:51"), utc("2026-11-23T19:51:00Z"));
        assert_eq!(through("2026-11-23"), utc("2026-11-23T00:00:00Z"));
        assert_eq!(
            through("2026-11-23T19:51:00+00:00"),
            utc("2026-11-23T19:51:00.999999999Z")
        );
        assert_eq!(show(taken), "2026-11-23 19:51:54");
    }
}
