//! `policy preview`: which recovery points a policy would keep, and until when.
//!
//! # Semantics (shared with `sim advance`)
//! `preview(p, from, days)` starts with no points and replays the local days `from` ..=
//! `from + days - 1` of the policy's time zone — i.e. the scheduled runs in
//! `(after, until]` of [`preview_window`], where `after` is just before `from` 00:00 local
//! and `until` is just before `from + days` 00:00 local. At each scheduled run, in time
//! order:
//! 1. a point stamped with the run's instant is added, expiring at
//!    [`super::retention::expiry_of`];
//! 2. a clean-up runs with `now` = that instant ([`super::retention::points_to_prune`]:
//!    expired points go, the newest stays).
//!
//! Nothing else prunes. The result is the points alive after the last run, each with its
//! expiry and the rules that keep it, and per local day the number of points alive at the
//! end of that day (after its run and clean-up, if it has one). `sim advance` performs the
//! same sequence with real backups, so the two agree point for point.

use super::model::{Policy, RuleKind};
use super::retention::rule_expiries;
use super::schedule::{resolve_local, run_on};
use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use serde::Serialize;

/// A point the preview keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreviewPoint {
    /// Scheduled instant (the point's time).
    pub time: DateTime<Utc>,
    pub expiry: DateTime<Utc>,
    /// The rules that select it (the latest of their expiries is `expiry`).
    pub rules: Vec<RuleKind>,
}

/// Result of [`preview`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Preview {
    pub from: NaiveDate,
    pub days: u32,
    /// Points alive after the last run, oldest first.
    pub points: Vec<PreviewPoint>,
    /// Per local day of the window: points alive at the end of the day.
    pub daily_counts: Vec<(NaiveDate, usize)>,
}

/// The `(after, until]` bounds of the runs [`preview`] replays, for
/// [`super::schedule::runs_between`]: `after` = 1 ns before `from` 00:00 local, `until` =
/// 1 ns before `from + days` 00:00 local (midnight resolved like any wall-clock time).
pub fn preview_window(p: &Policy, from: NaiveDate, days: u32) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = |d: NaiveDate| resolve_local(p.time_zone, d.and_time(NaiveTime::MIN));
    let end_day = from
        .checked_add_days(chrono::Days::new(u64::from(days)))
        .unwrap_or(NaiveDate::MAX);
    let tick = Duration::nanoseconds(1);
    let before = |t: DateTime<Utc>| {
        t.checked_sub_signed(tick)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    };
    (before(start(from)), before(start(end_day)))
}

/// Replays `days` local days from `from` (see the module doc for the exact sequence).
pub fn preview(p: &Policy, from: NaiveDate, days: u32) -> Preview {
    let mut alive: Vec<PreviewPoint> = Vec::new();
    let mut daily_counts = Vec::with_capacity(days.min(100_000) as usize);
    let mut day = from;
    for _ in 0..days {
        if let Some(run) = run_on(p, day) {
            let expiries = rule_expiries(p, run);
            let expiry = expiries.iter().map(|(_, e)| *e).max().unwrap_or(run);
            alive.push(PreviewPoint {
                time: run,
                expiry,
                rules: expiries.into_iter().map(|(k, _)| k).collect(),
            });
            // The new point is the newest and is kept whatever its expiry.
            let newest = alive.len() - 1;
            let mut i = 0;
            alive.retain(|pt| {
                let keep = i == newest || pt.expiry > run;
                i += 1;
                keep
            });
        }
        daily_counts.push((day, alive.len()));
        match day.succ_opt() {
            Some(d) => day = d,
            None => break,
        }
    }
    Preview {
        from,
        days,
        points: alive,
        daily_counts,
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::seed_policy;
    use super::super::retention::{expiry_of, points_to_prune, rules_selecting, PointRef};
    use super::super::schedule::{run_on, runs_between};
    use super::*;

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    /// The straightforward simulation the module doc describes.
    fn simulate(p: &Policy, from: NaiveDate, days: u32) -> Vec<PointRef> {
        let (after, until) = preview_window(p, from, days);
        let mut points: Vec<PointRef> = Vec::new();
        for run in runs_between(p, after, until) {
            points.push(PointRef {
                id: run.to_rfc3339(),
                time: run,
                expiry: Some(expiry_of(p, run)),
            });
            let gone = points_to_prune(&points, run);
            points.retain(|pt| !gone.contains(&pt.id));
        }
        points
    }

    fn check_agrees(p: &Policy, from: &str, days: u32) -> Preview {
        let pv = preview(p, date(from), days);
        let sim = simulate(p, date(from), days);
        let got: Vec<(DateTime<Utc>, DateTime<Utc>)> =
            pv.points.iter().map(|x| (x.time, x.expiry)).collect();
        let want: Vec<(DateTime<Utc>, DateTime<Utc>)> =
            sim.iter().map(|x| (x.time, x.expiry.unwrap())).collect();
        assert_eq!(got, want);
        for pt in &pv.points {
            assert_eq!(pt.rules, rules_selecting(p, pt.time));
        }
        assert_eq!(pv.daily_counts.len(), days as usize);
        pv
    }

    #[test]
    fn preview_agrees_with_simulation_seed_policy_three_years() {
        for (tz, time) in [
            ("Europe/Berlin", "22:30"),
            ("Europe/Berlin", "02:30"),
            ("America/New_York", "01:30"),
            ("America/New_York", "02:30"),
        ] {
            let mut p = seed_policy();
            p.time_zone = tz.parse().unwrap();
            p.schedule.time = NaiveTime::parse_from_str(time, "%H:%M").unwrap();
            let pv = check_agrees(&p, "2027-01-01", 365 + 366 + 365);
            // After three years (last run Monday 2029-12-31): the local calendar decides, so
            // every zone and time keeps the same days (see the next test for the count).
            let n = |k: RuleKind| pv.points.iter().filter(|x| x.rules.contains(&k)).count();
            assert_eq!(pv.points.len(), 143, "{tz} {time}");
            assert_eq!(n(RuleKind::Daily), 143, "{tz} {time}"); // every point has the daily rule
            assert_eq!(n(RuleKind::Weekly), 118, "{tz} {time}");
            assert_eq!(n(RuleKind::Monthly), 36, "{tz} {time}");
            assert_eq!(n(RuleKind::Yearly), 3, "{tz} {time}");
        }
    }

    #[test]
    fn preview_keeps_what_the_rules_keep() {
        let p = seed_policy();
        let pv = preview(&p, date("2027-01-01"), 365 + 366 + 365);
        // Alive at the end (last run Monday 2029-12-31 22:30 Berlin):
        // - daily (30 days): 2029-12-02 ..= 2029-12-31, of which 5 are Sundays;
        // - weekly (104 weeks = 728 days): Sundays from 2028-01-09 on: 104;
        // - monthly (120 months): the 36 last Sundays, 12 of them (2027) older than that;
        // - yearly: first Sundays of January 2027, 2028 (older than that), 2029.
        let last_run = pv.points.last().unwrap().time;
        assert_eq!(last_run, run_on(&p, date("2029-12-31")).unwrap());
        for pt in &pv.points {
            assert!(pt.expiry > last_run || pt.time == last_run);
        }
        let daily_only = pv
            .points
            .iter()
            .filter(|x| x.rules == vec![RuleKind::Daily])
            .count();
        assert_eq!(daily_only, 25);
        let sundays = pv
            .points
            .iter()
            .filter(|x| x.rules.contains(&RuleKind::Weekly))
            .count();
        assert_eq!(sundays, 104 + 12 + 2);
        let oldest_weekly_only = pv
            .points
            .iter()
            .find(|x| x.rules == vec![RuleKind::Daily, RuleKind::Weekly])
            .unwrap();
        assert_eq!(
            oldest_weekly_only.time,
            run_on(&p, date("2028-01-09")).unwrap()
        );
        assert_eq!(pv.points.len(), 25 + 118);
        assert_eq!(pv.daily_counts.last().unwrap().1, pv.points.len());
        assert_eq!(pv.daily_counts[0], (date("2027-01-01"), 1));
        assert_eq!(pv.daily_counts[29].1, 30);
        assert_eq!(pv.daily_counts[30].1, 30); // day 31: the first point expired
    }

    #[test]
    fn daily_counts_track_expiry_of_a_short_policy() {
        let mut p = seed_policy();
        p.time_zone = chrono_tz::Tz::UTC;
        p.retention = Default::default();
        p.retention.daily = Some(super::super::model::DailyRule { days: 3 });
        let pv = check_agrees(&p, "2027-01-01", 6);
        let counts: Vec<usize> = pv.daily_counts.iter().map(|c| c.1).collect();
        assert_eq!(counts, vec![1, 2, 3, 3, 3, 3]);
        assert_eq!(pv.points.len(), 3);
        assert_eq!(preview(&p, date("2027-01-01"), 0).points.len(), 0);
    }

    #[test]
    fn window_is_local_days() {
        let p = seed_policy(); // Berlin
        let (after, until) = preview_window(&p, date("2027-07-01"), 2);
        assert_eq!(after.to_rfc3339(), "2027-06-30T21:59:59.999999999+00:00");
        assert_eq!(until.to_rfc3339(), "2027-07-02T21:59:59.999999999+00:00");
        assert_eq!(runs_between(&p, after, until).count(), 2);
    }
}
