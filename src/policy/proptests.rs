//! Property tests: random valid policies over random spans, simulating every scheduled
//! backup and the clean-up after it (the sequence `sim advance` and `policy preview` run).
//!
//! Properties: every scheduled backup is kept by some rule; no point is removed before its
//! expiry (and every expired one but the newest is); the newest point always exists; the
//! number of live points never exceeds [`max_points_bound`]; `preview` equals the
//! simulation. Durations are kept short so that spans of a few years reach the steady
//! state; time zones and times include daylight-saving gaps and overlaps (02:30, 01:30,
//! 00:00 in America/Santiago whose clocks change at midnight, Lord Howe's 30-minute shift,
//! the day Samoa skipped).

use super::model::{
    DailyRule, DayOfMonth, DaySelector, Frequency, MonthlyRule, Policy, Retention, Schedule,
    WeekOfMonth, WeeklyRule, YearlyRule, MONTHS, WEEKDAYS,
};
use super::preview::{preview, preview_window};
use super::retention::{expiry_of, max_points_bound, points_to_prune, rules_selecting, PointRef};
use super::schedule::runs_between;
use chrono::{Month, NaiveDate, NaiveTime, Weekday};
use proptest::prelude::*;

const ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "America/Santiago",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Pacific/Apia",
];

/// A non-empty subset of `items` chosen by `mask` (bit i keeps item i).
fn subset<T: Copy>(items: &[T], mask: u32) -> Vec<T> {
    let picked: Vec<T> = items
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, x)| *x)
        .collect();
    if picked.is_empty() {
        vec![items[mask as usize % items.len()]]
    } else {
        picked
    }
}

fn arb_time() -> impl Strategy<Value = NaiveTime> {
    prop_oneof![
        Just((2, 30)),
        Just((1, 30)),
        Just((0, 0)),
        Just((2, 15)),
        (0u32..24, prop::sample::select(vec![0u32, 15, 30, 45])),
    ]
    .prop_map(|(h, m)| NaiveTime::from_hms_opt(h, m, 0).unwrap_or(NaiveTime::MIN))
}

/// A day selector valid for a schedule running on `days` (weekly) or every day (daily).
fn selector(
    weekly: bool,
    scheduled: &[Weekday],
    by_day: bool,
    weeks_mask: u32,
    days_mask: u32,
) -> DaySelector {
    const DOM: [DayOfMonth; 5] = [
        DayOfMonth::Day(1),
        DayOfMonth::Day(2),
        DayOfMonth::Day(15),
        DayOfMonth::Day(28),
        DayOfMonth::Last,
    ];
    if by_day && !weekly {
        DaySelector::DaysOfMonth(subset(&DOM, days_mask))
    } else {
        DaySelector::Weekdays {
            weeks_of_month: subset(&WeekOfMonth::ALL, weeks_mask),
            days_of_week: subset(scheduled, days_mask),
        }
    }
}

prop_compose! {
    fn arb_policy()(
        zone in prop::sample::select(ZONES),
        time in arb_time(),
        weekly in any::<bool>(),
        sched_mask in 1u32..128,
        daily_days in 1u32..=40,
        weekly_rule in prop::option::of((1u32..=8, 1u32..128)),
        monthly_rule in prop::option::of((1u32..=6, any::<bool>(), 1u32..32, 1u32..128)),
        yearly_rule in prop::option::of((1u32..=2, 1u32..4096, any::<bool>(), 1u32..32, 1u32..128)),
    ) -> Policy {
        let tz = zone.parse().unwrap_or(chrono_tz::Tz::UTC);
        let all: Vec<Weekday> = WEEKDAYS.to_vec();
        let scheduled = if weekly { subset(&WEEKDAYS, sched_mask) } else { Vec::new() };
        let pool = if weekly { scheduled.clone() } else { all };
        let weekly_rule = match (weekly, weekly_rule) {
            // A weekly schedule needs a weekly rule covering every scheduled day.
            (true, w) => Some(WeeklyRule { weeks: w.map_or(1, |w| w.0), days_of_week: scheduled.clone() }),
            (false, Some((weeks, mask))) => Some(WeeklyRule { weeks, days_of_week: subset(&pool, mask) }),
            (false, None) => None,
        };
        Policy {
            name: "Prop".into(),
            time_zone: tz,
            schedule: Schedule {
                frequency: if weekly { Frequency::Weekly } else { Frequency::Daily },
                time,
                days: scheduled,
            },
            retention: Retention {
                daily: (!weekly).then_some(DailyRule { days: daily_days }),
                weekly: weekly_rule,
                monthly: monthly_rule.map(|(months, by_day, wm, dm)| MonthlyRule {
                    months,
                    on: selector(weekly, &pool, by_day, wm, dm),
                }),
                yearly: yearly_rule.map(|(years, mm, by_day, wm, dm)| YearlyRule {
                    years,
                    months_of_year: subset::<Month>(&MONTHS, mm),
                    on: selector(weekly, &pool, by_day, wm, dm),
                }),
            },
        }
    }
}

fn arb_start() -> impl Strategy<Value = NaiveDate> {
    (0i64..(366 * 12)).prop_map(|d| {
        NaiveDate::from_ymd_opt(2010, 1, 1).unwrap_or(NaiveDate::MIN) + chrono::Duration::days(d)
    })
}

proptest! {
    // PROPTEST_CASES overrides the count for a longer run.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(192)
    ))]

    #[test]
    fn simulated_runs_and_clean_ups_keep_the_retention_promises(
        p in arb_policy(),
        from in arb_start(),
        days in 1u32..=1100,
    ) {
        prop_assert!(p.validate().is_ok(), "generator made an invalid policy: {:?}", p.validate());
        let bound = max_points_bound(&p);
        let (after, until) = preview_window(&p, from, days);
        let mut points: Vec<PointRef> = Vec::new();
        let mut most = 0;
        for run in runs_between(&p, after, until) {
            prop_assert!(!rules_selecting(&p, run).is_empty(), "run {} kept by no rule", run);
            let expiry = expiry_of(&p, run);
            prop_assert!(expiry > run);
            points.push(PointRef { id: run.to_rfc3339(), time: run, expiry: Some(expiry) });
            let gone = points_to_prune(&points, run);
            for pt in &points {
                let removed = gone.contains(&pt.id);
                let expired = pt.expiry.is_some_and(|e| e <= run);
                // Nothing before its expiry; everything expired except the newest.
                prop_assert_eq!(removed, expired && pt.time != run, "point {} at {}", pt.id, run);
            }
            points.retain(|pt| !gone.contains(&pt.id));
            prop_assert!(points.iter().any(|pt| pt.time == run), "newest point missing");
            prop_assert!(points.len() <= bound, "{} live points > bound {} at {} for {:?}", points.len(), bound, run, p);
            most = most.max(points.len());
        }
        // preview replays the same sequence.
        let pv = preview(&p, from, days);
        let got: Vec<_> = pv.points.iter().map(|x| (x.time, x.expiry)).collect();
        let want: Vec<_> = points.iter().map(|x| (x.time, x.expiry.unwrap_or(x.time))).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(pv.daily_counts.iter().map(|c| c.1).max().unwrap_or(0), most);
    }
}

#[test]
fn bound_is_reached_by_a_plain_daily_policy() {
    // The bound is not just an upper bound: a UTC daily policy keeps exactly its days.
    let mut p = Policy::default_policy();
    p.retention.daily = Some(DailyRule { days: 30 });
    let pv = preview(&p, NaiveDate::from_ymd_opt(2027, 1, 1).unwrap(), 100);
    assert_eq!(
        pv.daily_counts.iter().map(|c| c.1).max(),
        Some(max_points_bound(&p))
    );
    // And with the DST slack it is reached too: Berlin at 02:30, 30 days after the
    // spring-forward day (run 03:00) the 02:30 run still sees that point.
    p.time_zone = "Europe/Berlin".parse().unwrap();
    p.schedule.time = NaiveTime::from_hms_opt(2, 30, 0).unwrap();
    let pv = preview(&p, NaiveDate::from_ymd_opt(2027, 1, 1).unwrap(), 200);
    assert_eq!(pv.daily_counts.iter().map(|c| c.1).max(), Some(31));
    assert_eq!(max_points_bound(&p), 31);
}

#[test]
fn bound_counts_the_drift_of_nth_weekdays() {
    // "First Sunday" kept 1 month: 7 March 2010 (kept until 7 April) is still alive when
    // 4 April, April's First Sunday, is taken; with the daily point of 5 April that makes 3.
    // So a monthly weekday rule may keep months + 1 points. Found by the property test
    // against a bound of `months`.
    let mut p = Policy::default_policy();
    p.schedule.time = NaiveTime::from_hms_opt(2, 30, 0).unwrap();
    p.retention.daily = Some(DailyRule { days: 1 });
    p.retention.monthly = Some(MonthlyRule {
        months: 1,
        on: DaySelector::Weekdays {
            weeks_of_month: vec![WeekOfMonth::First],
            days_of_week: vec![Weekday::Sun],
        },
    });
    assert_eq!(max_points_bound(&p), 1 + 2);
    let pv = preview(&p, NaiveDate::from_ymd_opt(2010, 1, 1).unwrap(), 95);
    assert_eq!(pv.daily_counts.iter().map(|c| c.1).max(), Some(3));
}

/// Speed of what the scheduler and `sim advance` call, per item. Not a test of speed (no
/// timing asserts): run with
/// `cargo test --release --lib policy::proptests::bench -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_schedule_retention_preview() {
    use std::time::Instant;
    let p = super::model::seed_policy();
    let from = NaiveDate::from_ymd_opt(2027, 1, 1).unwrap();
    let (after, until) = preview_window(&p, from, 800);
    let t = Instant::now();
    let mut n = 0;
    for _ in 0..100 {
        for run in runs_between(&p, after, until) {
            n += usize::from(expiry_of(&p, run) > run);
        }
    }
    let e = t.elapsed();
    println!(
        "runs_between + expiry_of, 800 days: {:?} per item ({} runs)",
        e / 100,
        n / 100
    );
    let t = Instant::now();
    let pv = preview(&p, from, 800);
    println!(
        "preview 800 days: {:?} ({} points)",
        t.elapsed(),
        pv.points.len()
    );
    let t = Instant::now();
    let pv = preview(&p, from, 36_500);
    println!(
        "preview 100 years: {:?} ({} points)",
        t.elapsed(),
        pv.points.len()
    );
    let t = Instant::now();
    let b = max_points_bound(&p);
    println!("max_points_bound: {:?} (= {b})", t.elapsed());
    let t = Instant::now();
    let mut x = after;
    for _ in 0..10_000 {
        x = super::schedule::next_run_after(&p, x);
    }
    println!("next_run_after: {:?} per call", t.elapsed() / 10_000);
}
