//! Maintenance windows (the `periodic` strategy): on the given weekdays,
//! from a local start time, for a number of minutes, in a time zone.
//!
//! A window starts at its local start time on its day, resolved as the
//! tz database says: a start inside a daylight-saving gap moves forward
//! by the gap (02:30 on the spring-forward day is 03:30), a start in the
//! repeated hour takes its first occurrence. Its length is elapsed time
//! from that instant (60 minutes are 60 minutes, across a DST change or
//! midnight). Every function takes `now`, so tests pass any clock.

use std::time::Duration;

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};

/// One maintenance window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The days it starts on.
    pub days: Vec<Weekday>,
    /// Its local start time.
    pub start: Time,
    /// Its length.
    pub length_minutes: u64,
}

impl Window {
    /// This window's occurrences (start, end) that start from 8 days
    /// before `now` to 8 days after (a window is at most 7 days long).
    fn around(&self, tz: &TimeZone, now: Timestamp) -> Vec<(Timestamp, Timestamp)> {
        let today = now.to_zoned(tz.clone()).date();
        let mut v = Vec::new();
        for d in -8i64..=8 {
            let Ok(date) = today.checked_add(d.days()) else {
                continue;
            };
            if !self.days.contains(&date.weekday()) {
                continue;
            }
            let Ok(start) = date.to_datetime(self.start).to_zoned(tz.clone()) else {
                continue;
            };
            let start = start.timestamp();
            let len = SignedDuration::from_secs(60 * self.length_minutes as i64);
            if let Ok(end) = start.checked_add(len) {
                v.push((start, end));
            }
        }
        v
    }
}

/// The window `now` is in, as (start, end): `None` outside every window.
/// Windows that overlap or touch count as one (the end is where the
/// last of them ends).
pub fn current(
    windows: &[Window],
    tz: &TimeZone,
    now: Timestamp,
) -> Option<(Timestamp, Timestamp)> {
    let all: Vec<(Timestamp, Timestamp)> = windows.iter().flat_map(|w| w.around(tz, now)).collect();
    let (start, mut end) = all
        .iter()
        .copied()
        .filter(|&(s, e)| s <= now && now < e)
        .max_by_key(|&(_, e)| e)?;
    loop {
        let further = all
            .iter()
            .filter(|&&(s, e)| s <= end && e > end)
            .map(|&(_, e)| e)
            .max();
        match further {
            Some(e) => end = e,
            None => return Some((start, end)),
        }
    }
}

/// When the next window opens after `now` (`now` itself when inside
/// one); `None` only with no window at all.
pub fn next_start(windows: &[Window], tz: &TimeZone, now: Timestamp) -> Option<Timestamp> {
    if current(windows, tz, now).is_some() {
        return Some(now);
    }
    windows
        .iter()
        .flat_map(|w| w.around(tz, now))
        .map(|(s, _)| s)
        .filter(|&s| s > now)
        .min()
}

/// `base` spread by up to ±`percent`% with the random value `r` (from
/// the caller's random source; the same `r` gives the same wait): so
/// that a fleet's machines do not check at the same moment.
pub fn jittered(base: Duration, percent: u32, r: u64) -> Duration {
    let span = base.as_millis() as u64 * u64::from(percent.min(100)) / 100;
    if span == 0 {
        return base;
    }
    let off = r % (2 * span + 1);
    let ms = base.as_millis() as u64 + off - span;
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn win(days: &[Weekday], hh: i8, mm: i8, len: u64) -> Window {
        Window {
            days: days.to_vec(),
            start: Time::new(hh, mm, 0, 0).unwrap(),
            length_minutes: len,
        }
    }

    #[test]
    fn a_window_across_midnight() {
        // 2026-12-05 is a Saturday.
        let w = [win(&[Weekday::Saturday], 23, 30, 60)];
        let utc = TimeZone::UTC;
        assert_eq!(current(&w, &utc, at("2026-12-05T23:29:59Z")), None);
        let inside = current(&w, &utc, at("2026-12-06T00:15:00Z")).unwrap();
        assert_eq!(
            inside,
            (at("2026-12-05T23:30:00Z"), at("2026-12-06T00:30:00Z"))
        );
        assert_eq!(current(&w, &utc, at("2026-12-06T00:30:00Z")), None);
        assert_eq!(
            next_start(&w, &utc, at("2026-12-06T00:31:00Z")),
            Some(at("2026-12-12T23:30:00Z"))
        );
        assert_eq!(
            next_start(&w, &utc, at("2026-12-06T00:15:00Z")),
            Some(at("2026-12-06T00:15:00Z"))
        );
    }

    #[test]
    fn overlapping_and_touching_windows_are_one() {
        // Monday 2026-12-07: 01:00+60, 01:30+90, 03:00+30 (touching).
        let w = [
            win(&[Weekday::Monday], 1, 0, 60),
            win(&[Weekday::Monday], 1, 30, 90),
            win(&[Weekday::Monday], 3, 0, 30),
        ];
        let utc = TimeZone::UTC;
        assert_eq!(
            current(&w, &utc, at("2026-12-07T01:15:00Z")),
            Some((at("2026-12-07T01:00:00Z"), at("2026-12-07T03:30:00Z")))
        );
        // A window one minute short of a week, seen from its last minute
        // (the next one starts a minute after it ends: not one window).
        let week = [win(&[Weekday::Monday], 0, 0, 10079)];
        assert_eq!(
            current(&week, &utc, at("2026-12-13T23:58:30Z")),
            Some((at("2026-12-07T00:00:00Z"), at("2026-12-13T23:59:00Z")))
        );
        assert_eq!(current(&week, &utc, at("2026-12-13T23:59:30Z")), None);
    }

    #[test]
    fn several_windows_the_earliest_next() {
        let w = [
            win(&[Weekday::Monday, Weekday::Thursday], 3, 0, 30),
            win(&[Weekday::Tuesday], 1, 0, 30),
        ];
        let utc = TimeZone::UTC;
        // Monday 2026-12-07 04:00: next is Tuesday 01:00.
        assert_eq!(
            next_start(&w, &utc, at("2026-12-07T04:00:00Z")),
            Some(at("2026-12-08T01:00:00Z"))
        );
        // Tuesday 02:00: next is Thursday 03:00.
        assert_eq!(
            next_start(&w, &utc, at("2026-12-08T02:00:00Z")),
            Some(at("2026-12-10T03:00:00Z"))
        );
        assert_eq!(next_start(&[], &utc, at("2026-12-08T02:00:00Z")), None);
    }

    #[test]
    fn time_zones_and_daylight_saving() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        let w = [win(&[Weekday::Sunday], 2, 30, 60)];
        // 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 does not exist
        // and moves to 03:30 CEST (01:30 UTC); 60 minutes of real time.
        let spring = current(&w, &berlin, at("2026-03-29T01:45:00Z")).unwrap();
        assert_eq!(
            spring,
            (at("2026-03-29T01:30:00Z"), at("2026-03-29T02:30:00Z"))
        );
        // 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens twice,
        // the window takes the first (00:30 UTC), 60 minutes.
        let autumn = current(&w, &berlin, at("2026-10-25T01:00:00Z")).unwrap();
        assert_eq!(
            autumn,
            (at("2026-10-25T00:30:00Z"), at("2026-10-25T01:30:00Z"))
        );
        assert_eq!(current(&w, &berlin, at("2026-10-25T01:30:00Z")), None);
        // An ordinary winter Sunday: 02:30 CET is 01:30 UTC.
        assert_eq!(
            next_start(&w, &berlin, at("2026-12-06T00:00:00Z")),
            Some(at("2026-12-06T01:30:00Z"))
        );
        // New York, Monday 09:00: 14:00 UTC in winter, 13:00 in summer.
        let ny = TimeZone::get("America/New_York").unwrap();
        let m = [win(&[Weekday::Monday], 9, 0, 15)];
        assert_eq!(
            next_start(&m, &ny, at("2026-12-06T00:00:00Z")),
            Some(at("2026-12-07T14:00:00Z"))
        );
        assert_eq!(
            next_start(&m, &ny, at("2026-07-05T00:00:00Z")),
            Some(at("2026-07-06T13:00:00Z"))
        );
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        let base = Duration::from_secs(300);
        let (lo, hi) = (Duration::from_secs(240), Duration::from_secs(360));
        let mut seen = std::collections::BTreeSet::new();
        for r in [
            0,
            1,
            59_999,
            60_000,
            60_001,
            119_999,
            120_000,
            u64::MAX,
            12_345_678_901,
        ] {
            let d = jittered(base, 20, r);
            assert!(lo <= d && d <= hi, "{r}: {d:?}");
            seen.insert(d);
        }
        assert_eq!(jittered(base, 20, 0), lo);
        assert_eq!(jittered(base, 20, 120_000), hi);
        assert!(seen.len() > 5);
        assert_eq!(jittered(base, 0, 7), base);
    }
}
