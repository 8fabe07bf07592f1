//! CronJob schedules: the five fields of cron (minute hour day-of-month month
//! day-of-week), or six/seven with seconds first and a year last, read in a timezone.
//!
//! Days of the week count as cron counts them, 0 or 7 for Sunday and 1 for Monday
//! (names work too), although the `cron` crate underneath counts 1 for Sunday: an
//! operator's `0 3 * * 1` runs on Mondays. Across daylight-saving changes, a local time
//! that does not exist that day is skipped, and one that happens twice runs once.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

#[derive(Debug, Clone)]
pub struct CronSchedule {
    schedule: cron::Schedule,
    timezone: Tz,
    /// Fixed hours (`3`, `2,14`) run once on a night with a repeated hour; `*` runs
    /// every hour, both of the repeated ones too.
    fixed_hours: bool,
}

impl CronSchedule {
    /// `timezone` is an IANA name (`Europe/Berlin`); none means UTC.
    pub fn parse(expression: &str, timezone: Option<&str>) -> Result<CronSchedule, String> {
        let timezone = match timezone {
            None => Tz::UTC,
            Some(name) => Tz::from_str(name).map_err(|_| {
                format!("`{name}` is not a timezone: expected an IANA name such as Europe/Berlin or UTC")
            })?,
        };
        let fields: Vec<&str> = expression.split_whitespace().collect();
        let (seconds, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 | 7 => (fields[0], &fields[1..]),
            n => {
                return Err(format!(
                    "`{expression}` has {n} fields; expected 5 (minute hour day-of-month month day-of-week), or 6/7 with seconds first and a year last"
                ))
            }
        };
        let day_of_week = cron_crate_days(rest[4])?;
        let mut translated = vec![seconds, rest[0], rest[1], rest[2], rest[3], &day_of_week];
        translated.extend(rest.get(5));
        let schedule = cron::Schedule::from_str(&translated.join(" "))
            .map_err(|e| format!("`{expression}` is not a cron schedule: {e}"))?;
        Ok(CronSchedule {
            schedule,
            timezone,
            fixed_hours: !rest[1].starts_with('*'),
        })
    }

    /// The first time the schedule fires strictly after `after`.
    pub fn next_after(&self, after: SystemTime) -> Option<SystemTime> {
        self.times_after(after).next()
    }

    /// The times it fires strictly after `after`, in order.
    pub fn times_after(&self, after: SystemTime) -> impl Iterator<Item = SystemTime> + '_ {
        let start = self.timezone.from_utc_datetime(&to_utc(after).naive_utc());
        let mut last: Option<SystemTime> = None;
        self.schedule
            .after_owned(start)
            .map(|time| from_utc(time.with_timezone(&Utc)))
            // A local time that happens twice (clocks go back) fires once.
            .filter(move |time| {
                let repeat = self.fixed_hours
                    && last.is_some_and(|last| {
                        time.duration_since(last).unwrap_or_default() <= Duration::from_secs(3600)
                            && self.same_local_time(last, *time)
                    });
                last = Some(*time);
                !repeat
            })
    }

    fn same_local_time(&self, a: SystemTime, b: SystemTime) -> bool {
        let local = |t: SystemTime| to_utc(t).with_timezone(&self.timezone).naive_local();
        local(a) == local(b)
    }
}

fn to_utc(time: SystemTime) -> DateTime<Utc> {
    DateTime::<Utc>::from(time)
}

fn from_utc(time: DateTime<Utc>) -> SystemTime {
    let millis = time.timestamp_millis().max(0) as u64;
    UNIX_EPOCH + Duration::from_millis(millis)
}

/// Cron's day-of-week field (0-7, Sunday 0 or 7) as the `cron` crate reads it (1-7,
/// Sunday 1).
fn cron_crate_days(field: &str) -> Result<String, String> {
    let day = |text: &str| -> Result<String, String> {
        match text.parse::<u8>() {
            Ok(n @ 0..=6) => Ok((n + 1).to_string()),
            Ok(7) => Ok("1".to_string()),
            Ok(n) => Err(format!(
                "day of week {n} is out of range: expected 0-7 (0 and 7 are Sunday)"
            )),
            // A name (`MON`), `*` or `?`.
            Err(_) => Ok(text.to_string()),
        }
    };
    let mut items = Vec::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (item, None),
        };
        let translated = match range.split_once('-') {
            // `5-7` ends on Sunday, which the crate counts first: split it.
            Some((from, "7")) if step.is_none() && from.parse::<u8>().is_ok() => {
                format!("{}-7,1", day(from)?)
            }
            Some((from, to)) => format!("{}-{}", day(from)?, day(to)?),
            None => day(range)?,
        };
        items.push(match step {
            Some(step) => format!("{translated}/{step}"),
            None => translated,
        });
    }
    Ok(items.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        DateTime::parse_from_rfc3339(text).unwrap().into()
    }

    fn utc(time: SystemTime) -> String {
        to_utc(time).format("%Y-%m-%dT%H:%M:%SZ").to_string()
    }

    fn next(schedule: &CronSchedule, after: &str, count: usize) -> Vec<String> {
        schedule
            .times_after(at(after))
            .take(count)
            .map(utc)
            .collect()
    }

    #[test]
    fn five_fields_read_as_cron_does_with_monday_as_one() {
        let mondays = CronSchedule::parse("0 3 * * 1", None).unwrap();
        // 2026-12-02 is a Wednesday.
        assert_eq!(
            next(&mondays, "2026-12-02T10:00:00Z", 2),
            ["2026-12-07T03:00:00Z", "2026-12-14T03:00:00Z"]
        );
        let weekend = CronSchedule::parse("0 0 * * 6-7", None).unwrap();
        assert_eq!(
            next(&weekend, "2026-12-02T10:00:00Z", 3),
            [
                "2026-12-05T00:00:00Z",
                "2026-12-06T00:00:00Z",
                "2026-12-12T00:00:00Z"
            ]
        );
        let seconds = CronSchedule::parse("*/20 * * * * *", None).unwrap();
        assert_eq!(
            next(&seconds, "2026-12-02T10:00:00Z", 2),
            ["2026-12-02T10:00:20Z", "2026-12-02T10:00:40Z"]
        );
        for bad in ["* * * *", "0 3 * * 9", "61 * * * *"] {
            assert!(CronSchedule::parse(bad, None).is_err(), "{bad}");
        }
        let zone = CronSchedule::parse("0 3 * * *", Some("Mars/Olympus")).unwrap_err();
        assert!(zone.contains("IANA"), "{zone}");
    }

    #[test]
    fn a_timezone_moves_the_utc_time_across_daylight_saving() {
        let berlin = CronSchedule::parse("0 3 * * *", Some("Europe/Berlin")).unwrap();
        // Summer time starts on 2026-03-29: 03:00 local is 01:00 UTC from then on.
        assert_eq!(
            next(&berlin, "2026-03-27T12:00:00Z", 3),
            [
                "2026-03-28T02:00:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-30T01:00:00Z"
            ]
        );
    }

    #[test]
    fn a_skipped_local_time_does_not_run_and_a_repeated_one_runs_once() {
        let berlin = CronSchedule::parse("30 2 * * *", Some("Europe/Berlin")).unwrap();
        // 2026-03-29 has no 02:30 in Berlin; 2026-10-25 has two.
        assert_eq!(
            next(&berlin, "2026-03-28T12:00:00Z", 2),
            ["2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z"]
        );
        let autumn = next(&berlin, "2026-10-24T12:00:00Z", 2);
        assert_eq!(autumn, ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]);
        // A job for every hour runs in both of that night's 02:00 hours.
        let hourly = CronSchedule::parse("0 * * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            next(&hourly, "2026-10-24T23:30:00Z", 3),
            [
                "2026-10-25T00:00:00Z",
                "2026-10-25T01:00:00Z",
                "2026-10-25T02:00:00Z"
            ]
        );
    }
}
