//! Cron schedules: five fields (minute, hour, day of month, month, day of week) in
//! UTC, with `*`, lists, ranges, steps, month and day names, and the `@hourly`,
//! `@daily`, `@weekly`, `@monthly`, `@yearly` shorthands. As in classic cron, when both
//! day fields are restricted a day matches if either does.

use cordon_core::Timestamp;
use time::{Date, OffsetDateTime, Time};

/// A parsed schedule: one bit per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    day_restricted: bool,
    weekday_restricted: bool,
}

/// How many days `next_after` looks ahead: a little over eight years, the longest gap
/// between two February 29ths (2096 to 2104), so every possible schedule is found.
const SEARCH_DAYS: u32 = 366 * 8 + 1;

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

fn value(text: &str, min: u32, max: u32, names: &[&str], name_base: u32) -> Result<u32, String> {
    let upper = text.to_ascii_uppercase();
    if let Some(i) = names.iter().position(|n| *n == upper) {
        return Ok(name_base + u32::try_from(i).unwrap_or(0));
    }
    let n: u32 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if n < min || n > max {
        return Err(format!("{n} is outside {min}-{max}"));
    }
    Ok(n)
}

/// Parses one field into a bit set; returns it and whether it was restricted.
fn field(
    text: &str,
    min: u32,
    max: u32,
    names: &[&str],
    name_base: u32,
) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    // Only a bare `*` (or `?`) leaves a field unrestricted; `*/2` restricts it. This
    // matters for the day fields' either-matches rule.
    let restricted = text != "*" && text != "?";
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .map_err(|_| format!("`{step}` is not a step"))?;
                if step == 0 {
                    return Err("a step must be at least 1".to_owned());
                }
                (range, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" || range == "?" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (
                value(a, min, max, names, name_base)?,
                value(b, min, max, names, name_base)?,
            )
        } else {
            let v = value(range, min, max, names, name_base)?;
            // `5/15` means from 5 to the end in steps of 15.
            (v, if part.contains('/') { max } else { v })
        };
        if lo > hi {
            return Err(format!("the range {lo}-{hi} is empty"));
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            // A step past the end (even u32::MAX) stops the walk.
            match v.checked_add(step) {
                Some(next) => v = next,
                None => break,
            }
        }
    }
    Ok((bits, restricted))
}

/// Parses a schedule.
pub fn parse(text: &str) -> Result<Cron, String> {
    let trimmed = text.trim();
    let expanded = match trimmed.to_ascii_lowercase().as_str() {
        "@hourly" => "0 * * * *",
        "@daily" | "@midnight" => "0 0 * * *",
        "@weekly" => "0 0 * * 0",
        "@monthly" => "0 0 1 * *",
        "@yearly" | "@annually" => "0 0 1 1 *",
        _ => trimmed,
    };
    let fields: Vec<&str> = expanded.split_whitespace().collect();
    let [minute, hour, day, month, weekday] = fields.as_slice() else {
        return Err(format!(
            "`{text}` has {} fields; a schedule has five: minute hour day-of-month month day-of-week",
            fields.len()
        ));
    };
    let at = |name: &str, r: Result<(u64, bool), String>| r.map_err(|e| format!("{name}: {e}"));
    let (minutes, _) = at("minute", field(minute, 0, 59, &[], 0))?;
    let (hours, _) = at("hour", field(hour, 0, 23, &[], 0))?;
    let (days, day_restricted) = at("day of month", field(day, 1, 31, &[], 0))?;
    let (months, _) = at("month", field(month, 1, 12, &MONTHS, 1))?;
    let (weekdays, weekday_restricted) = at("day of week", field(weekday, 0, 7, &DAYS, 0))?;
    // 7 is Sunday too.
    let weekdays = (weekdays | (weekdays >> 7)) & 0x7f;
    Ok(Cron {
        minutes,
        hours: u32::try_from(hours).unwrap_or(0),
        days: u32::try_from(days).unwrap_or(0),
        months: u16::try_from(months).unwrap_or(0),
        weekdays: u8::try_from(weekdays).unwrap_or(0),
        day_restricted,
        weekday_restricted,
    })
}

impl Cron {
    fn day_matches(&self, date: Date) -> bool {
        let dom = self.days & (1 << date.day()) != 0;
        let dow = self.weekdays & (1 << date.weekday().number_days_from_sunday()) != 0;
        match (self.day_restricted, self.weekday_restricted) {
            (true, true) => dom || dow,
            (true, false) => dom,
            (false, true) => dow,
            (false, false) => true,
        }
    }

    /// The first whole minute strictly after `after` that matches, searching a little
    /// over eight years of days (enough for any February 29th); `None` when nothing ever
    /// matches (`0 0 31 2 *`) or the time is outside the years the `time` crate handles
    /// (-9999 to 9999).
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let micros = i128::from(after.unix_micros());
        let start = OffsetDateTime::from_unix_timestamp_nanos(micros * 1_000).ok()?;
        // The next whole minute.
        let start = start
            .replace_second(0)
            .ok()?
            .replace_nanosecond(0)
            .ok()?
            .checked_add(time::Duration::minutes(1))?;
        let mut date = start.date();
        let first_time = start.time();
        for day in 0..SEARCH_DAYS {
            let month_ok = self.months & (1 << u8::from(date.month())) != 0;
            if month_ok && self.day_matches(date) {
                let from = if day == 0 {
                    (first_time.hour(), first_time.minute())
                } else {
                    (0, 0)
                };
                for hour in from.0..24 {
                    if self.hours & (1 << hour) == 0 {
                        continue;
                    }
                    let first_minute = if hour == from.0 { from.1 } else { 0 };
                    for minute in first_minute..60 {
                        if self.minutes & (1 << minute) != 0 {
                            let t = Time::from_hms(hour, minute, 0).ok()?;
                            let at = date.with_time(t).assume_utc();
                            let micros = at.unix_timestamp_nanos() / 1_000;
                            return Some(Timestamp::from_unix_micros(i64::try_from(micros).ok()?));
                        }
                    }
                }
            }
            date = date.next_day()?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn ts(t: OffsetDateTime) -> Timestamp {
        Timestamp::from_unix_micros(i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap())
    }

    fn next(expr: &str, after: OffsetDateTime) -> Option<Timestamp> {
        parse(expr).unwrap().next_after(ts(after))
    }

    #[test]
    fn next_times() {
        let t = datetime!(2026-11-28 19:07:30 UTC);
        assert_eq!(
            next("*/5 * * * *", t),
            Some(ts(datetime!(2026-11-28 19:10 UTC)))
        );
        assert_eq!(
            next("* * * * *", t),
            Some(ts(datetime!(2026-11-28 19:08 UTC)))
        );
        assert_eq!(
            next("@hourly", t),
            Some(ts(datetime!(2026-11-28 20:00 UTC)))
        );
        assert_eq!(next("@daily", t), Some(ts(datetime!(2026-11-29 00:00 UTC))));
        assert_eq!(
            next("0 9 * * MON-FRI", t),
            Some(ts(datetime!(2026-11-30 09:00 UTC)))
        );
        assert_eq!(
            next("30 2 1 jan *", t),
            Some(ts(datetime!(2027-01-01 02:30 UTC)))
        );
        assert_eq!(
            next("0 0 29 2 *", t),
            Some(ts(datetime!(2028-02-29 00:00 UTC)))
        );
        assert_eq!(next("0 0 31 2 *", t), None);
        // Both day fields restricted: either matches (the 1st, or a Sunday).
        assert_eq!(
            next("0 0 1 * 0", t),
            Some(ts(datetime!(2026-11-29 00:00 UTC)))
        );
        assert_eq!(
            next("0 0 * * 7", t),
            Some(ts(datetime!(2026-11-29 00:00 UTC)))
        );
        // Strictly after: a matching instant itself is not returned.
        let exact = datetime!(2026-11-28 19:10 UTC);
        assert_eq!(
            next("*/5 * * * *", exact),
            Some(ts(datetime!(2026-11-28 19:15 UTC)))
        );
    }

    #[test]
    fn fields_lists_ranges_steps_and_names() {
        let c = parse("5/20 1-5/2,22 * jan,Mar-may sun").unwrap();
        assert_eq!(c.minutes, (1 << 5) | (1 << 25) | (1 << 45));
        assert_eq!(c.hours, (1 << 1) | (1 << 3) | (1 << 5) | (1 << 22));
        assert_eq!(c.months, (1 << 1) | (1 << 3) | (1 << 4) | (1 << 5));
        assert_eq!(c.weekdays, 1);
        assert!(!c.day_restricted && c.weekday_restricted);
        // 0 and 7 are both Sunday; names are case-insensitive.
        assert_eq!(parse("0 0 * * 7").unwrap(), parse("0 0 * * Sun").unwrap());
        assert_eq!(
            parse("0 0 * * 5-7").unwrap().weekdays,
            (1 << 5) | (1 << 6) | 1
        );
        assert_eq!(parse("@DAILY").unwrap(), parse("0 0 * * *").unwrap());
        assert_eq!(parse("@weekly").unwrap(), parse("0 0 * * 0").unwrap());
        assert_eq!(parse("@monthly").unwrap(), parse("0 0 1 * *").unwrap());
        assert_eq!(parse("@yearly").unwrap(), parse("0 0 1 1 *").unwrap());
        // Huge steps neither overflow nor panic.
        assert_eq!(parse("5/4294967295 * * * *").unwrap().minutes, 1 << 5);
    }

    #[test]
    fn month_ends_leap_years_and_year_ends() {
        // The 31st skips the months without one.
        let t = datetime!(2026-04-15 00:00 UTC);
        assert_eq!(
            next("0 0 31 * *", t),
            Some(ts(datetime!(2026-05-31 00:00 UTC)))
        );
        assert_eq!(
            next("0 0 31 * *", datetime!(2026-05-31 00:00 UTC)),
            Some(ts(datetime!(2026-07-31 00:00 UTC)))
        );
        // Feb 29 only in leap years; 2100 is not one, 2000 was.
        assert_eq!(
            next("0 12 29 feb *", datetime!(2028-02-29 12:00 UTC)),
            Some(ts(datetime!(2032-02-29 12:00 UTC)))
        );
        assert_eq!(
            next("0 0 29 2 *", datetime!(1999-03-01 00:00 UTC)),
            Some(ts(datetime!(2000-02-29 00:00 UTC)))
        );
        assert_eq!(
            next("0 0 29 2 *", datetime!(2096-03-01 00:00 UTC)),
            Some(ts(datetime!(2104-02-29 00:00 UTC)))
        );
        // The last day of February, leap or not.
        assert_eq!(
            next("59 23 28,29 2 *", datetime!(2027-02-28 23:59 UTC)),
            Some(ts(datetime!(2028-02-28 23:59 UTC)))
        );
        // Across the new year, within the minute, hour and day.
        assert_eq!(
            next("* * * * *", datetime!(2026-12-31 23:59:59.999 UTC)),
            Some(ts(datetime!(2027-01-01 00:00 UTC)))
        );
        assert_eq!(
            next("0 0 * * *", datetime!(2026-12-31 00:00:00.000001 UTC)),
            Some(ts(datetime!(2027-01-01 00:00 UTC)))
        );
        // Never: April 31st, November 31st.
        assert_eq!(next("0 0 31 4,11 *", t), None);
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        // 2026-11-28 is a Saturday.
        let t = datetime!(2026-11-28 12:00 UTC);
        // Both restricted: the 15th or a Monday, whichever is first.
        assert_eq!(
            next("0 0 15 * mon", t),
            Some(ts(datetime!(2026-11-30 00:00 UTC)))
        );
        assert_eq!(
            next("0 0 29 * mon", t),
            Some(ts(datetime!(2026-11-29 00:00 UTC)))
        );
        // Only the weekday restricted: only Mondays.
        assert_eq!(
            next("0 0 * * 1", t),
            Some(ts(datetime!(2026-11-30 00:00 UTC)))
        );
        // Only the day restricted: only the 15th.
        assert_eq!(
            next("0 0 15 * *", t),
            Some(ts(datetime!(2026-12-15 00:00 UTC)))
        );
        // Friday the 13th is not "the 13th and a Friday" but either.
        assert_eq!(
            next("0 0 13 * 5", t),
            Some(ts(datetime!(2026-12-04 00:00 UTC)))
        );
    }

    #[test]
    fn outside_the_calendar_is_none_not_a_panic() {
        let c = parse("* * * * *").unwrap();
        assert_eq!(c.next_after(Timestamp::from_unix_micros(i64::MAX)), None);
        assert_eq!(c.next_after(Timestamp::from_unix_micros(i64::MIN)), None);
        let last = datetime!(9999-12-31 23:59 UTC);
        assert_eq!(c.next_after(ts(last)), None);
        // Before the epoch works too.
        assert_eq!(
            c.next_after(ts(datetime!(1969-12-31 23:59:30 UTC))),
            Some(ts(datetime!(1970-01-01 00:00 UTC)))
        );
    }

    #[test]
    fn refusals() {
        for bad in [
            "",
            "* * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "*/0 * * * *",
            "5-1 * * * *",
            "x * * * *",
            "* * * * 8",
            "* * * * mon-",
            "1,,2 * * * *",
            "* * * * * *",
            "@often",
            "* * * jan-foo *",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
