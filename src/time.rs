//! Parsing the TIME a user types (`restore --at`) and choosing a snapshot by it.
//!
//! Pure functions: no clock, no files.

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;

/// Parses an absolute time. With an offset (`2026-11-23 14:05:00+00`,
/// `2026-11-23T14:05:00Z`) it is exact; without one (`2026-11-23 14:05`) it is
/// read in `local`.
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

/// The index of the newest item whose time is at or before `at`, among items
/// sorted oldest first.
pub fn newest_at_or_before(times: &[Timestamp], at: Timestamp) -> Option<usize> {
    times.iter().rposition(|t| *t <= at)
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
    fn picks_newest_at_or_before() {
        let times = [
            utc("2026-01-01T00:00:00Z"),
            utc("2026-01-01T01:00:00Z"),
            utc("2026-01-01T02:00:00Z"),
        ];
        assert_eq!(
            newest_at_or_before(&times, utc("2025-12-31T23:59:59Z")),
            None
        );
        assert_eq!(
            newest_at_or_before(&times, utc("2026-01-01T00:00:00Z")),
            Some(0)
        );
        assert_eq!(
            newest_at_or_before(&times, utc("2026-01-01T01:30:00Z")),
            Some(1)
        );
        assert_eq!(
            newest_at_or_before(&times, utc("2027-01-01T00:00:00Z")),
            Some(2)
        );
    }
}
