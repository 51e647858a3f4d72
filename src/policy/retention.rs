//! Long-term retention: which rules keep a recovery point, until when, and what a clean-up
//! removes.
//!
//! A point is judged on its *scheduled* instant seen in the policy's time zone: its local
//! date picks the rules (daily: every backup; weekly: its weekday; monthly: its day of the
//! month or n-th weekday; yearly: the same within the chosen months). Each selecting rule
//! adds its duration in calendar units to the point's local date-time — days, weeks (7
//! days), months, years (12 months), months clamping to the month's end — and the result is
//! resolved to an instant like a scheduled time ([`super::schedule::resolve_local`]). The
//! point expires at the latest of these.
//!
//! "Last" of a weekday is its last occurrence in the month: in a month with five Sundays the
//! 5th is Last and the 4th is Fourth; in a month with four, the 4th is both.
//!
//! The clean-up ([`points_to_prune`]) is pure: expired points go, except the item's newest,
//! which is always kept; points without expiry (protection stopped, retain data) stay.

use super::model::{DayOfMonth, DaySelector, Policy, RuleKind, WeekOfMonth};
use super::schedule::{local_naive, resolve_local};
use chrono::{
    DateTime, Datelike, Days, Duration, Months, NaiveDate, NaiveDateTime, NaiveTime, Offset,
    TimeZone, Utc,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// A recovery point as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointRef {
    pub id: String,
    pub time: DateTime<Utc>,
    /// None: kept until deleted by hand.
    pub expiry: Option<DateTime<Utc>>,
}

/// Whether the weekday `date` falls on is its `w` occurrence in the month.
pub fn is_week_of_month(date: NaiveDate, w: WeekOfMonth) -> bool {
    let nth = (date.day() - 1) / 7 + 1; // 1..=5
    match w {
        WeekOfMonth::First => nth == 1,
        WeekOfMonth::Second => nth == 2,
        WeekOfMonth::Third => nth == 3,
        WeekOfMonth::Fourth => nth == 4,
        WeekOfMonth::Last => (date + Duration::days(7)).month() != date.month(),
    }
}

fn is_last_day_of_month(date: NaiveDate) -> bool {
    date.succ_opt()
        .is_none_or(|next| next.month() != date.month())
}

/// Whether a monthly/yearly day selector picks `date`.
pub fn selector_matches(on: &DaySelector, date: NaiveDate) -> bool {
    match on {
        DaySelector::Weekdays {
            weeks_of_month,
            days_of_week,
        } => {
            days_of_week.contains(&date.weekday())
                && weeks_of_month.iter().any(|w| is_week_of_month(date, *w))
        }
        DaySelector::DaysOfMonth(days) => days.iter().any(|d| match d {
            DayOfMonth::Day(n) => date.day() == u32::from(*n),
            DayOfMonth::Last => is_last_day_of_month(date),
        }),
    }
}

/// Every rule that selects a point scheduled at `scheduled_time`, with the expiry it gives.
pub fn rule_expiries(p: &Policy, scheduled_time: DateTime<Utc>) -> Vec<(RuleKind, DateTime<Utc>)> {
    let tz = p.time_zone;
    let local = local_naive(tz, scheduled_time);
    let date = local.date();
    let r = &p.retention;
    let mut out = Vec::new();
    let mut add = |kind, end: Option<NaiveDateTime>| {
        let expiry = end
            .map_or(DateTime::<Utc>::MAX_UTC, |e| resolve_local(tz, e))
            .min(crate::fmt::max_time());
        out.push((kind, expiry));
    };
    if let Some(d) = &r.daily {
        add(
            RuleKind::Daily,
            local.checked_add_days(Days::new(u64::from(d.days))),
        );
    }
    if let Some(w) = &r.weekly {
        if w.days_of_week.contains(&date.weekday()) {
            add(
                RuleKind::Weekly,
                local.checked_add_days(Days::new(7 * u64::from(w.weeks))),
            );
        }
    }
    if let Some(m) = &r.monthly {
        if selector_matches(&m.on, date) {
            add(
                RuleKind::Monthly,
                local.checked_add_months(Months::new(m.months)),
            );
        }
    }
    if let Some(y) = &r.yearly {
        let in_month = y
            .months_of_year
            .iter()
            .any(|m| m.number_from_month() == date.month());
        if in_month && selector_matches(&y.on, date) {
            add(
                RuleKind::Yearly,
                y.years
                    .checked_mul(12)
                    .and_then(|m| local.checked_add_months(Months::new(m))),
            );
        }
    }
    out
}

/// The rules that select a point scheduled at `scheduled_time` (daily, weekly, monthly,
/// yearly order).
pub fn rules_selecting(p: &Policy, scheduled_time: DateTime<Utc>) -> Vec<RuleKind> {
    rule_expiries(p, scheduled_time)
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

/// Expiry of a point scheduled at `scheduled_time`: the latest expiry of the rules that
/// select it. Total for the scheduled instants of a valid policy (validation makes every
/// scheduled backup selected); an instant no rule selects gets `scheduled_time` itself, so
/// the next clean-up removes it unless it is the newest point. Never later than
/// [`crate::fmt::max_time`] (a 99-year rule near the year 9999 ends there).
pub fn expiry_of(p: &Policy, scheduled_time: DateTime<Utc>) -> DateTime<Utc> {
    rule_expiries(p, scheduled_time)
        .into_iter()
        .map(|(_, e)| e)
        .max()
        .unwrap_or(scheduled_time)
        .min(crate::fmt::max_time())
}

/// Ids of the points a clean-up at `now` removes: every point with `expiry <= now`, except
/// the newest (by time; on a tie every point at the newest time is kept). Points without
/// expiry are never removed. Ids come in the order of `points`.
pub fn points_to_prune(points: &[PointRef], now: DateTime<Utc>) -> Vec<String> {
    let newest = points.iter().map(|p| p.time).max();
    points
        .iter()
        .filter(|p| Some(p.time) != newest && p.expiry.is_some_and(|e| e <= now))
        .map(|p| p.id.clone())
        .collect()
}

fn distinct<T: PartialEq>(items: &[T]) -> u64 {
    items
        .iter()
        .enumerate()
        .filter(|(i, x)| !items[..*i].contains(x))
        .count() as u64
}

/// The most recovery points a valid policy can keep alive after any clean-up: the sum over
/// its rules of the most points each rule can keep (points several rules select count once
/// per rule, so this bounds, not predicts). Per rule, with D its duration:
/// - daily: D (the last D local days);
/// - weekly: D × its weekdays (D weeks hold each weekday D times);
/// - monthly by days of the month: D × the days; by weekdays: (D + 1) × weeks × weekdays,
///   because the n-th weekday drifts within the month (the First Sunday of last month can
///   expire after this month's First Sunday was taken);
/// - yearly: likewise per chosen month, with D years.
///
/// Plus one per rule when the schedule's wall-clock time falls into a daylight-saving gap
/// of the time zone: that day's backup runs later in the day (03:00 for 02:30), so it
/// outlives the backup taken at 02:30 on the day it expires by half an hour.
///
/// Between clean-ups the live count is the count after the last one; while a new backup is
/// being added, before its clean-up, there can be more.
pub fn max_points_bound(p: &Policy) -> usize {
    let slack = u64::from(wall_clock_hits_gap(p.time_zone, p.schedule.time));
    let r = &p.retention;
    let selector = |on: &DaySelector, n: u64| match on {
        DaySelector::DaysOfMonth(days) => n * distinct(days),
        DaySelector::Weekdays {
            weeks_of_month,
            days_of_week,
        } => (n + 1) * distinct(weeks_of_month) * distinct(days_of_week),
    };
    let mut total = 0u64;
    if let Some(d) = &r.daily {
        total += u64::from(d.days) + slack;
    }
    if let Some(w) = &r.weekly {
        total += u64::from(w.weeks) * distinct(&w.days_of_week) + slack;
    }
    if let Some(m) = &r.monthly {
        total += selector(&m.on, u64::from(m.months)) + slack;
    }
    if let Some(y) = &r.yearly {
        total += distinct(&y.months_of_year) * selector(&y.on, u64::from(y.years)) + slack;
    }
    usize::try_from(total).unwrap_or(usize::MAX)
}

/// Whether `time` falls into a daylight-saving (or other forward) gap of `tz` on some day
/// between 1970 and 2100 (the span the time-zone data describes). Offsets are sampled every
/// 14 days; where one changes, the days around the change are checked one by one.
fn wall_clock_hits_gap(tz: Tz, time: NaiveTime) -> bool {
    let (Some(start), Some(end)) = (
        NaiveDate::from_ymd_opt(1970, 1, 1),
        NaiveDate::from_ymd_opt(2100, 12, 31),
    ) else {
        return false;
    };
    let offset = |d: NaiveDate| {
        tz.offset_from_utc_datetime(&d.and_time(NaiveTime::MIN))
            .fix()
            .local_minus_utc()
    };
    let mut day = start;
    let mut before = offset(day);
    while day < end {
        let next = day + Duration::days(14);
        let after = offset(next);
        if after != before {
            let mut d = day - Duration::days(1);
            while d <= next + Duration::days(1) {
                if matches!(
                    tz.from_local_datetime(&d.and_time(time)),
                    chrono::LocalResult::None
                ) {
                    return true;
                }
                d += Duration::days(1);
            }
        }
        before = after;
        day = next;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::super::model::{seed_policy, DailyRule, MonthlyRule, YearlyRule};
    use super::super::schedule::local_date;
    use super::super::schedule::{run_on, runs_between};
    use super::*;
    use chrono::Month;
    use chrono::Weekday;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }
    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }
    fn policy(tz: &str, time: &str) -> Policy {
        let mut p = seed_policy();
        p.time_zone = tz.parse().unwrap();
        p.schedule.time = NaiveTime::parse_from_str(time, "%H:%M").unwrap();
        p
    }
    use RuleKind::{Daily, Monthly, Weekly, Yearly};

    /// A 99-year rule near the end of the calendar ends at the last instant vmvault stores,
    /// never in a year the catalog could not read back.
    #[test]
    fn expiries_end_at_the_year_9999() {
        let mut p = policy("Pacific/Kiritimati", "23:30");
        p.retention = Default::default();
        p.retention.daily = Some(DailyRule { days: 9999 });
        p.retention.yearly = Some(YearlyRule {
            years: 99,
            months_of_year: vec![Month::December],
            on: DaySelector::DaysOfMonth(vec![DayOfMonth::Last]),
        });
        let at = run_on(&p, date("9950-12-31")).unwrap();
        assert_eq!(expiry_of(&p, at), crate::fmt::max_time());
        for (_, e) in rule_expiries(&p, at) {
            assert!(e <= crate::fmt::max_time(), "{e}");
        }
        assert_eq!(
            crate::vault::catalog::fmt_time(expiry_of(&p, at)),
            "9999-12-31T23:59:59.000000Z"
        );
        let at = run_on(&p, date("9999-12-30")).unwrap();
        assert!(expiry_of(&p, at) <= crate::fmt::max_time());
    }

    /// The seed's example policy in Europe/Berlin at 22:30: point (local date) → scheduled
    /// instant, selecting rules and expiry. Expected instants computed independently with
    /// Python's zoneinfo.
    #[test]
    fn seed_policy_table_berlin_2230() {
        let p = policy("Europe/Berlin", "22:30");
        let table: &[(&str, &str, &[RuleKind], &str)] = &[
            // Ordinary Tuesday; expiry crosses the spring-forward change (CET → CEST).
            (
                "2027-03-02",
                "2027-03-02T21:30:00Z",
                &[Daily],
                "2027-04-01T20:30:00Z",
            ),
            // A Sunday that is not first/last: 104 weeks.
            (
                "2027-03-14",
                "2027-03-14T21:30:00Z",
                &[Daily, Weekly],
                "2029-03-11T21:30:00Z",
            ),
            // May 2027 has five Sundays: the 4th (23rd) is not Last, the 5th (30th) is.
            (
                "2027-05-23",
                "2027-05-23T20:30:00Z",
                &[Daily, Weekly],
                "2029-05-20T20:30:00Z",
            ),
            (
                "2027-05-30",
                "2027-05-30T20:30:00Z",
                &[Daily, Weekly, Monthly],
                "2037-05-30T20:30:00Z",
            ),
            // January 2027: 3rd is the First Sunday (yearly), 31st the Last (monthly).
            (
                "2027-01-03",
                "2027-01-03T21:30:00Z",
                &[Daily, Weekly, Yearly],
                "2126-01-03T21:30:00Z",
            ),
            (
                "2027-01-31",
                "2027-01-31T21:30:00Z",
                &[Daily, Weekly, Monthly],
                "2037-01-31T21:30:00Z",
            ),
            // First Sunday of January 2028 (1 January is a Saturday).
            (
                "2028-01-02",
                "2028-01-02T21:30:00Z",
                &[Daily, Weekly, Yearly],
                "2127-01-02T21:30:00Z",
            ),
            // Leap day (a Tuesday).
            (
                "2028-02-29",
                "2028-02-29T21:30:00Z",
                &[Daily],
                "2028-03-30T20:30:00Z",
            ),
            // Last Sunday of February 2028 is the 27th (four Sundays: Fourth and Last).
            (
                "2028-02-27",
                "2028-02-27T21:30:00Z",
                &[Daily, Weekly, Monthly],
                "2038-02-27T21:30:00Z",
            ),
            // October 2028 has five Sundays; the 29th is Last and the fall-back day (CET at
            // 22:30); ten years later the 29th is still summer time.
            (
                "2028-10-29",
                "2028-10-29T21:30:00Z",
                &[Daily, Weekly, Monthly],
                "2038-10-29T20:30:00Z",
            ),
            (
                "2028-10-22",
                "2028-10-22T20:30:00Z",
                &[Daily, Weekly],
                "2030-10-20T20:30:00Z",
            ),
            // December 2029: five Sundays, the 30th is Last.
            (
                "2029-12-30",
                "2029-12-30T21:30:00Z",
                &[Daily, Weekly, Monthly],
                "2039-12-30T21:30:00Z",
            ),
            (
                "2029-12-23",
                "2029-12-23T21:30:00Z",
                &[Daily, Weekly],
                "2031-12-21T21:30:00Z",
            ),
        ];
        for (day, run, rules, expiry) in table {
            let t = run_on(&p, date(day)).unwrap();
            assert_eq!(t, utc(run), "{day}");
            assert_eq!(rules_selecting(&p, t), rules.to_vec(), "{day}");
            assert_eq!(expiry_of(&p, t), utc(expiry), "{day}");
        }
    }

    #[test]
    fn seed_policy_over_three_years_selects_the_right_counts() {
        let p = policy("Europe/Berlin", "22:30");
        let runs: Vec<_> =
            runs_between(&p, utc("2026-12-31T23:00:00Z"), utc("2029-12-31T22:59:59Z")).collect();
        assert_eq!(runs.len(), 365 + 366 + 365);
        let count = |k| {
            runs.iter()
                .filter(|t| rules_selecting(&p, **t).contains(&k))
                .count()
        };
        assert_eq!(count(Daily), 1096);
        assert_eq!(count(Weekly), 52 + 53 + 52); // Sundays of 2027..=2029
        assert_eq!(count(Monthly), 36);
        assert_eq!(count(Yearly), 3);
        for t in &runs {
            let rules = rules_selecting(&p, *t);
            let d = local_date(p.time_zone, *t);
            if rules.contains(&Monthly) {
                assert_eq!(d.weekday(), Weekday::Sun);
                assert!(d.day() >= 22 && (d + Duration::days(7)).month() != d.month());
            }
            if rules.contains(&Yearly) {
                assert!(d.month() == 1 && d.day() <= 7 && d.weekday() == Weekday::Sun);
            }
        }
    }

    #[test]
    fn dst_days_berlin_0230() {
        let p = policy("Europe/Berlin", "02:30");
        // 2027-03-28: last Sunday of March and spring-forward day: runs 03:00 CEST; the
        // expiry keeps the point's own wall clock (03:00) on 2037-03-28, a CET day.
        let t = run_on(&p, date("2027-03-28")).unwrap();
        assert_eq!(t, utc("2027-03-28T01:00:00Z"));
        assert_eq!(rules_selecting(&p, t), vec![Daily, Weekly, Monthly]);
        assert_eq!(expiry_of(&p, t), utc("2037-03-28T02:00:00Z"));
        // 2027-10-31: five-Sunday October, Last Sunday, fall-back day: 02:30 is ambiguous,
        // runs at the earlier instant (CEST).
        let t = run_on(&p, date("2027-10-31")).unwrap();
        assert_eq!(t, utc("2027-10-31T00:30:00Z"));
        assert_eq!(rules_selecting(&p, t), vec![Daily, Weekly, Monthly]);
        assert_eq!(expiry_of(&p, t), utc("2037-10-31T01:30:00Z"));
        // A daily point whose expiry day is the spring-forward day: 02:30 resolves to 03:00.
        let t = run_on(&p, date("2028-02-25")).unwrap();
        assert_eq!(expiry_of(&p, t), run_on(&p, date("2028-03-26")).unwrap());
        assert_eq!(expiry_of(&p, t), utc("2028-03-26T01:00:00Z"));
    }

    #[test]
    fn dst_days_new_york() {
        let p = policy("America/New_York", "02:30");
        // Spring forward 2028-03-12 (second Sunday): 03:00 EDT.
        let t = run_on(&p, date("2028-03-12")).unwrap();
        assert_eq!(t, utc("2028-03-12T07:00:00Z"));
        assert_eq!(
            rule_expiries(&p, t),
            vec![
                (Daily, utc("2028-04-11T07:00:00Z")),
                (Weekly, utc("2030-03-10T07:00:00Z"))
            ]
        );
        let p = policy("America/New_York", "01:30");
        // Fall back 2027-11-07 (first Sunday of November): 01:30 EDT, the earlier one.
        let t = run_on(&p, date("2027-11-07")).unwrap();
        assert_eq!(t, utc("2027-11-07T05:30:00Z"));
        // 104 weeks later is the fall-back day of 2029: again the earlier 01:30.
        assert_eq!(
            rule_expiries(&p, t),
            vec![
                (Daily, utc("2027-12-07T06:30:00Z")),
                (Weekly, utc("2029-11-04T05:30:00Z"))
            ]
        );
    }

    #[test]
    fn months_clamp_to_month_end_and_leap_years() {
        let mut p = policy("UTC", "10:00");
        p.retention = Default::default();
        p.retention.daily = Some(DailyRule { days: 1 });
        p.retention.monthly = Some(MonthlyRule {
            months: 1,
            on: DaySelector::DaysOfMonth(vec![DayOfMonth::Last]),
        });
        p.retention.yearly = Some(YearlyRule {
            years: 1,
            months_of_year: vec![Month::February],
            on: DaySelector::DaysOfMonth(vec![DayOfMonth::Last]),
        });
        let e = |d: &str| expiry_of(&p, run_on(&p, date(d)).unwrap());
        assert_eq!(e("2028-01-31"), utc("2028-02-29T10:00:00Z"));
        assert_eq!(e("2027-01-31"), utc("2027-02-28T10:00:00Z"));
        assert_eq!(e("2028-04-30"), utc("2028-05-30T10:00:00Z"));
        assert_eq!(
            rules_selecting(&p, utc("2028-02-29T10:00:00Z")),
            vec![Daily, Monthly, Yearly]
        );
        assert_eq!(e("2028-02-29"), utc("2029-02-28T10:00:00Z"));
        assert_eq!(
            rules_selecting(&p, utc("2028-02-28T10:00:00Z")),
            vec![Daily]
        );
        assert_eq!(
            rules_selecting(&p, utc("2027-02-28T10:00:00Z")),
            vec![Daily, Monthly, Yearly]
        );
    }

    #[test]
    fn weeks_of_month() {
        // May 2027: Sundays 2, 9, 16, 23, 30.
        let sundays = [
            "2027-05-02",
            "2027-05-09",
            "2027-05-16",
            "2027-05-23",
            "2027-05-30",
        ];
        let expected = [
            vec![WeekOfMonth::First],
            vec![WeekOfMonth::Second],
            vec![WeekOfMonth::Third],
            vec![WeekOfMonth::Fourth],
            vec![WeekOfMonth::Last],
        ];
        for (d, want) in sundays.iter().zip(expected) {
            let got: Vec<_> = WeekOfMonth::ALL
                .into_iter()
                .filter(|w| is_week_of_month(date(d), *w))
                .collect();
            assert_eq!(got, want, "{d}");
        }
        // February 2027: four Sundays; the 28th is both Fourth and Last.
        let got: Vec<_> = WeekOfMonth::ALL
            .into_iter()
            .filter(|w| is_week_of_month(date("2027-02-28"), *w))
            .collect();
        assert_eq!(got, vec![WeekOfMonth::Fourth, WeekOfMonth::Last]);
    }

    #[test]
    fn unselected_instant_expires_at_once() {
        let mut p = policy("UTC", "10:00");
        p.retention.daily = None;
        let t = utc("2027-03-02T10:00:00Z"); // a Tuesday: no rule
        assert!(rules_selecting(&p, t).is_empty());
        assert_eq!(expiry_of(&p, t), t);
    }

    fn pt(id: &str, time: &str, expiry: Option<&str>) -> PointRef {
        PointRef {
            id: id.into(),
            time: utc(time),
            expiry: expiry.map(utc),
        }
    }

    #[test]
    fn prune_removes_expired_but_never_the_newest_or_unexpiring() {
        let now = utc("2027-06-01T00:00:00Z");
        let points = vec![
            pt("a", "2027-01-01T00:00:00Z", Some("2027-05-01T00:00:00Z")), // expired
            pt("b", "2027-02-01T00:00:00Z", Some("2027-06-01T00:00:00Z")), // expires exactly now
            pt("c", "2027-03-01T00:00:00Z", Some("2027-06-01T00:00:01Z")), // still alive
            pt("d", "2027-04-01T00:00:00Z", None),                         // kept by hand
            pt("e", "2027-05-01T00:00:00Z", Some("2027-05-02T00:00:00Z")), // newest, expired
        ];
        assert_eq!(points_to_prune(&points, now), vec!["a", "b"]);
        assert!(points_to_prune(&[], now).is_empty());
        let only = vec![pt(
            "x",
            "2020-01-01T00:00:00Z",
            Some("2020-01-02T00:00:00Z"),
        )];
        assert!(points_to_prune(&only, now).is_empty());
    }

    #[test]
    fn bound_of_the_seed_policy() {
        // 30 + 104 + (120 + 1) + (99 + 1); 22:30 is never in a Berlin gap.
        assert_eq!(max_points_bound(&policy("Europe/Berlin", "22:30")), 355);
        // 02:30 falls into the spring-forward gap: one more per rule.
        assert_eq!(max_points_bound(&policy("Europe/Berlin", "02:30")), 359);
        assert_eq!(max_points_bound(&policy("UTC", "02:30")), 355);
        let mut p = policy("UTC", "02:30");
        p.retention = Default::default();
        p.retention.daily = Some(DailyRule { days: 30 });
        assert_eq!(max_points_bound(&p), 30);
    }

    #[test]
    fn gap_detection() {
        let tz = |s: &str| s.parse::<Tz>().unwrap();
        let t = |s: &str| NaiveTime::parse_from_str(s, "%H:%M").unwrap();
        assert!(wall_clock_hits_gap(tz("Europe/Berlin"), t("02:30")));
        assert!(!wall_clock_hits_gap(tz("Europe/Berlin"), t("03:00")));
        assert!(!wall_clock_hits_gap(tz("Europe/Berlin"), t("01:59")));
        assert!(wall_clock_hits_gap(tz("America/New_York"), t("02:00")));
        assert!(!wall_clock_hits_gap(tz("UTC"), t("02:30")));
        assert!(!wall_clock_hits_gap(tz("Asia/Kolkata"), t("22:30")));
        assert!(wall_clock_hits_gap(tz("Australia/Lord_Howe"), t("02:15")));
    }

    #[test]
    fn expiry_beyond_the_calendar_saturates() {
        let mut p = policy("Europe/Berlin", "22:30");
        p.retention.daily = Some(DailyRule { days: 9999 });
        let near_end = DateTime::<Utc>::MAX_UTC - Duration::days(100);
        assert_eq!(expiry_of(&p, near_end), crate::fmt::max_time());
        assert!(!rules_selecting(&p, DateTime::<Utc>::MAX_UTC).is_empty());
        assert!(!rules_selecting(&p, DateTime::<Utc>::MIN_UTC).is_empty());
    }
}
