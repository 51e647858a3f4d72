//! Every rule a policy must satisfy. Each broken rule is one [`Problem`] naming the field
//! (dotted path of the policy file), the value given and what is allowed; all are collected.
//!
//! The rules (DOMAIN.md "Policy semantics" and the policy issue):
//! - name: 1..=100 characters, ASCII letters, digits, `-`, `_`, `.`, starting with a letter
//!   or digit (it is used in file names and on command lines);
//! - schedule: whole-minute time; weekly needs at least one day, daily takes none; no day
//!   twice;
//! - ranges: daily 1..=9999 days, weekly 1..=5163 weeks, monthly 1..=1188 months, yearly
//!   1..=99 years;
//! - a daily rule only with a daily schedule;
//! - weekly retention days, and the weekdays of monthly/yearly selectors, must be scheduled
//!   days (weekly schedule) — a rule for a day without backups keeps nothing;
//! - days_of_month (1..=28 or Last) only with a daily schedule (a weekly schedule has no
//!   backup on a given date every month);
//! - a yearly rule names at least one month; lists are not empty and name nothing twice;
//! - every scheduled backup is selected by at least one rule: a daily schedule needs the
//!   daily rule, a weekly schedule a weekly rule covering every scheduled day. This makes
//!   [`super::retention::expiry_of`] total over a valid policy's scheduled instants.
//!
//! The time zone needs no rule here: [`chrono_tz::Tz`] can only hold IANA zones (the file
//! reader reports unknown names, suggesting the IANA name for a Windows name).

use super::model::{
    join_words, weekday_name, DayOfMonth, DaySelector, Frequency, Policy, Problem, WeekOfMonth,
};
use chrono::{Timelike, Weekday};
use std::ops::RangeInclusive;

pub const DAILY_DAYS: RangeInclusive<u32> = 1..=9999;
pub const WEEKLY_WEEKS: RangeInclusive<u32> = 1..=5163;
pub const MONTHLY_MONTHS: RangeInclusive<u32> = 1..=1188;
pub const YEARLY_YEARS: RangeInclusive<u32> = 1..=99;
pub const NAME_MAX_LEN: usize = 100;
pub const DAY_OF_MONTH_ALLOWED: &str =
    "days 1..=28 or \"Last\" (every month has days 1 to 28; \"Last\" is the month's last day)";

/// "1..=9999 days".
pub fn range_allowed(range: &RangeInclusive<u32>, unit: &str) -> String {
    format!("{}..={} {unit}", range.start(), range.end())
}

/// Why `name` cannot be a policy name, if it cannot.
pub fn name_problem(name: &str) -> Option<Problem> {
    let allowed = format!(
        "1 to {NAME_MAX_LEN} characters: letters, digits, '-', '_' and '.', starting with a letter or digit"
    );
    let fits = !name.is_empty()
        && name.len() <= NAME_MAX_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    (!fits).then(|| Problem::new("name", format!("{name:?}"), allowed))
}

fn days_text(days: &[Weekday]) -> String {
    let names: Vec<String> = days
        .iter()
        .map(|d| format!("{:?}", weekday_name(*d)))
        .collect();
    format!("[{}]", names.join(", "))
}

fn day_names(days: &[Weekday]) -> String {
    let names: Vec<&str> = days.iter().map(|d| weekday_name(*d)).collect();
    join_words(&names)
}

fn duplicates<T: PartialEq + Copy>(items: &[T]) -> Vec<T> {
    let mut dups = Vec::new();
    for (i, x) in items.iter().enumerate() {
        if items[..i].contains(x) && !dups.contains(x) {
            dups.push(*x);
        }
    }
    dups
}

struct Check<'p> {
    p: &'p Policy,
    problems: Vec<Problem>,
}

impl Check<'_> {
    fn push(&mut self, field: &str, given: impl Into<String>, allowed: impl Into<String>) {
        self.problems.push(Problem::new(field, given, allowed));
    }

    fn range(&mut self, field: &str, value: u32, range: RangeInclusive<u32>, unit: &str) {
        if !range.contains(&value) {
            self.push(field, value.to_string(), range_allowed(&range, unit));
        }
    }

    fn weekly_schedule(&self) -> bool {
        self.p.schedule.frequency == Frequency::Weekly
    }

    /// Non-empty, no duplicates, and (weekly schedule) only scheduled days.
    fn weekdays(&mut self, field: &str, days: &[Weekday]) {
        if days.is_empty() {
            self.push(field, "[]", "one or more weekdays, e.g. [\"Sunday\"]");
        }
        let dups = duplicates(days);
        if !dups.is_empty() {
            self.push(
                field,
                days_text(days),
                format!("each weekday once ({} twice)", day_names(&dups)),
            );
        }
        if self.weekly_schedule() {
            let scheduled = &self.p.schedule.days;
            let stray: Vec<Weekday> = days
                .iter()
                .copied()
                .filter(|d| !scheduled.contains(d))
                .collect();
            if !stray.is_empty() && !scheduled.is_empty() {
                self.push(
                    field,
                    days_text(days),
                    format!(
                        "scheduled days only ({}); no backup runs on {}",
                        day_names(scheduled),
                        day_names(&stray)
                    ),
                );
            }
        }
    }

    fn selector(&mut self, path: &str, on: &DaySelector) {
        match on {
            DaySelector::Weekdays {
                weeks_of_month,
                days_of_week,
            } => {
                let field = format!("{path}.weeks_of_month");
                if weeks_of_month.is_empty() {
                    self.push(
                        &field,
                        "[]",
                        "one or more of First, Second, Third, Fourth, Last",
                    );
                }
                let dups = duplicates(weeks_of_month);
                if !dups.is_empty() {
                    let given: Vec<&str> = weeks_of_month.iter().map(|w| w.as_str()).collect();
                    let twice: Vec<&str> = dups.iter().map(|w: &WeekOfMonth| w.as_str()).collect();
                    self.push(
                        &field,
                        format!("{given:?}"),
                        format!("each week of the month once ({} twice)", join_words(&twice)),
                    );
                }
                self.weekdays(&format!("{path}.days_of_week"), days_of_week);
            }
            DaySelector::DaysOfMonth(days) => {
                let field = format!("{path}.days_of_month");
                let given = format!(
                    "[{}]",
                    days.iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                if self.weekly_schedule() {
                    self.push(
                        &field,
                        given.clone(),
                        "days_of_month only with a daily schedule; with a weekly schedule use weeks_of_month and days_of_week",
                    );
                }
                if days.is_empty() {
                    self.push(&field, "[]", DAY_OF_MONTH_ALLOWED);
                }
                for d in days {
                    if let DayOfMonth::Day(n) = d {
                        if !(1..=28).contains(n) {
                            self.push(&field, n.to_string(), DAY_OF_MONTH_ALLOWED);
                        }
                    }
                }
                if !duplicates(days).is_empty() {
                    self.push(&field, given, "each day once");
                }
            }
        }
    }
}

/// All problems of `p` (empty: valid).
pub fn problems(p: &Policy) -> Vec<Problem> {
    let mut c = Check {
        p,
        problems: Vec::new(),
    };
    if let Some(problem) = name_problem(&p.name) {
        c.problems.push(problem);
    }

    let s = &p.schedule;
    if s.time.second() != 0 || s.time.nanosecond() != 0 {
        c.push(
            "schedule.time",
            s.time.format("%H:%M:%S%.f").to_string(),
            "whole minutes, \"HH:MM\"",
        );
    }
    match s.frequency {
        Frequency::Weekly if s.days.is_empty() => c.push(
            "schedule.days",
            "[]",
            "one or more weekdays with a weekly schedule, e.g. [\"Sunday\"]",
        ),
        Frequency::Daily if !s.days.is_empty() => c.push(
            "schedule.days",
            days_text(&s.days),
            "no days with a daily schedule (it runs every day); for chosen days use frequency = \"weekly\"",
        ),
        _ => {}
    }
    let dups = duplicates(&s.days);
    if !dups.is_empty() {
        c.push(
            "schedule.days",
            days_text(&s.days),
            format!("each weekday once ({} twice)", day_names(&dups)),
        );
    }

    let r = &p.retention;
    if let Some(d) = &r.daily {
        c.range("retention.daily.days", d.days, DAILY_DAYS, "days");
        if c.weekly_schedule() {
            c.push(
                "retention.daily",
                "a daily rule with a weekly schedule",
                "no daily rule with a weekly schedule; keep weekly backups with [retention.weekly]",
            );
        }
    }
    if let Some(w) = &r.weekly {
        c.range("retention.weekly.weeks", w.weeks, WEEKLY_WEEKS, "weeks");
        c.weekdays("retention.weekly.days_of_week", &w.days_of_week);
    }
    if let Some(m) = &r.monthly {
        c.range(
            "retention.monthly.months",
            m.months,
            MONTHLY_MONTHS,
            "months",
        );
        c.selector("retention.monthly", &m.on);
    }
    if let Some(y) = &r.yearly {
        c.range("retention.yearly.years", y.years, YEARLY_YEARS, "years");
        if y.months_of_year.is_empty() {
            c.push(
                "retention.yearly.months_of_year",
                "[]",
                "one or more months, e.g. [\"January\"]",
            );
        }
        if !duplicates(&y.months_of_year).is_empty() {
            let names: Vec<&str> = y.months_of_year.iter().map(|m| m.name()).collect();
            c.push(
                "retention.yearly.months_of_year",
                format!("{names:?}"),
                "each month once",
            );
        }
        c.selector("retention.yearly", &y.on);
    }

    // Coverage: every scheduled backup must be kept by some rule.
    match s.frequency {
        Frequency::Daily if r.daily.is_none() => c.push(
            "retention.daily",
            "no daily rule",
            "a daily rule with a daily schedule (e.g. days = 30): every backup needs a rule that keeps it",
        ),
        Frequency::Weekly if !s.days.is_empty() => match &r.weekly {
            None => c.push(
                "retention.weekly",
                "no weekly rule",
                format!(
                    "a weekly rule with a weekly schedule, with days_of_week = {}: every backup needs a rule that keeps it",
                    days_text(&s.days)
                ),
            ),
            Some(w) => {
                let uncovered: Vec<Weekday> =
                    s.days.iter().copied().filter(|d| !w.days_of_week.contains(d)).collect();
                if !uncovered.is_empty() {
                    c.push(
                        "retention.weekly.days_of_week",
                        days_text(&w.days_of_week),
                        format!(
                            "every scheduled day ({}); no rule would keep the backups of {}",
                            day_names(&s.days),
                            day_names(&uncovered)
                        ),
                    );
                }
            }
        },
        _ => {}
    }
    c.problems
}

#[cfg(test)]
mod tests {
    use super::super::model::{
        seed_policy, DailyRule, MonthlyRule, Retention, WeeklyRule, YearlyRule,
    };
    use super::*;
    use chrono::{Month, NaiveTime};

    fn weekly_policy() -> Policy {
        let mut p = seed_policy();
        p.schedule.frequency = Frequency::Weekly;
        p.schedule.days = vec![Weekday::Sun, Weekday::Wed];
        p.retention.daily = None;
        p.retention.weekly = Some(WeeklyRule {
            weeks: 12,
            days_of_week: vec![Weekday::Sun, Weekday::Wed],
        });
        p
    }

    /// The only problem of `p`, as (field, given, allowed).
    fn only(p: &Policy) -> (String, String, String) {
        let ps = problems(p);
        assert_eq!(ps.len(), 1, "{ps:#?}");
        let x = &ps[0];
        (x.field.clone(), x.given.clone(), x.allowed.clone())
    }

    #[test]
    fn seed_and_weekly_policies_are_valid() {
        assert!(problems(&seed_policy()).is_empty());
        assert!(problems(&weekly_policy()).is_empty());
    }

    #[test]
    fn ranges_name_field_given_and_range() {
        type Change = Box<dyn Fn(&mut Policy)>;
        let cases: Vec<(Change, &str, &str, &str)> = vec![
            (
                Box::new(|p| p.retention.daily = Some(DailyRule { days: 0 })),
                "retention.daily.days",
                "0",
                "1..=9999 days",
            ),
            (
                Box::new(|p| p.retention.daily = Some(DailyRule { days: 10000 })),
                "retention.daily.days",
                "10000",
                "1..=9999 days",
            ),
            (
                Box::new(|p| p.retention.weekly.as_mut().unwrap().weeks = 5164),
                "retention.weekly.weeks",
                "5164",
                "1..=5163 weeks",
            ),
            (
                Box::new(|p| p.retention.weekly.as_mut().unwrap().weeks = 0),
                "retention.weekly.weeks",
                "0",
                "1..=5163 weeks",
            ),
            (
                Box::new(|p| p.retention.monthly.as_mut().unwrap().months = 1189),
                "retention.monthly.months",
                "1189",
                "1..=1188 months",
            ),
            (
                Box::new(|p| p.retention.yearly.as_mut().unwrap().years = 100),
                "retention.yearly.years",
                "100",
                "1..=99 years",
            ),
            (
                Box::new(|p| p.retention.yearly.as_mut().unwrap().years = 0),
                "retention.yearly.years",
                "0",
                "1..=99 years",
            ),
        ];
        for (change, field, given, allowed) in cases {
            let mut p = seed_policy();
            change(&mut p);
            assert_eq!(only(&p), (field.into(), given.into(), allowed.into()));
        }
        // Bounds themselves are fine.
        let mut p = seed_policy();
        p.retention.daily = Some(DailyRule { days: 9999 });
        p.retention.weekly.as_mut().unwrap().weeks = 5163;
        p.retention.monthly.as_mut().unwrap().months = 1188;
        p.retention.yearly.as_mut().unwrap().years = 99;
        assert!(problems(&p).is_empty());
    }

    #[test]
    fn names_unfit_for_a_file_are_refused() {
        for bad in ["", "a/b", "..", "-x", "gold policy", "ä", &"x".repeat(101)] {
            let mut p = seed_policy();
            p.name = bad.to_string();
            let (field, given, allowed) = only(&p);
            assert_eq!(field, "name");
            assert_eq!(given, format!("{bad:?}"));
            assert!(allowed.contains("letters, digits"));
        }
        for good in ["DefaultPolicy", "testPolicy1", "gold-2.v_1", "9"] {
            let mut p = seed_policy();
            p.name = good.into();
            assert!(problems(&p).is_empty(), "{good}");
        }
    }

    #[test]
    fn weekly_schedule_needs_days_and_daily_takes_none() {
        let mut p = weekly_policy();
        p.schedule.days.clear();
        let ps = problems(&p);
        assert_eq!(ps[0].field, "schedule.days");
        assert_eq!(ps[0].given, "[]");
        assert!(ps[0].allowed.contains("one or more weekdays"));
        let mut p = seed_policy();
        p.schedule.days = vec![Weekday::Mon];
        assert_eq!(
            only(&p),
            (
                "schedule.days".into(),
                "[\"Monday\"]".into(),
                "no days with a daily schedule (it runs every day); for chosen days use frequency = \"weekly\"".into()
            )
        );
    }

    #[test]
    fn weekly_schedule_refuses_daily_rule() {
        let mut p = weekly_policy();
        p.retention.daily = Some(DailyRule { days: 30 });
        let (field, given, allowed) = only(&p);
        assert_eq!(field, "retention.daily");
        assert_eq!(given, "a daily rule with a weekly schedule");
        assert!(allowed.contains("[retention.weekly]"));
    }

    #[test]
    fn weekly_retention_days_must_be_scheduled_days() {
        let mut p = weekly_policy();
        p.retention.weekly.as_mut().unwrap().days_of_week =
            vec![Weekday::Sun, Weekday::Wed, Weekday::Mon];
        assert_eq!(
            only(&p),
            (
                "retention.weekly.days_of_week".into(),
                "[\"Sunday\", \"Wednesday\", \"Monday\"]".into(),
                "scheduled days only (Sunday and Wednesday); no backup runs on Monday".into()
            )
        );
    }

    #[test]
    fn monthly_and_yearly_weekdays_must_be_scheduled_days() {
        let mut p = weekly_policy();
        p.retention.monthly = Some(MonthlyRule {
            months: 12,
            on: DaySelector::Weekdays {
                weeks_of_month: vec![WeekOfMonth::First],
                days_of_week: vec![Weekday::Sat],
            },
        });
        p.retention.yearly = Some(YearlyRule {
            years: 2,
            months_of_year: vec![Month::March],
            on: DaySelector::Weekdays {
                weeks_of_month: vec![WeekOfMonth::Last],
                days_of_week: vec![Weekday::Fri],
            },
        });
        let ps = problems(&p);
        let got: Vec<(&str, &str)> = ps
            .iter()
            .map(|x| (x.field.as_str(), x.given.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("retention.monthly.days_of_week", "[\"Saturday\"]"),
                ("retention.yearly.days_of_week", "[\"Friday\"]"),
            ]
        );
        assert!(ps[0].allowed.contains("no backup runs on Saturday"));
    }

    #[test]
    fn days_of_month_only_with_daily_schedule() {
        let mut p = weekly_policy();
        p.retention.monthly = Some(MonthlyRule {
            months: 12,
            on: DaySelector::DaysOfMonth(vec![DayOfMonth::Day(1), DayOfMonth::Last]),
        });
        let (field, given, allowed) = only(&p);
        assert_eq!(field, "retention.monthly.days_of_month");
        assert_eq!(given, "[1, \"Last\"]");
        assert!(allowed.starts_with("days_of_month only with a daily schedule"));
        let mut p = seed_policy();
        p.retention.monthly.as_mut().unwrap().on =
            DaySelector::DaysOfMonth(vec![DayOfMonth::Day(29)]);
        assert_eq!(
            only(&p),
            (
                "retention.monthly.days_of_month".into(),
                "29".into(),
                DAY_OF_MONTH_ALLOWED.into()
            )
        );
    }

    #[test]
    fn yearly_needs_a_month() {
        let mut p = seed_policy();
        p.retention.yearly.as_mut().unwrap().months_of_year.clear();
        assert_eq!(
            only(&p),
            (
                "retention.yearly.months_of_year".into(),
                "[]".into(),
                "one or more months, e.g. [\"January\"]".into()
            )
        );
    }

    #[test]
    fn every_scheduled_backup_needs_a_rule() {
        let mut p = seed_policy();
        p.retention.daily = None;
        let (field, given, allowed) = only(&p);
        assert_eq!(
            (field.as_str(), given.as_str()),
            ("retention.daily", "no daily rule")
        );
        assert!(allowed.contains("every backup needs a rule"));

        let mut p = weekly_policy();
        p.retention.weekly = None;
        let (field, given, allowed) = only(&p);
        assert_eq!(
            (field.as_str(), given.as_str()),
            ("retention.weekly", "no weekly rule")
        );
        assert!(allowed.contains("[\"Sunday\", \"Wednesday\"]"), "{allowed}");

        let mut p = weekly_policy();
        p.retention.weekly.as_mut().unwrap().days_of_week = vec![Weekday::Sun];
        assert_eq!(
            only(&p),
            (
                "retention.weekly.days_of_week".into(),
                "[\"Sunday\"]".into(),
                "every scheduled day (Sunday and Wednesday); no rule would keep the backups of Wednesday".into()
            )
        );
    }

    #[test]
    fn empty_lists_and_duplicates() {
        let mut p = seed_policy();
        p.retention.weekly.as_mut().unwrap().days_of_week = vec![];
        p.retention.monthly.as_mut().unwrap().on = DaySelector::Weekdays {
            weeks_of_month: vec![],
            days_of_week: vec![Weekday::Sun, Weekday::Sun],
        };
        let ps = problems(&p);
        let got: Vec<(&str, &str)> = ps
            .iter()
            .map(|x| (x.field.as_str(), x.given.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("retention.weekly.days_of_week", "[]"),
                ("retention.monthly.weeks_of_month", "[]"),
                ("retention.monthly.days_of_week", "[\"Sunday\", \"Sunday\"]"),
            ]
        );
        assert_eq!(ps[2].allowed, "each weekday once (Sunday twice)");
    }

    #[test]
    fn seconds_in_time_are_refused() {
        let mut p = seed_policy();
        p.schedule.time = NaiveTime::from_hms_opt(22, 30, 5).unwrap();
        assert_eq!(only(&p).0, "schedule.time");
    }

    #[test]
    fn all_problems_are_collected_at_once() {
        let mut p = weekly_policy();
        p.name = String::new();
        p.retention = Retention {
            daily: Some(DailyRule { days: 0 }),
            weekly: None,
            monthly: None,
            yearly: Some(YearlyRule {
                years: 100,
                months_of_year: vec![],
                on: DaySelector::DaysOfMonth(vec![DayOfMonth::Last]),
            }),
        };
        let fields: Vec<String> = problems(&p).into_iter().map(|x| x.field).collect();
        assert_eq!(
            fields,
            vec![
                "name",
                "retention.daily.days",
                "retention.daily",
                "retention.yearly.years",
                "retention.yearly.months_of_year",
                "retention.yearly.days_of_month",
                "retention.weekly",
            ]
        );
    }
}
