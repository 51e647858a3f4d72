//! When a policy's scheduled backups run.
//!
//! A policy runs at most once per local calendar day: on every day (daily) or on the chosen
//! weekdays (weekly), at its wall-clock time in its time zone. The run of a day is that
//! wall-clock time resolved by [`resolve_local`]: a time inside a daylight-saving gap runs at
//! the first valid instant after it (the end of the gap), an ambiguous time runs once, at the
//! earlier instant. A day whose resolved instant would fall on another local day (only when a
//! zone skips a whole day, as Samoa did on 2011-12-30) has no run.
//!
//! Run instants increase strictly with their local day, so "the next run after t" only has to
//! look at the few local days around t.

use super::model::{Frequency, Policy};
use chrono::{
    DateTime, Days, Duration, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc,
};
use chrono_tz::Tz;

/// Local days examined before giving up (a valid policy runs at least once a week; this
/// bound only matters for invalid ones, e.g. a weekly schedule without days).
const SEARCH_DAYS: i64 = 800;

/// The instant a wall-clock `local` time stands for in `tz`: gap → first valid instant
/// after it; ambiguous → the earlier instant.
pub fn resolve_local(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(a, b) => a.min(b).with_timezone(&Utc),
        LocalResult::None => first_instant_after_gap(tz, local),
    }
}

/// `local` lies in a gap: the first instant whose wall clock is at or after `local`, i.e. the
/// transition that ends the gap. Found by walking forward a minute at a time to the first
/// valid wall-clock minute, then back second by second to the transition itself (gaps of
/// old local-mean-time offsets do not end on whole minutes).
fn first_instant_after_gap(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    for minute in 1..=2 * 24 * 60 {
        let Some(candidate) = local.checked_add_signed(Duration::minutes(minute)) else {
            break;
        };
        let found = match tz.from_local_datetime(&candidate) {
            LocalResult::Single(t) => t,
            LocalResult::Ambiguous(a, b) => a.min(b),
            LocalResult::None => continue,
        };
        let mut t = found.with_timezone(&Utc);
        for _ in 0..60 {
            match t.checked_sub_signed(Duration::seconds(1)) {
                Some(earlier) if local_naive(tz, earlier) >= local => t = earlier,
                _ => break,
            }
        }
        return t;
    }
    // No zone has a gap of two days; treat the wall clock as UTC rather than fail.
    Utc.from_utc_datetime(&local)
}

/// The wall-clock date-time of `t` in `tz` (saturating at the ends of chrono's range, where
/// `DateTime::naive_local` would panic).
pub fn local_naive(tz: Tz, t: DateTime<Utc>) -> NaiveDateTime {
    let utc = t.naive_utc();
    let offset = tz.offset_from_utc_datetime(&utc).fix();
    utc.checked_add_offset(offset)
        .unwrap_or(if offset.local_minus_utc() > 0 {
            NaiveDateTime::MAX
        } else {
            NaiveDateTime::MIN
        })
}

/// The local calendar day of `t` in `tz`.
pub fn local_date(tz: Tz, t: DateTime<Utc>) -> NaiveDate {
    local_naive(tz, t).date()
}

fn days_before(date: NaiveDate, n: u64) -> NaiveDate {
    date.checked_sub_days(Days::new(n))
        .unwrap_or(NaiveDate::MIN)
}

fn days_after(date: NaiveDate, n: u64) -> NaiveDate {
    date.checked_add_days(Days::new(n))
        .unwrap_or(NaiveDate::MAX)
}

/// The scheduled run of `p` on local day `date`, if it has one.
pub fn run_on(p: &Policy, date: NaiveDate) -> Option<DateTime<Utc>> {
    let s = &p.schedule;
    if s.frequency == Frequency::Weekly && !s.days.contains(&chrono::Datelike::weekday(&date)) {
        return None;
    }
    let t = resolve_local(p.time_zone, date.and_time(s.time));
    (local_date(p.time_zone, t) == date).then_some(t)
}

/// The first scheduled instant strictly after `t`. A policy that never runs (only invalid
/// ones: a weekly schedule without days) gives `DateTime::<Utc>::MAX_UTC`.
pub fn next_run_after(p: &Policy, t: DateTime<Utc>) -> DateTime<Utc> {
    let mut date = days_before(local_date(p.time_zone, t), 2);
    for _ in 0..SEARCH_DAYS {
        if let Some(run) = run_on(p, date) {
            if run > t {
                return run;
            }
        }
        match date.succ_opt() {
            Some(d) => date = d,
            None => break,
        }
    }
    DateTime::<Utc>::MAX_UTC
}

/// The last scheduled instant at or before `t` (None: the policy never runs).
pub fn last_run_at_or_before(p: &Policy, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut date = days_after(local_date(p.time_zone, t), 2);
    for _ in 0..SEARCH_DAYS {
        if let Some(run) = run_on(p, date) {
            if run <= t {
                return Some(run);
            }
        }
        date = date.pred_opt()?;
    }
    None
}

/// The scheduled instants in `(after, until]`, in order.
pub fn runs_between(p: &Policy, after: DateTime<Utc>, until: DateTime<Utc>) -> Runs {
    Runs {
        policy: p.clone(),
        date: Some(days_before(local_date(p.time_zone, after), 2)),
        last_date: days_after(local_date(p.time_zone, until), 2),
        after,
        until,
    }
}

/// Iterator of [`runs_between`]; owns its policy so it can outlive the borrow.
#[derive(Debug, Clone)]
pub struct Runs {
    policy: Policy,
    date: Option<NaiveDate>,
    last_date: NaiveDate,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
}

impl Iterator for Runs {
    type Item = DateTime<Utc>;
    fn next(&mut self) -> Option<DateTime<Utc>> {
        while let Some(date) = self.date {
            if date > self.last_date {
                self.date = None;
                break;
            }
            self.date = date.succ_opt();
            if let Some(run) = run_on(&self.policy, date) {
                if run > self.until {
                    self.date = None;
                    return None;
                }
                if run > self.after {
                    return Some(run);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::{seed_policy, Policy};
    use super::*;
    use chrono::{NaiveTime, Weekday};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn at(tz: &str, time: &str) -> Policy {
        let mut p = seed_policy();
        p.time_zone = tz.parse().unwrap();
        p.schedule.time = NaiveTime::parse_from_str(time, "%H:%M").unwrap();
        p
    }

    #[test]
    fn daily_runs_at_wall_clock_time_across_dst() {
        let p = at("Europe/Berlin", "22:30");
        let runs: Vec<_> =
            runs_between(&p, utc("2026-03-27T00:00:00Z"), utc("2026-03-31T00:00:00Z")).collect();
        assert_eq!(
            runs,
            vec![
                utc("2026-03-27T21:30:00Z"), // CET
                utc("2026-03-28T21:30:00Z"),
                utc("2026-03-29T20:30:00Z"), // CEST from 29 March
                utc("2026-03-30T20:30:00Z"),
            ]
        );
    }

    #[test]
    fn berlin_spring_forward_gap_runs_at_0300_local() {
        // 2026-03-29 02:00 CET → 03:00 CEST; 02:30 does not exist.
        let p = at("Europe/Berlin", "02:30");
        let d = NaiveDate::from_ymd_opt(2026, 3, 29).unwrap();
        let run = run_on(&p, d).unwrap();
        assert_eq!(run, utc("2026-03-29T01:00:00Z"));
        assert_eq!(
            run.with_timezone(&p.time_zone).format("%H:%M").to_string(),
            "03:00"
        );
        assert_eq!(
            run_on(&p, d.succ_opt().unwrap()).unwrap(),
            utc("2026-03-30T00:30:00Z")
        );
        assert_eq!(
            run_on(&p, d.pred_opt().unwrap()).unwrap(),
            utc("2026-03-28T01:30:00Z")
        );
    }

    #[test]
    fn new_york_gap_and_overlap() {
        // 2026-03-08 02:00 EST → 03:00 EDT: 02:30 runs at 03:00 EDT = 07:00Z.
        let p = at("America/New_York", "02:30");
        assert_eq!(
            run_on(&p, NaiveDate::from_ymd_opt(2026, 3, 8).unwrap()).unwrap(),
            utc("2026-03-08T07:00:00Z")
        );
        // 2026-11-01 02:00 EDT → 01:00 EST: 01:30 happens twice; runs once, at 01:30 EDT = 05:30Z.
        let p = at("America/New_York", "01:30");
        let runs: Vec<_> =
            runs_between(&p, utc("2026-10-31T00:00:00Z"), utc("2026-11-03T00:00:00Z")).collect();
        assert_eq!(
            runs,
            vec![
                utc("2026-10-31T05:30:00Z"),
                utc("2026-11-01T05:30:00Z"),
                utc("2026-11-02T06:30:00Z")
            ]
        );
        // After the first 01:30 passed, the next run is the next day, not the repeated 01:30.
        assert_eq!(
            next_run_after(&p, utc("2026-11-01T05:30:00Z")),
            utc("2026-11-02T06:30:00Z")
        );
        assert_eq!(
            next_run_after(&p, utc("2026-11-01T06:00:00Z")),
            utc("2026-11-02T06:30:00Z")
        );
    }

    #[test]
    fn samoa_skipped_day_has_no_run() {
        // Pacific/Apia skipped 2011-12-30 entirely.
        let p = at("Pacific/Apia", "10:00");
        assert_eq!(
            run_on(&p, NaiveDate::from_ymd_opt(2011, 12, 30).unwrap()),
            None
        );
        let runs: Vec<_> =
            runs_between(&p, utc("2011-12-28T00:00:00Z"), utc("2012-01-01T00:00:00Z")).collect();
        let days: Vec<String> = runs
            .iter()
            .map(|r| {
                r.with_timezone(&p.time_zone)
                    .format("%m-%d %H:%M")
                    .to_string()
            })
            .collect();
        assert_eq!(
            days,
            vec!["12-28 10:00", "12-29 10:00", "12-31 10:00", "01-01 10:00"]
        );
    }

    #[test]
    fn next_and_last_are_strict_and_inclusive() {
        let p = at("UTC", "22:30");
        let run = utc("2026-05-10T22:30:00Z");
        assert_eq!(next_run_after(&p, run), utc("2026-05-11T22:30:00Z"));
        assert_eq!(next_run_after(&p, run - Duration::seconds(1)), run);
        assert_eq!(last_run_at_or_before(&p, run), Some(run));
        assert_eq!(
            last_run_at_or_before(&p, run - Duration::seconds(1)),
            Some(utc("2026-05-09T22:30:00Z"))
        );
        let runs: Vec<_> = runs_between(&p, run, run + Duration::days(2)).collect();
        assert_eq!(runs, vec![run + Duration::days(1), run + Duration::days(2)]);
        assert_eq!(runs_between(&p, run, run).count(), 0);
    }

    #[test]
    fn weekly_runs_only_on_its_days() {
        let mut p = at("America/New_York", "10:00");
        p.schedule.frequency = Frequency::Weekly;
        p.schedule.days = vec![Weekday::Mon, Weekday::Wed, Weekday::Thu];
        // 2026-06-01 is a Monday.
        let runs: Vec<_> =
            runs_between(&p, utc("2026-06-01T00:00:00Z"), utc("2026-06-08T23:59:00Z")).collect();
        let days: Vec<String> = runs
            .iter()
            .map(|r| {
                r.with_timezone(&p.time_zone)
                    .format("%a %d %H:%M")
                    .to_string()
            })
            .collect();
        assert_eq!(
            days,
            vec![
                "Mon 01 10:00",
                "Wed 03 10:00",
                "Thu 04 10:00",
                "Mon 08 10:00"
            ]
        );
        assert_eq!(
            next_run_after(&p, utc("2026-06-04T15:00:00Z")),
            utc("2026-06-08T14:00:00Z")
        );
        assert_eq!(
            last_run_at_or_before(&p, utc("2026-06-08T13:59:00Z")),
            Some(utc("2026-06-04T14:00:00Z"))
        );
    }

    #[test]
    fn policy_without_days_never_runs() {
        let mut p = at("UTC", "10:00");
        p.schedule.frequency = Frequency::Weekly;
        p.schedule.days.clear();
        let t = utc("2026-06-01T00:00:00Z");
        assert_eq!(next_run_after(&p, t), DateTime::<Utc>::MAX_UTC);
        assert_eq!(last_run_at_or_before(&p, t), None);
        assert_eq!(runs_between(&p, t, t + Duration::days(30)).count(), 0);
    }

    #[test]
    fn runs_between_agrees_with_next_run_after_over_years() {
        for (tz, time) in [
            ("Europe/Berlin", "02:30"),
            ("America/New_York", "01:30"),
            ("Australia/Lord_Howe", "02:15"),
        ] {
            let p = at(tz, time);
            let start = utc("2025-01-01T00:00:00Z");
            let end = utc("2028-12-31T00:00:00Z");
            let runs: Vec<_> = runs_between(&p, start, end).collect();
            let mut t = start;
            let mut stepped = Vec::new();
            loop {
                t = next_run_after(&p, t);
                if t > end {
                    break;
                }
                stepped.push(t);
            }
            assert_eq!(runs, stepped, "{tz}");
            assert!(runs.windows(2).all(|w| w[0] < w[1]));
            // One run per local day, every day.
            let dates: Vec<NaiveDate> = runs.iter().map(|r| local_date(p.time_zone, *r)).collect();
            assert!(
                dates.windows(2).all(|w| w[0].succ_opt() == Some(w[1])),
                "{tz}"
            );
            for r in &runs {
                assert_eq!(last_run_at_or_before(&p, *r), Some(*r));
            }
        }
    }

    #[test]
    fn extreme_instants_do_not_panic() {
        let p = at("Europe/Berlin", "22:30");
        let max = DateTime::<Utc>::MAX_UTC;
        let min = DateTime::<Utc>::MIN_UTC;
        assert_eq!(next_run_after(&p, max), max);
        assert!(last_run_at_or_before(&p, min).is_none());
        assert!(last_run_at_or_before(&p, max).is_some());
        assert!(next_run_after(&p, min) > min);
        assert_eq!(runs_between(&p, max, max).count(), 0);
        assert_eq!(runs_between(&p, min, max).take(3).count(), 3);
        assert_eq!(runs_between(&p, max - Duration::days(10), max).count(), 10);
    }
}
