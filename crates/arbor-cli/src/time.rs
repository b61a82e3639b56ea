//! Parsing and printing times the way `ostree` accepts and shows them.

use anyhow::{anyhow, bail, Result};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// `--timestamp`: `@SECONDS` or RFC 3339.
pub fn parse_timestamp(s: &str) -> Result<u64> {
    if let Some(secs) = s.strip_prefix('@') {
        return secs
            .parse::<u64>()
            .map_err(|_| anyhow!("Invalid timestamp '{s}': expected @SECONDS"));
    }
    let dt = DateTime::parse_from_rfc3339(s)
        .map_err(|e| anyhow!("Invalid timestamp '{s}' (expected @SECONDS or RFC 3339): {e}"))?;
    u64::try_from(dt.timestamp()).map_err(|_| anyhow!("Timestamp '{s}' is before 1970"))
}

/// Environment variable of reproducible builds: the commit time when
/// `--timestamp` is not given.
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";

/// `SOURCE_DATE_EPOCH` (seconds), if set: the CLI reads it and passes it
/// to the library, which reads no environment.
pub fn source_date_epoch() -> Result<Option<u64>> {
    let Some(v) = std::env::var_os(SOURCE_DATE_EPOCH) else {
        return Ok(None);
    };
    let v = v.to_string_lossy();
    v.trim()
        .parse()
        .map(Some)
        .map_err(|_| anyhow!("Invalid {SOURCE_DATE_EPOCH} '{v}'"))
}

/// A date for `prune --keep-younger-than`: anything [`parse_timestamp`]
/// takes, `YYYY-MM-DD`, `YYYY-MM-DD HH:MM:SS` (UTC), or `N UNIT ago` with
/// UNIT one of seconds, minutes, hours, days, weeks.
pub fn parse_date(s: &str, now: u64) -> Result<u64> {
    let t = s.trim();
    if let Some(rest) = t.strip_suffix(" ago") {
        let mut parts = rest.split_whitespace();
        let (Some(n), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
            bail!("Invalid date '{s}'");
        };
        let n: u64 = n
            .parse()
            .map_err(|_| anyhow!("Invalid number in date '{s}'"))?;
        let mult = match unit.trim_end_matches('s') {
            "second" | "sec" => 1,
            "minute" | "min" => 60,
            "hour" => 3600,
            "day" => 86400,
            "week" => 7 * 86400,
            _ => bail!("Invalid unit '{unit}' in date '{s}'"),
        };
        return Ok(now.saturating_sub(n.saturating_mul(mult)));
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        let dt = d.and_hms_opt(0, 0, 0).expect("midnight exists");
        return u64::try_from(dt.and_utc().timestamp()).map_err(|_| anyhow!("Date before 1970"));
    }
    if let Ok(dt) = NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S") {
        return u64::try_from(dt.and_utc().timestamp()).map_err(|_| anyhow!("Date before 1970"));
    }
    parse_timestamp(t)
}

/// `2020-01-01 00:00:00 +0000`, as `ostree log` prints commit dates.
pub fn format_date(ts: u64) -> String {
    match i64::try_from(ts)
        .ok()
        .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0))
    {
        Some(dt) => dt.format("%Y-%m-%d %H:%M:%S +0000").to_string(),
        None => format!("@{ts}"),
    }
}

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp("@1577836800").unwrap(), 1577836800);
        assert_eq!(parse_timestamp("2020-01-01T00:00:00Z").unwrap(), 1577836800);
        assert_eq!(
            parse_timestamp("2020-01-01T01:00:00+01:00").unwrap(),
            1577836800
        );
        assert!(parse_timestamp("yesterday").is_err());
        assert!(parse_timestamp("@-5").is_err());
        assert_eq!(format_date(1577836800), "2020-01-01 00:00:00 +0000");
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date("2020-01-01", 0).unwrap(), 1577836800);
        assert_eq!(
            parse_date("2 days ago", 1_000_000).unwrap(),
            1_000_000 - 172_800
        );
        assert_eq!(
            parse_date("1 week ago", 1_000_000).unwrap(),
            1_000_000 - 604_800
        );
        assert!(parse_date("2 fortnights ago", 0).is_err());
    }
}
