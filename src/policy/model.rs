//! The policy value: a schedule and long-term retention rules, in a time zone.
//!
//! The serde shape (JSON in the catalog and `--json` output) is the TOML policy file's shape:
//! time zone as an IANA name, time as `"HH:MM"`, weekdays `"Sunday"`, weeks of the month
//! `"First"`..`"Last"`, months `"January"`, days of the month integers or `"Last"`.
//! Deserialising goes through the same reader as the TOML file ([`super::file`]), so both
//! accept and refuse exactly the same documents, with the same messages.

use chrono::{Month, NaiveTime, Weekday};
use chrono_tz::Tz;
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Name of the policy every vault has built in.
pub const DEFAULT_POLICY_NAME: &str = "DefaultPolicy";

/// A backup policy: when backups run and how long each recovery point is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub name: String,
    /// Time zone of the schedule's wall-clock time and of retention's calendar.
    #[serde(serialize_with = "ser_tz")]
    pub time_zone: Tz,
    pub schedule: Schedule,
    pub retention: Retention,
}

/// How often scheduled backups run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Frequency {
    /// Every day at [`Schedule::time`].
    Daily,
    /// On [`Schedule::days`] at [`Schedule::time`].
    Weekly,
}

/// When scheduled backups run: at most one per day, at a wall-clock time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Schedule {
    pub frequency: Frequency,
    /// Wall-clock time in the policy's time zone (whole minutes).
    #[serde(serialize_with = "ser_time")]
    pub time: NaiveTime,
    /// Weekly schedules only: the weekdays backups run on.
    #[serde(serialize_with = "ser_weekdays", skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<Weekday>,
}

/// Long-term retention: each rule optional, except as the schedule requires.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Retention {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daily: Option<DailyRule>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weekly: Option<WeeklyRule>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monthly: Option<MonthlyRule>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub yearly: Option<YearlyRule>,
}

/// Keeps every scheduled backup (daily schedules only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DailyRule {
    /// 1..=9999.
    pub days: u32,
}

/// Keeps the backups taken on the chosen weekdays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WeeklyRule {
    /// 1..=5163.
    pub weeks: u32,
    #[serde(serialize_with = "ser_weekdays")]
    pub days_of_week: Vec<Weekday>,
}

/// Keeps the backups taken on chosen days of every month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MonthlyRule {
    /// 1..=1188.
    pub months: u32,
    #[serde(flatten)]
    pub on: DaySelector,
}

/// Keeps the backups taken on chosen days of chosen months.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct YearlyRule {
    /// 1..=99.
    pub years: u32,
    #[serde(serialize_with = "ser_months")]
    pub months_of_year: Vec<Month>,
    #[serde(flatten)]
    pub on: DaySelector,
}

/// Which days of a month a monthly or yearly rule selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaySelector {
    /// The n-th (or last) occurrence of the weekdays in the month, e.g. last Sunday.
    Weekdays {
        weeks_of_month: Vec<WeekOfMonth>,
        days_of_week: Vec<Weekday>,
    },
    /// Days by number (1..=28) or the last day of the month (daily schedules only).
    DaysOfMonth(Vec<DayOfMonth>),
}

/// Occurrence of a weekday within a month. `Fourth` is the 4th occurrence; `Last` is the
/// last one (the 5th when the month has five, else the 4th). There is no "Fifth".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum WeekOfMonth {
    First,
    Second,
    Third,
    Fourth,
    Last,
}

/// A day of the month a rule selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DayOfMonth {
    /// 1..=28 (every month has them).
    Day(u8),
    /// The month's last day (28, 29, 30 or 31).
    Last,
}

/// One of the four retention rules (also the key of its TOML table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl RuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Daily => "daily",
            RuleKind::Weekly => "weekly",
            RuleKind::Monthly => "monthly",
            RuleKind::Yearly => "yearly",
        }
    }
}

impl fmt::Display for RuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Frequency {
    pub fn as_str(self) -> &'static str {
        match self {
            Frequency::Daily => "daily",
            Frequency::Weekly => "weekly",
        }
    }
    /// Case-insensitive (`daily`, `Daily`).
    pub fn parse(s: &str) -> Option<Frequency> {
        match s.trim().to_ascii_lowercase().as_str() {
            "daily" => Some(Frequency::Daily),
            "weekly" => Some(Frequency::Weekly),
            _ => None,
        }
    }
}

impl WeekOfMonth {
    pub const ALL: [WeekOfMonth; 5] = [
        WeekOfMonth::First,
        WeekOfMonth::Second,
        WeekOfMonth::Third,
        WeekOfMonth::Fourth,
        WeekOfMonth::Last,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            WeekOfMonth::First => "First",
            WeekOfMonth::Second => "Second",
            WeekOfMonth::Third => "Third",
            WeekOfMonth::Fourth => "Fourth",
            WeekOfMonth::Last => "Last",
        }
    }
    /// Case-insensitive name.
    pub fn parse(s: &str) -> Option<WeekOfMonth> {
        WeekOfMonth::ALL
            .into_iter()
            .find(|w| w.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

impl fmt::Display for DayOfMonth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DayOfMonth::Day(d) => write!(f, "{d}"),
            DayOfMonth::Last => f.write_str("\"Last\""),
        }
    }
}

impl Serialize for DayOfMonth {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DayOfMonth::Day(d) => s.serialize_u8(*d),
            DayOfMonth::Last => s.serialize_str("Last"),
        }
    }
}

// A map, not a struct, so that `#[serde(flatten)]` puts these keys beside `months`/`years`.
impl Serialize for DaySelector {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DaySelector::Weekdays {
                weeks_of_month,
                days_of_week,
            } => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("weeks_of_month", weeks_of_month)?;
                let days: Vec<&str> = days_of_week.iter().map(|d| weekday_name(*d)).collect();
                m.serialize_entry("days_of_week", &days)?;
                m.end()
            }
            DaySelector::DaysOfMonth(days) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("days_of_month", days)?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Policy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        super::file::policy_from_json_value(&value, "policy").map_err(serde::de::Error::custom)
    }
}

fn ser_tz<S: Serializer>(tz: &Tz, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(tz.name())
}

fn ser_time<S: Serializer>(t: &NaiveTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.format("%H:%M").to_string())
}

fn ser_weekdays<S: Serializer>(days: &[Weekday], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(days.iter().map(|d| weekday_name(*d)))
}

fn ser_months<S: Serializer>(months: &[Month], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(months.iter().map(|m| m.name()))
}

/// All weekdays, Sunday first (Azure's and the portal's order).
pub const WEEKDAYS: [Weekday; 7] = [
    Weekday::Sun,
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
];

/// All months, January first.
pub const MONTHS: [Month; 12] = [
    Month::January,
    Month::February,
    Month::March,
    Month::April,
    Month::May,
    Month::June,
    Month::July,
    Month::August,
    Month::September,
    Month::October,
    Month::November,
    Month::December,
];

/// `"Sunday"` for [`Weekday::Sun`] (the file's and Azure's spelling).
pub fn weekday_name(d: Weekday) -> &'static str {
    match d {
        Weekday::Mon => "Monday",
        Weekday::Tue => "Tuesday",
        Weekday::Wed => "Wednesday",
        Weekday::Thu => "Thursday",
        Weekday::Fri => "Friday",
        Weekday::Sat => "Saturday",
        Weekday::Sun => "Sunday",
    }
}

/// Full English weekday name, case-insensitive.
pub fn parse_weekday(s: &str) -> Option<Weekday> {
    WEEKDAYS
        .into_iter()
        .find(|d| weekday_name(*d).eq_ignore_ascii_case(s.trim()))
}

/// Full English month name, case-insensitive.
pub fn parse_month(s: &str) -> Option<Month> {
    MONTHS
        .into_iter()
        .find(|m| m.name().eq_ignore_ascii_case(s.trim()))
}

/// "Sunday, Monday, …" for "allowed" messages.
pub fn weekday_names() -> String {
    WEEKDAYS.map(weekday_name).join(", ")
}

/// "a", "a and b", "a, b and c".
pub fn join_words<S: AsRef<str>>(items: &[S]) -> String {
    match items {
        [] => String::new(),
        [one] => one.as_ref().to_string(),
        [init @ .., last] => {
            let head: Vec<&str> = init.iter().map(|s| s.as_ref()).collect();
            format!("{} and {}", head.join(", "), last.as_ref())
        }
    }
}

fn plural(n: u32, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

impl Policy {
    /// The built-in DefaultPolicy: one backup a day at 19:00 UTC, each kept 30 days (the
    /// schedule of the DefaultPolicy in Azure Backup's `BackupPolicies_List` example).
    pub fn default_policy() -> Policy {
        Policy {
            name: DEFAULT_POLICY_NAME.to_string(),
            time_zone: Tz::UTC,
            schedule: Schedule {
                frequency: Frequency::Daily,
                time: NaiveTime::from_hms_opt(19, 0, 0).unwrap_or(NaiveTime::MIN),
                days: Vec::new(),
            },
            retention: Retention {
                daily: Some(DailyRule { days: 30 }),
                ..Retention::default()
            },
        }
    }

    /// Parses and validates a policy file; `origin` (the file name) prefixes every message.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        super::file::from_toml_str(text, origin)
    }

    /// The policy as a TOML policy file; [`Policy::from_toml_str`] reads it back unchanged.
    pub fn to_toml_string(&self) -> String {
        super::file::to_toml_string(self)
    }

    /// Checks every rule of [`super::validate`]; all problems are reported together.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let problems = super::validate::problems(self);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(PolicyError {
                origin: format!("policy {}", self.name),
                problems,
            })
        }
    }

    /// The schedule and every retention rule in words, one line each, e.g.
    /// `Daily at 22:30 (Europe/Berlin)`, `Last Sunday of every month: kept 120 months`.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let s = &self.schedule;
        let time = s.time.format("%H:%M");
        let tz = self.time_zone.name();
        lines.push(match s.frequency {
            Frequency::Daily => format!("Daily at {time} ({tz})"),
            Frequency::Weekly => format!(
                "Weekly on {} at {time} ({tz})",
                join_words(&weekday_list(&s.days))
            ),
        });
        let r = &self.retention;
        if let Some(d) = &r.daily {
            lines.push(format!("Every backup: kept {}", plural(d.days, "day")));
        }
        if let Some(w) = &r.weekly {
            lines.push(format!(
                "Every {}: kept {}",
                join_words(&weekday_list(&w.days_of_week)),
                plural(w.weeks, "week")
            ));
        }
        if let Some(m) = &r.monthly {
            lines.push(format!(
                "{} of every month: kept {}",
                describe_days(&m.on),
                plural(m.months, "month")
            ));
        }
        if let Some(y) = &r.yearly {
            let months: Vec<&str> = y.months_of_year.iter().map(|m| m.name()).collect();
            lines.push(format!(
                "{} of {}: kept {}",
                describe_days(&y.on),
                join_words(&months),
                plural(y.years, "year")
            ));
        }
        lines
    }
}

fn weekday_list(days: &[Weekday]) -> Vec<&'static str> {
    days.iter().map(|d| weekday_name(*d)).collect()
}

/// "Last Sunday", "First and Third Wednesday and Thursday", "Day 1, day 15 and the last day".
fn describe_days(on: &DaySelector) -> String {
    match on {
        DaySelector::Weekdays {
            weeks_of_month,
            days_of_week,
        } => {
            let weeks: Vec<&str> = weeks_of_month.iter().map(|w| w.as_str()).collect();
            format!(
                "{} {}",
                join_words(&weeks),
                join_words(&weekday_list(days_of_week))
            )
        }
        DaySelector::DaysOfMonth(days) => {
            let words: Vec<String> = days
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let w = match d {
                        DayOfMonth::Day(n) => format!("day {n}"),
                        DayOfMonth::Last => "the last day".to_string(),
                    };
                    if i == 0 {
                        capitalise(&w)
                    } else {
                        w
                    }
                })
                .collect();
            join_words(&words)
        }
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// One thing wrong with a policy: which field, what was given, what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Dotted path in the policy file, e.g. `retention.daily.days` (Azure imports: the JSON
    /// path, e.g. `properties.timeZone`).
    pub field: String,
    /// The value given, as written (`0`, `"Pacific Standard Time"`, `nothing`).
    pub given: String,
    /// What is allowed instead, in words.
    pub allowed: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
}

impl Problem {
    pub fn new(
        field: impl Into<String>,
        given: impl Into<String>,
        allowed: impl Into<String>,
    ) -> Self {
        // What the user gave is repeated capped (a 100,000-character name or a huge JSON
        // value must not make a huge message) and with control characters escaped.
        Problem {
            field: crate::fmt::echo(&field.into()),
            given: crate::fmt::echo(&given.into()),
            allowed: allowed.into(),
            line: None,
        }
    }
    pub fn at(mut self, line: Option<usize>) -> Self {
        self.line = line;
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        write!(
            f,
            "{}: given {}; allowed: {}",
            self.field, self.given, self.allowed
        )
    }
}

/// Problems a [`PolicyError`] lists one by one; the rest are counted.
pub const MAX_PROBLEMS_SHOWN: usize = 20;

/// A policy that cannot be used, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyError {
    /// Where the policy came from (file name, `policy NAME`, Azure JSON file).
    pub origin: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{}: {} {}",
            self.origin,
            n,
            if n == 1 { "problem" } else { "problems" }
        )?;
        for p in self.problems.iter().take(MAX_PROBLEMS_SHOWN) {
            write!(f, "\n  - {p}")?;
        }
        if n > MAX_PROBLEMS_SHOWN {
            write!(
                f,
                "\n  … and {} more (fix these first)",
                n - MAX_PROBLEMS_SHOWN
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyError {}

/// The seed's example policy (DOMAIN.md) in Europe/Berlin at 22:30, for tests.
#[cfg(test)]
pub(crate) fn seed_policy() -> Policy {
    Policy {
        name: "Gold".into(),
        time_zone: "Europe/Berlin".parse().unwrap(),
        schedule: Schedule {
            frequency: Frequency::Daily,
            time: NaiveTime::from_hms_opt(22, 30, 0).unwrap(),
            days: vec![],
        },
        retention: Retention {
            daily: Some(DailyRule { days: 30 }),
            weekly: Some(WeeklyRule {
                weeks: 104,
                days_of_week: vec![Weekday::Sun],
            }),
            monthly: Some(MonthlyRule {
                months: 120,
                on: DaySelector::Weekdays {
                    weeks_of_month: vec![WeekOfMonth::Last],
                    days_of_week: vec![Weekday::Sun],
                },
            }),
            yearly: Some(YearlyRule {
                years: 99,
                months_of_year: vec![Month::January],
                on: DaySelector::Weekdays {
                    weeks_of_month: vec![WeekOfMonth::First],
                    days_of_week: vec![Weekday::Sun],
                },
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_seed_policy_in_words() {
        assert_eq!(
            seed_policy().describe(),
            vec![
                "Daily at 22:30 (Europe/Berlin)",
                "Every backup: kept 30 days",
                "Every Sunday: kept 104 weeks",
                "Last Sunday of every month: kept 120 months",
                "First Sunday of January: kept 99 years",
            ]
        );
    }

    #[test]
    fn describe_weekly_and_days_of_month() {
        let mut p = seed_policy();
        p.schedule.frequency = Frequency::Weekly;
        p.schedule.days = vec![Weekday::Sun, Weekday::Wed];
        p.retention.daily = None;
        p.retention.weekly = Some(WeeklyRule {
            weeks: 1,
            days_of_week: vec![Weekday::Sun, Weekday::Wed],
        });
        p.retention.monthly = Some(MonthlyRule {
            months: 1,
            on: DaySelector::DaysOfMonth(vec![
                DayOfMonth::Day(1),
                DayOfMonth::Day(15),
                DayOfMonth::Last,
            ]),
        });
        p.retention.yearly = Some(YearlyRule {
            years: 4,
            months_of_year: vec![Month::February, Month::November],
            on: DaySelector::Weekdays {
                weeks_of_month: vec![WeekOfMonth::First, WeekOfMonth::Third],
                days_of_week: vec![Weekday::Mon, Weekday::Thu],
            },
        });
        assert_eq!(
            p.describe(),
            vec![
                "Weekly on Sunday and Wednesday at 22:30 (Europe/Berlin)",
                "Every Sunday and Wednesday: kept 1 week",
                "Day 1, day 15 and the last day of every month: kept 1 month",
                "First and Third Monday and Thursday of February and November: kept 4 years",
            ]
        );
    }

    #[test]
    fn default_policy_is_daily_30_days_and_valid() {
        let p = Policy::default_policy();
        assert_eq!(p.name, "DefaultPolicy");
        assert_eq!(p.time_zone, Tz::UTC);
        assert_eq!(p.schedule.frequency, Frequency::Daily);
        assert_eq!(p.retention.daily, Some(DailyRule { days: 30 }));
        assert!(p.retention.weekly.is_none() && p.retention.monthly.is_none());
        p.validate().unwrap();
        assert_eq!(
            p.describe(),
            vec!["Daily at 19:00 (UTC)", "Every backup: kept 30 days"]
        );
    }

    #[test]
    fn json_shape_is_the_file_shape() {
        let v = serde_json::to_value(seed_policy()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "name": "Gold",
                "time_zone": "Europe/Berlin",
                "schedule": {"frequency": "daily", "time": "22:30"},
                "retention": {
                    "daily": {"days": 30},
                    "weekly": {"weeks": 104, "days_of_week": ["Sunday"]},
                    "monthly": {"months": 120, "weeks_of_month": ["Last"], "days_of_week": ["Sunday"]},
                    "yearly": {"years": 99, "months_of_year": ["January"],
                               "weeks_of_month": ["First"], "days_of_week": ["Sunday"]}
                }
            })
        );
        let back: Policy = serde_json::from_value(v).unwrap();
        assert_eq!(back, seed_policy());
    }

    #[test]
    fn json_days_of_month_are_ints_or_last() {
        let mut p = seed_policy();
        p.retention.monthly = Some(MonthlyRule {
            months: 12,
            on: DaySelector::DaysOfMonth(vec![DayOfMonth::Day(1), DayOfMonth::Last]),
        });
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(
            v["retention"]["monthly"],
            serde_json::json!({"months": 12, "days_of_month": [1, "Last"]})
        );
        assert_eq!(serde_json::from_value::<Policy>(v).unwrap(), p);
    }

    #[test]
    fn json_deserialise_refuses_invalid_policy_with_reason() {
        let err = serde_json::from_value::<Policy>(serde_json::json!({
            "name": "X", "schedule": {"frequency": "daily", "time": "22:30"},
            "retention": {"daily": {"days": 0}}
        }))
        .unwrap_err()
        .to_string();
        assert!(err.contains("retention.daily.days"), "{err}");
        assert!(err.contains("1..=9999"), "{err}");
    }

    #[test]
    fn policy_error_display_lists_every_problem() {
        let e = PolicyError {
            origin: "gold.toml".into(),
            problems: vec![
                Problem::new("retention.daily.days", "0", "1..=9999 days").at(Some(7)),
                Problem::new("name", "\"\"", "a name"),
            ],
        };
        assert_eq!(
            e.to_string(),
            "gold.toml: 2 problems\n  - line 7: retention.daily.days: given 0; allowed: 1..=9999 days\n  - name: given \"\"; allowed: a name"
        );
    }
}
