//! Five-field UTC cron expressions, as the Fitz Schedule domain defines them.
//!
//! Shared by the broker (which fires schedules) and the client (which
//! validates expressions before sending them): [`CronSchedule::parse`]
//! validates an expression and
//! [`CronSchedule::next_after`] finds the first matching minute strictly
//! after an instant.
//!
//! # Grammar (what the real broker accepts, no more)
//!
//! Exactly five whitespace-separated fields: minute (0–59), hour (0–23),
//! day-of-month (1–31), month (1–12), day-of-week (0–6, Sunday = 0). A field
//! is `*` or a comma list of components; a component is a number `n`, a
//! range `a-b` (`a ≤ b`), or a step `*/s` / `a-b/s` (`s ≥ 1`, counted from
//! the start of the range). Rejected: `7` for Sunday (the real broker's
//! day-of-week range is 0–6, and accepting it would let a schedule pass here
//! and fail there), names (`MON`, `JAN`), `?`, `L`, `W`, `#`, `@daily`-style
//! nicknames, a seconds field, a step on a single number (`5/10`), `*`
//! inside a list, signs, and reversed ranges.
//!
//! # Semantics
//!
//! * Times are UTC; the granularity is one minute (seconds of the instant
//!   are ignored, and the result is always on a whole minute).
//! * Day matching: when day-of-month and day-of-week are both restricted (a
//!   field is restricted unless it is literally `*`; `*/1` counts as
//!   restricted, like the real broker), a date matches when **either**
//!   matches; when one is `*`, the other alone decides.
//! * An expression that can never fire in a 400-year Gregorian cycle (for
//!   example `0 0 31 2 *` or `0 0 30 2 *`) is rejected at parse time, so
//!   [`CronSchedule::next_after`] of a parsed schedule always finds a time
//!   (within the representable range).
//!
//! # Why not a crate
//!
//! `cron` (0.17) was evaluated first: it requires a seconds field (6 or 7
//! fields), numbers day-of-week 1–7 with Sunday = 1, intersects
//! day-of-month and day-of-week (AND, not OR), and accepts `0 0 31 2 *`,
//! returning an empty iterator instead of an error. Making it fit would
//! mean rewriting expressions (shifting every day-of-week number, including
//! inside steps) and merging two schedules for the OR rule, which is more
//! code than an evaluator. `croner` (4.x) has the right OR rule and five
//! fields, but accepts a large superset the real broker rejects (names,
//! `L`/`W`/`#`/`?`, `7`, `5/10`, optional seconds, nicknames) and also does
//! not reject never-firing expressions, so it would need a strict
//! pre-parser of this whole grammar anyway, plus chrono. Fields here are
//! bit sets, matching is a few shifts, and the search jumps month → day →
//! hour → minute, so a next fire time costs microseconds.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest expression accepted (bytes); longer input is rejected before
/// parsing so an error message never echoes an unbounded string.
pub const MAX_EXPRESSION_BYTES: usize = 256;

/// A parsed, satisfiable five-field cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    minutes: u64,
    hours: u32,
    /// Bits 1–31.
    days_of_month: u32,
    /// Bits 1–12.
    months: u16,
    /// Bits 0–6.
    days_of_week: u8,
    dom_restricted: bool,
    dow_restricted: bool,
}

/// Why an expression was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronError(String);

impl CronError {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    /// The reason, without the expression.
    pub fn reason(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CronError {}

/// One field's name and bounds.
struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
}

const FIELDS: [FieldSpec; 5] = [
    FieldSpec {
        name: "minute",
        min: 0,
        max: 59,
    },
    FieldSpec {
        name: "hour",
        min: 0,
        max: 23,
    },
    FieldSpec {
        name: "day-of-month",
        min: 1,
        max: 31,
    },
    FieldSpec {
        name: "month",
        min: 1,
        max: 12,
    },
    FieldSpec {
        name: "day-of-week",
        min: 0,
        max: 6,
    },
];

/// Most days a month can have over a 400-year cycle (February: 29).
const MAX_DAYS: [u32; 13] = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

impl CronSchedule {
    /// Parses and validates `expr` (see the module docs for the grammar).
    pub fn parse(expr: &str) -> Result<Self, CronError> {
        if expr.len() > MAX_EXPRESSION_BYTES {
            return Err(CronError::new(format!(
                "cron expression longer than {MAX_EXPRESSION_BYTES} bytes"
            )));
        }
        let fields: Vec<&str> = expr.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(CronError::new(format!(
                "cron expression must have exactly 5 fields \
                 (minute hour day-of-month month day-of-week), found {}",
                fields.len()
            )));
        }
        let mut sets = [0u64; 5];
        for (i, (text, spec)) in fields.iter().zip(FIELDS.iter()).enumerate() {
            sets[i] = parse_field(text, spec)?;
        }
        // Each set only has bits within its field's bounds (≤ bit 59).
        let schedule = CronSchedule {
            minutes: sets[0],
            hours: u32::try_from(sets[1]).unwrap_or(0),
            days_of_month: u32::try_from(sets[2]).unwrap_or(0),
            months: u16::try_from(sets[3]).unwrap_or(0),
            days_of_week: u8::try_from(sets[4]).unwrap_or(0),
            dom_restricted: fields[2] != "*",
            dow_restricted: fields[4] != "*",
        };
        if !schedule.can_fire() {
            return Err(CronError::new(
                "cron expression can never fire: no month has the requested day",
            ));
        }
        Ok(schedule)
    }

    /// True when some date of a 400-year Gregorian cycle matches. Minutes
    /// and hours are never empty; a restricted day-of-week matches some
    /// date of every month (each month has every weekday), and with both day
    /// fields restricted the OR lets the weekday decide. So only a
    /// day-of-month-only rule can fail: it needs a selected month long
    /// enough for one of its days (February counts 29, as leap years occur
    /// in every cycle).
    fn can_fire(&self) -> bool {
        if self.dow_restricted {
            return self.days_of_week != 0 && self.months != 0;
        }
        (1..=12u32).any(|m| {
            self.months & (1 << m) != 0
                && (1..=MAX_DAYS[m as usize]).any(|d| self.days_of_month & (1 << d) != 0)
        })
    }

    /// True when the minute containing `secs` (Unix seconds, UTC) matches.
    pub fn matches_unix(&self, secs: i64) -> bool {
        let t = Civil::from_unix(secs);
        self.month_ok(t.month)
            && self.day_ok(t.year, t.month, t.day)
            && self.hours & (1 << t.hour) != 0
            && self.minutes & (1 << t.minute) != 0
    }

    /// The first matching whole minute strictly after `secs` (Unix seconds,
    /// UTC). `None` only past year 9999 (or for a schedule that cannot fire,
    /// which [`CronSchedule::parse`] never returns).
    pub fn next_after_unix(&self, secs: i64) -> Option<i64> {
        // Strictly after: the next whole minute, even when `secs` is on one.
        let start = secs.div_euclid(60).checked_add(1)?.checked_mul(60)?;
        let mut t = Civil::from_unix(start);
        // Each step moves to the start of a later month, day, hour or
        // minute, so the loop ends; the bound only guards the invariant.
        // Worst cases (a Feb 29 rule across a non-leap century, a
        // weekday+month rule) need a few thousand steps.
        for _ in 0..100_000 {
            if t.year > 9999 {
                return None;
            }
            if !self.month_ok(t.month) {
                t = t.next_month();
                continue;
            }
            if !self.day_ok(t.year, t.month, t.day) {
                t = t.next_day();
                continue;
            }
            if self.hours & (1 << t.hour) == 0 {
                t = t.next_hour();
                continue;
            }
            if self.minutes & (1 << t.minute) == 0 {
                t = t.next_minute();
                continue;
            }
            return Some(t.to_unix());
        }
        None
    }

    /// The first matching whole minute strictly after `t` (UTC).
    pub fn next_after(&self, t: SystemTime) -> Option<SystemTime> {
        let secs = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).ok()?,
            // Before the epoch: whole seconds, rounded down.
            Err(e) => {
                let d = e.duration();
                let whole = i64::try_from(d.as_secs()).ok()?;
                if d.subsec_nanos() > 0 {
                    -whole - 1
                } else {
                    -whole
                }
            }
        };
        let next = self.next_after_unix(secs)?;
        if next >= 0 {
            UNIX_EPOCH.checked_add(Duration::from_secs(next.unsigned_abs()))
        } else {
            UNIX_EPOCH.checked_sub(Duration::from_secs(next.unsigned_abs()))
        }
    }

    fn month_ok(&self, month: u32) -> bool {
        self.months & (1 << month) != 0
    }

    fn day_ok(&self, year: i64, month: u32, day: u32) -> bool {
        let dom = self.days_of_month & (1 << day) != 0;
        let dow = self.days_of_week & (1 << weekday(year, month, day)) != 0;
        match (self.dom_restricted, self.dow_restricted) {
            (true, true) => dom || dow,
            (true, false) => dom,
            (false, true) => dow,
            (false, false) => true,
        }
    }
}

/// Parses one field into a bit set (bit n = value n).
fn parse_field(text: &str, spec: &FieldSpec) -> Result<u64, CronError> {
    let bad = |why: &str| CronError::new(format!("invalid {} field `{text}`: {why}", spec.name));
    if text == "*" {
        return Ok(range_bits(spec.min, spec.max, 1));
    }
    let mut set = 0u64;
    for part in text.split(',') {
        if part.is_empty() {
            return Err(bad("empty list element"));
        }
        set |= parse_component(part, spec).map_err(|why| bad(&why))?;
    }
    Ok(set)
}

fn parse_component(part: &str, spec: &FieldSpec) -> Result<u64, String> {
    let (base, step) = match part.split_once('/') {
        Some((base, step)) => {
            let step = number(step)?;
            if step == 0 {
                return Err("step must be at least 1".into());
            }
            (base, Some(step))
        }
        None => (part, None),
    };
    let (lo, hi) = if base == "*" {
        if step.is_none() {
            return Err("`*` cannot be part of a list".into());
        }
        (spec.min, spec.max)
    } else if let Some((a, b)) = base.split_once('-') {
        let (a, b) = (number(a)?, number(b)?);
        if a > b {
            return Err(format!("range {a}-{b} is reversed"));
        }
        (a, b)
    } else {
        if step.is_some() {
            return Err("a step needs `*` or a range before it".into());
        }
        let n = number(base)?;
        (n, n)
    };
    if lo < spec.min || hi > spec.max {
        return Err(format!("{lo}-{hi} is outside {}-{}", spec.min, spec.max));
    }
    Ok(range_bits(lo, hi, step.unwrap_or(1)))
}

/// A plain decimal number (ASCII digits only: no sign, no names).
fn number(s: &str) -> Result<u32, String> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        let shown: String = s.chars().take(16).collect();
        return Err(format!("`{shown}` is not a number"));
    }
    s.parse().map_err(|_| format!("`{s}` is not a number"))
}

fn range_bits(lo: u32, hi: u32, step: u32) -> u64 {
    let mut set = 0u64;
    let mut v = lo;
    while v <= hi {
        set |= 1 << v;
        match v.checked_add(step) {
            Some(n) => v = n,
            None => break,
        }
    }
    set
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (`civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are small and positive by construction.
    (year, month as u32, day as u32)
}

/// 0 = Sunday. 1970-01-01 was a Thursday.
fn weekday(year: i64, month: u32, day: u32) -> u32 {
    (days_from_civil(year, month, day) + 4).rem_euclid(7) as u32
}

/// A UTC minute broken into calendar fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
}

impl Civil {
    fn from_unix(secs: i64) -> Self {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        Civil {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: ((rem % 3600) / 60) as u32,
        }
    }

    fn to_unix(self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
    }

    fn next_month(self) -> Self {
        let (year, month) = if self.month == 12 {
            (self.year + 1, 1)
        } else {
            (self.year, self.month + 1)
        };
        Civil {
            year,
            month,
            day: 1,
            hour: 0,
            minute: 0,
        }
    }

    fn next_day(self) -> Self {
        if self.day >= days_in_month(self.year, self.month) {
            return self.next_month();
        }
        Civil {
            day: self.day + 1,
            hour: 0,
            minute: 0,
            ..self
        }
    }

    fn next_hour(self) -> Self {
        if self.hour >= 23 {
            return self.next_day();
        }
        Civil {
            hour: self.hour + 1,
            minute: 0,
            ..self
        }
    }

    fn next_minute(self) -> Self {
        if self.minute >= 59 {
            return self.next_hour();
        }
        Civil {
            minute: self.minute + 1,
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix seconds of a UTC date-time.
    fn at(y: i64, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        days_from_civil(y, mo, d) * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60
    }

    fn next(expr: &str, from: i64) -> i64 {
        CronSchedule::parse(expr)
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
            .next_after_unix(from)
            .unwrap()
    }

    /// The first `n` fire times after `from`.
    fn fires(expr: &str, from: i64, n: usize) -> Vec<i64> {
        let c = CronSchedule::parse(expr).unwrap();
        let mut out = Vec::new();
        let mut t = from;
        for _ in 0..n {
            t = c.next_after_unix(t).unwrap();
            out.push(t);
        }
        out
    }

    /// Reference: minute-by-minute scan with the plain matcher.
    fn brute_next(c: &CronSchedule, from: i64, limit_minutes: i64) -> Option<i64> {
        let mut t = (from.div_euclid(60) + 1) * 60;
        for _ in 0..limit_minutes {
            if c.matches_unix(t) {
                return Some(t);
            }
            t += 60;
        }
        None
    }

    #[test]
    fn calendar_arithmetic_round_trips() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(weekday(2024, 1, 1), 1, "Monday");
        assert_eq!(weekday(2000, 1, 1), 6, "Saturday");
        assert_eq!(weekday(1969, 12, 31), 3, "Wednesday");
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        for secs in [-1i64, 0, 59, 60, 1_709_164_799, 951_782_400] {
            let c = Civil::from_unix(secs);
            assert_eq!(c.to_unix(), secs - secs.rem_euclid(60));
        }
    }

    #[test]
    fn field_count_is_exactly_five() {
        for bad in [
            "",
            "* * * *",
            "* * * * * *",
            "0 * * * * *",
            "* * * * * * *",
            "@daily",
            "@hourly",
        ] {
            let e = CronSchedule::parse(bad).unwrap_err();
            assert!(e.reason().contains("5 fields"), "{bad}: {e}");
        }
        // Any whitespace separates fields.
        assert!(CronSchedule::parse("  0\t12 *  * 1 ").is_ok());
    }

    #[test]
    fn syntax_table() {
        let from = at(2024, 1, 1, 0, 0); // Monday 00:00
        // (expression, the next three fires after `from`)
        let table: &[(&str, [i64; 3])] = &[
            (
                "* * * * *",
                [
                    at(2024, 1, 1, 0, 1),
                    at(2024, 1, 1, 0, 2),
                    at(2024, 1, 1, 0, 3),
                ],
            ),
            (
                "30 2 * * *",
                [
                    at(2024, 1, 1, 2, 30),
                    at(2024, 1, 2, 2, 30),
                    at(2024, 1, 3, 2, 30),
                ],
            ),
            (
                "0 9-11 * * *",
                [
                    at(2024, 1, 1, 9, 0),
                    at(2024, 1, 1, 10, 0),
                    at(2024, 1, 1, 11, 0),
                ],
            ),
            (
                "0 9,12,15 * * *",
                [
                    at(2024, 1, 1, 9, 0),
                    at(2024, 1, 1, 12, 0),
                    at(2024, 1, 1, 15, 0),
                ],
            ),
            (
                "*/15 * * * *",
                [
                    at(2024, 1, 1, 0, 15),
                    at(2024, 1, 1, 0, 30),
                    at(2024, 1, 1, 0, 45),
                ],
            ),
            (
                "10-40/15 * * * *",
                [
                    at(2024, 1, 1, 0, 10),
                    at(2024, 1, 1, 0, 25),
                    at(2024, 1, 1, 0, 40),
                ],
            ),
            (
                "0 9-17/4 * * *",
                [
                    at(2024, 1, 1, 9, 0),
                    at(2024, 1, 1, 13, 0),
                    at(2024, 1, 1, 17, 0),
                ],
            ),
            (
                "0 */2 * * *",
                [
                    at(2024, 1, 1, 2, 0),
                    at(2024, 1, 1, 4, 0),
                    at(2024, 1, 1, 6, 0),
                ],
            ),
            (
                "5,*/20,50-51 0 * * *",
                [
                    at(2024, 1, 1, 0, 5),
                    at(2024, 1, 1, 0, 20),
                    at(2024, 1, 1, 0, 40),
                ],
            ),
            (
                "0 0 1 * *",
                [
                    at(2024, 2, 1, 0, 0),
                    at(2024, 3, 1, 0, 0),
                    at(2024, 4, 1, 0, 0),
                ],
            ),
            (
                "0 0 * 3,6 *",
                [
                    at(2024, 3, 1, 0, 0),
                    at(2024, 3, 2, 0, 0),
                    at(2024, 3, 3, 0, 0),
                ],
            ),
            (
                "0 12 * * 0",
                [
                    at(2024, 1, 7, 12, 0),
                    at(2024, 1, 14, 12, 0),
                    at(2024, 1, 21, 12, 0),
                ],
            ),
            (
                "0 12 * * 6",
                [
                    at(2024, 1, 6, 12, 0),
                    at(2024, 1, 13, 12, 0),
                    at(2024, 1, 20, 12, 0),
                ],
            ),
            (
                "0 9 * * 1-5",
                [
                    at(2024, 1, 1, 9, 0),
                    at(2024, 1, 2, 9, 0),
                    at(2024, 1, 3, 9, 0),
                ],
            ),
            (
                "0 0 * * 0-6/3",
                [
                    at(2024, 1, 3, 0, 0),
                    at(2024, 1, 6, 0, 0),
                    at(2024, 1, 7, 0, 0),
                ],
            ),
            (
                "07 08 09 10 *",
                [
                    at(2024, 10, 9, 8, 7),
                    at(2025, 10, 9, 8, 7),
                    at(2026, 10, 9, 8, 7),
                ],
            ),
            (
                "0 0 * * */1",
                [
                    at(2024, 1, 2, 0, 0),
                    at(2024, 1, 3, 0, 0),
                    at(2024, 1, 4, 0, 0),
                ],
            ),
            (
                "59 23 31 12 *",
                [
                    at(2024, 12, 31, 23, 59),
                    at(2025, 12, 31, 23, 59),
                    at(2026, 12, 31, 23, 59),
                ],
            ),
        ];
        for (expr, want) in table {
            assert_eq!(&fires(expr, from, 3)[..], &want[..], "{expr}");
        }
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_restricted() {
        // The 13th OR any Friday (AC: standard OR semantics).
        let got = fires("0 12 13 * 5", at(2024, 1, 1, 0, 0), 4);
        assert_eq!(
            got,
            [
                at(2024, 1, 5, 12, 0),  // Friday
                at(2024, 1, 12, 12, 0), // Friday
                at(2024, 1, 13, 12, 0), // the 13th (a Saturday)
                at(2024, 1, 19, 12, 0), // Friday
            ]
        );
        // One field `*`: the other alone decides.
        assert_eq!(
            next("0 12 13 * *", at(2024, 1, 1, 0, 0)),
            at(2024, 1, 13, 12, 0)
        );
        assert_eq!(
            next("0 12 * * 5", at(2024, 1, 1, 0, 0)),
            at(2024, 1, 5, 12, 0)
        );
        // A restricted day-of-week rescues an impossible day-of-month.
        assert_eq!(
            next("0 0 31 2 1", at(2024, 1, 31, 0, 0)),
            at(2024, 2, 5, 0, 0)
        );
        // AC-SCHEDULE-007: 9–17 on weekdays.
        let c = CronSchedule::parse("0 9-17 * * 1-5").unwrap();
        assert!(c.matches_unix(at(2024, 1, 1, 10, 0)), "Monday 10:00");
        assert!(!c.matches_unix(at(2024, 1, 6, 10, 0)), "Saturday 10:00");
        assert!(!c.matches_unix(at(2024, 1, 1, 8, 0)), "Monday 08:00");
    }

    #[test]
    fn never_firing_expressions_are_rejected() {
        for expr in [
            "0 0 31 2 *",
            "0 0 30 2 *",
            "0 0 31 4,6,9,11 *",
            "0 0 30-31 2 *",
        ] {
            let e = CronSchedule::parse(expr).unwrap_err();
            assert!(e.reason().contains("never fire"), "{expr}: {e}");
        }
        // Rare but possible: Feb 29 (leap years), the 31st of some months.
        assert_eq!(
            next("0 0 29 2 *", at(2024, 3, 1, 0, 0)),
            at(2028, 2, 29, 0, 0)
        );
        // 2100 is not a leap year: 2096 → 2104.
        assert_eq!(
            next("0 0 29 2 *", at(2096, 3, 1, 0, 0)),
            at(2104, 2, 29, 0, 0)
        );
        assert!(CronSchedule::parse("0 0 31 2,3 *").is_ok());
        // The closed-form satisfiability check agrees with a scan of the
        // 400-year cycle for every (day-of-month, month) pair.
        for d in 1..=31u32 {
            for m in 1..=12u32 {
                let expr = format!("0 0 {d} {m} *");
                let possible = (2000..2400).any(|y| d <= days_in_month(y, m));
                assert_eq!(CronSchedule::parse(&expr).is_ok(), possible, "{expr}");
            }
        }
    }

    #[test]
    fn invalid_syntax_is_rejected() {
        for bad in [
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * 32 * *",
            "* * * 0 *",
            "* * * 13 *",
            "* * * * 7",
            "* * * * MON",
            "* * * JAN *",
            "* * ? * *",
            "* * L * *",
            "* * 15W * *",
            "* * * * 5#3",
            "5/10 * * * *",
            "*/0 * * * *",
            "*/ * * * *",
            "/5 * * * *",
            "5-1 * * * *",
            "1-2-3 * * * *",
            "1,,2 * * * *",
            ",1 * * * *",
            "*,5 * * * *",
            "+5 * * * *",
            "-5 * * * *",
            "1.5 * * * *",
            "99999999999 * * * *",
            "a * * * *",
        ] {
            assert!(
                CronSchedule::parse(bad).is_err(),
                "{bad} should be rejected"
            );
        }
        let long = format!("{} * * * *", "0,".repeat(200));
        assert!(CronSchedule::parse(&long).is_err());
    }

    #[test]
    fn next_after_is_strict_utc_and_minute_granular() {
        let c = CronSchedule::parse("* * * * *").unwrap();
        let t = at(2024, 5, 5, 10, 30);
        assert_eq!(
            c.next_after_unix(t),
            Some(t + 60),
            "on a minute: the next one"
        );
        assert_eq!(c.next_after_unix(t + 1), Some(t + 60));
        assert_eq!(c.next_after_unix(t + 59), Some(t + 60));
        let sys = UNIX_EPOCH + Duration::from_millis(t as u64 * 1000 + 999);
        assert_eq!(
            c.next_after(sys),
            Some(UNIX_EPOCH + Duration::from_secs(t as u64 + 60))
        );
        // Before the epoch.
        assert_eq!(c.next_after_unix(-30), Some(0));
        assert_eq!(
            c.next_after(UNIX_EPOCH - Duration::from_millis(1)),
            Some(UNIX_EPOCH)
        );
    }

    #[test]
    fn next_after_crosses_month_year_and_leap_boundaries() {
        assert_eq!(
            next("0 0 * * *", at(2023, 12, 31, 23, 59)),
            at(2024, 1, 1, 0, 0)
        );
        assert_eq!(
            next("0 0 31 * *", at(2024, 1, 31, 0, 0)),
            at(2024, 3, 31, 0, 0)
        );
        assert_eq!(
            next("0 0 1 1 *", at(2024, 1, 1, 0, 0)),
            at(2025, 1, 1, 0, 0)
        );
        assert_eq!(
            next("0 0 29 * *", at(2023, 1, 29, 0, 0)),
            at(2023, 3, 29, 0, 0)
        );
        assert_eq!(
            next("0 0 29 * *", at(2024, 1, 29, 0, 0)),
            at(2024, 2, 29, 0, 0)
        );
        assert_eq!(
            next("30 23 28-29 2 *", at(2024, 2, 28, 23, 30)),
            at(2024, 2, 29, 23, 30)
        );
        assert_eq!(
            next("30 23 28-29 2 *", at(2023, 2, 28, 23, 30)),
            at(2024, 2, 28, 23, 30)
        );
        assert_eq!(
            next("0 0 29 2 *", at(1999, 1, 1, 0, 0)),
            at(2000, 2, 29, 0, 0)
        );
        // Every 31st, Feb 29 on a Monday (DOM OR DOW would be anything: use
        // DOW only with a month restriction).
        assert_eq!(
            next("0 0 * 2 1", at(2024, 2, 26, 0, 0)),
            at(2025, 2, 3, 0, 0)
        );
    }

    #[test]
    fn jumping_search_agrees_with_a_minute_scan() {
        // Deterministic pseudo-random expressions over the whole grammar.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut rnd = move |n: u32| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % u64::from(n)) as u32
        };
        let component = |min: u32, max: u32, rnd: &mut dyn FnMut(u32) -> u32| {
            let span = max - min + 1;
            match rnd(5) {
                0 => "*".to_string(),
                1 => (min + rnd(span)).to_string(),
                2 => {
                    let a = min + rnd(span);
                    let b = a + rnd(max - a + 1);
                    format!("{a}-{b}")
                }
                3 => format!("*/{}", 1 + rnd(span)),
                _ => {
                    let a = min + rnd(span);
                    let b = min + rnd(span);
                    format!("{},{}", a.min(b), a.max(b))
                }
            }
        };
        let mut checked = 0;
        for _ in 0..400 {
            let fields: Vec<String> = FIELDS
                .iter()
                .map(|f| component(f.min, f.max, &mut rnd))
                .collect();
            let expr = fields.join(" ");
            let Ok(c) = CronSchedule::parse(&expr) else {
                continue;
            };
            let from = at(2023, 1 + rnd(12), 1 + rnd(28), rnd(24), rnd(60)) + i64::from(rnd(60));
            // The scan covers 40 days; schedules firing later are skipped
            // (the calendar-boundary tests above cover long gaps).
            let fast = c.next_after_unix(from);
            if let Some(slow) = brute_next(&c, from, 40 * 24 * 60) {
                assert_eq!(fast, Some(slow), "{expr} after {from}");
                checked += 1;
            }
        }
        assert!(checked > 100, "only {checked} expressions checked");
    }
}
