//! The TOML policy file: reading with precise problems, and writing.
//!
//! ```toml
//! name = "Gold"
//! time_zone = "Europe/Berlin"          # IANA name; default "UTC"
//! [schedule]
//! frequency = "daily"                  # "daily" | "weekly"
//! time = "22:30"                       # wall-clock time in time_zone
//! days = ["Sunday", "Wednesday"]       # weekly only
//! [retention.daily]
//! days = 30                            # 1..=9999
//! [retention.weekly]
//! weeks = 104                          # 1..=5163
//! days_of_week = ["Sunday"]
//! [retention.monthly]
//! months = 120                         # 1..=1188
//! weeks_of_month = ["Last"]            # First|Second|Third|Fourth|Last, with days_of_week
//! days_of_week = ["Sunday"]
//! # days_of_month = [1, 15, "Last"]    # instead: 1..=28 or "Last" (daily schedules)
//! [retention.yearly]
//! years = 99                           # 1..=99
//! months_of_year = ["January"]
//! weeks_of_month = ["First"]
//! days_of_week = ["Sunday"]
//! ```
//!
//! Reading goes through a small value tree (`Node`) built either from TOML (with line
//! numbers from toml's spans) or from JSON (no lines). One hand-written reader turns that
//! tree into a [`Policy`], so the file, the catalog's JSON and `--json` share one shape and
//! one set of messages. The reader collects every problem — unknown keys, wrong types,
//! missing keys — instead of stopping at the first, as serde's derive would; after a clean
//! read, [`super::validate`] adds the semantic problems, each given the line of its field.

use super::model::{
    parse_month, parse_weekday, weekday_name, weekday_names, DailyRule, DayOfMonth, DaySelector,
    Frequency, MonthlyRule, Policy, PolicyError, Problem, Retention, Schedule, WeekOfMonth,
    WeeklyRule, YearlyRule,
};
use super::validate;
use super::windows_tz::windows_to_iana;
use chrono::{Month, NaiveTime, Timelike, Weekday};
use chrono_tz::Tz;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::ops::RangeInclusive;

/// Parses and validates a TOML policy file. `origin` names the file in messages.
pub fn from_toml_str(text: &str, origin: &str) -> Result<Policy, PolicyError> {
    let (doc, errors) = toml::de::DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        let problems = errors
            .iter()
            .map(|e| {
                Problem::new(
                    "toml",
                    e.message().trim().to_string(),
                    "valid TOML syntax (https://toml.io)",
                )
                .at(e.span().map(|s| line_of(text, s.start)))
            })
            .collect();
        return Err(PolicyError {
            origin: origin.to_string(),
            problems,
        });
    }
    let root = Node {
        line: Some(line_of(text, doc.span().start)),
        val: Val::Table(toml_table(text, doc.get_ref())),
    };
    read_policy(&root, origin)
}

/// Reads and validates a policy from its JSON form (the catalog's, `--json`'s).
pub fn policy_from_json_value(
    value: &serde_json::Value,
    origin: &str,
) -> Result<Policy, PolicyError> {
    read_policy(&json_node(value), origin)
}

/// Writes the policy file; [`from_toml_str`] reads it back equal (for valid policies).
pub fn to_toml_string(p: &Policy) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "name = {}", quote(&p.name));
    let _ = writeln!(out, "time_zone = {}", quote(p.time_zone.name()));
    let s = &p.schedule;
    let _ = writeln!(out, "\n[schedule]");
    let _ = writeln!(out, "frequency = {}", quote(s.frequency.as_str()));
    let _ = writeln!(out, "time = {}", quote(&s.time.format("%H:%M").to_string()));
    if !s.days.is_empty() {
        let _ = writeln!(out, "days = {}", weekday_array(&s.days));
    }
    let r = &p.retention;
    if let Some(d) = &r.daily {
        let _ = writeln!(out, "\n[retention.daily]\ndays = {}", d.days);
    }
    if let Some(w) = &r.weekly {
        let _ = writeln!(out, "\n[retention.weekly]\nweeks = {}", w.weeks);
        let _ = writeln!(out, "days_of_week = {}", weekday_array(&w.days_of_week));
    }
    if let Some(m) = &r.monthly {
        let _ = writeln!(out, "\n[retention.monthly]\nmonths = {}", m.months);
        write_selector(&mut out, &m.on);
    }
    if let Some(y) = &r.yearly {
        let _ = writeln!(out, "\n[retention.yearly]\nyears = {}", y.years);
        let months: Vec<String> = y.months_of_year.iter().map(|m| quote(m.name())).collect();
        let _ = writeln!(out, "months_of_year = [{}]", months.join(", "));
        write_selector(&mut out, &y.on);
    }
    out
}

fn write_selector(out: &mut String, on: &DaySelector) {
    match on {
        DaySelector::Weekdays {
            weeks_of_month,
            days_of_week,
        } => {
            let weeks: Vec<String> = weeks_of_month.iter().map(|w| quote(w.as_str())).collect();
            let _ = writeln!(out, "weeks_of_month = [{}]", weeks.join(", "));
            let _ = writeln!(out, "days_of_week = {}", weekday_array(days_of_week));
        }
        DaySelector::DaysOfMonth(days) => {
            let days: Vec<String> = days.iter().map(|d| d.to_string()).collect();
            let _ = writeln!(out, "days_of_month = [{}]", days.join(", "));
        }
    }
}

fn weekday_array(days: &[Weekday]) -> String {
    let v: Vec<String> = days.iter().map(|d| quote(weekday_name(*d))).collect();
    format!("[{}]", v.join(", "))
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(q, "\\u{:04X}", c as u32);
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// A value of the policy document, with the line it is on when known.
#[derive(Debug, Clone)]
pub(super) struct Node {
    line: Option<usize>,
    val: Val,
}

#[derive(Debug, Clone)]
enum Val {
    Str(String),
    /// The integer, or None when it does not fit an i64; and its text.
    Int(Option<i64>, String),
    Float(String),
    Bool(bool),
    /// A TOML date/time literal, as written.
    Datetime(String),
    Array(Vec<Node>),
    Table(Vec<Entry>),
    Null,
}

#[derive(Debug, Clone)]
struct Entry {
    key: String,
    line: Option<usize>,
    node: Node,
}

fn toml_table(text: &str, t: &toml::de::DeTable<'_>) -> Vec<Entry> {
    t.iter()
        .map(|(k, v)| Entry {
            key: k.get_ref().to_string(),
            line: Some(line_of(text, k.span().start)),
            node: toml_node(text, v.get_ref(), v.span().start),
        })
        .collect()
}

fn toml_node(text: &str, v: &toml::de::DeValue<'_>, start: usize) -> Node {
    use toml::de::DeValue;
    let val = match v {
        DeValue::String(s) => Val::Str(s.to_string()),
        DeValue::Integer(i) => {
            let digits = i.as_str();
            Val::Int(i64::from_str_radix(digits, i.radix()).ok(), i.to_string())
        }
        DeValue::Float(f) => Val::Float(f.as_str().to_string()),
        DeValue::Boolean(b) => Val::Bool(*b),
        DeValue::Datetime(d) => Val::Datetime(d.to_string()),
        DeValue::Array(a) => Val::Array(
            a.iter()
                .map(|item| toml_node(text, item.get_ref(), item.span().start))
                .collect(),
        ),
        DeValue::Table(t) => Val::Table(toml_table(text, t)),
    };
    Node {
        line: Some(line_of(text, start)),
        val,
    }
}

fn json_node(v: &serde_json::Value) -> Node {
    use serde_json::Value as J;
    let val = match v {
        J::Null => Val::Null,
        J::Bool(b) => Val::Bool(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Val::Int(Some(i), i.to_string()),
            None if n.is_u64() => Val::Int(None, n.to_string()),
            None => Val::Float(n.to_string()),
        },
        J::String(s) => Val::Str(s.clone()),
        J::Array(a) => Val::Array(a.iter().map(json_node).collect()),
        J::Object(o) => Val::Table(
            o.iter()
                .map(|(k, v)| Entry {
                    key: k.clone(),
                    line: None,
                    node: json_node(v),
                })
                .collect(),
        ),
    };
    Node { line: None, val }
}

/// The value as the user wrote it, for "given" in messages.
fn render(n: &Node) -> String {
    match &n.val {
        Val::Str(s) => format!("{s:?}"),
        Val::Int(_, text) => text.clone(),
        Val::Float(text) => text.clone(),
        Val::Bool(b) => b.to_string(),
        Val::Datetime(d) => d.clone(),
        Val::Array(items) => {
            let v: Vec<String> = items.iter().map(render).collect();
            format!("[{}]", v.join(", "))
        }
        Val::Table(_) => "a table".to_string(),
        Val::Null => "null".to_string(),
    }
}

/// Reads a policy document and validates it; all problems at once.
fn read_policy(root: &Node, origin: &str) -> Result<Policy, PolicyError> {
    let mut r = Reader::default();
    let policy = r.policy(root);
    let mut problems = r.problems;
    if let (Some(p), true) = (&policy, problems.is_empty()) {
        for mut problem in validate::problems(p) {
            problem.line = line_for(&r.lines, &problem.field);
            problems.push(problem);
        }
    }
    problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    match policy {
        Some(p) if problems.is_empty() => Ok(p),
        _ => Err(PolicyError {
            origin: origin.to_string(),
            problems,
        }),
    }
}

/// Line of `field`, or of its nearest enclosing key.
fn line_for(lines: &HashMap<String, usize>, field: &str) -> Option<usize> {
    let mut f = field;
    loop {
        if let Some(l) = lines.get(f) {
            return Some(*l);
        }
        f = &f[..f.rfind('.')?];
    }
}

#[derive(Default)]
struct Reader {
    problems: Vec<Problem>,
    /// Line of every key read, by dotted path, for validation problems.
    lines: HashMap<String, usize>,
}

/// The entries of one table, after unknown keys were reported.
struct Fields<'n> {
    path: String,
    line: Option<usize>,
    entries: Vec<&'n Entry>,
}

impl<'n> Fields<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries.iter().find(|e| e.key == key).map(|e| &e.node)
    }
    fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
    fn path(&self, key: &str) -> String {
        join_path(&self.path, key)
    }
}

fn join_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Reader {
    fn problem(
        &mut self,
        field: String,
        given: String,
        allowed: impl Into<String>,
        line: Option<usize>,
    ) {
        self.problems
            .push(Problem::new(field, given, allowed).at(line));
    }

    /// The table at `path` with only `known` keys (others are reported, naming the key).
    fn table<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        known: &[&str],
        what: &str,
    ) -> Option<Fields<'n>> {
        let Val::Table(entries) = &node.val else {
            self.problem(path.to_string(), render(node), what.to_string(), node.line);
            return None;
        };
        let mut kept = Vec::new();
        for e in entries {
            let full = join_path(path, &e.key);
            if let Some(l) = e.line {
                self.lines.insert(full.clone(), l);
            }
            if known.contains(&e.key.as_str()) {
                kept.push(e);
            } else {
                self.problem(
                    full,
                    format!("unknown key {:?}", e.key),
                    format!(
                        "the keys of {}: {}",
                        if path.is_empty() { "a policy" } else { path },
                        known.join(", ")
                    ),
                    e.line,
                );
            }
        }
        Some(Fields {
            path: path.to_string(),
            line: node.line,
            entries: kept,
        })
    }

    fn missing(&mut self, f: &Fields<'_>, key: &str, allowed: impl Into<String>) {
        self.problem(f.path(key), "nothing".to_string(), allowed, f.line);
    }

    fn string(
        &mut self,
        f: &Fields<'_>,
        key: &str,
        allowed: &str,
        required: bool,
    ) -> Option<(String, Option<usize>)> {
        match f.get(key) {
            None => {
                if required {
                    self.missing(f, key, allowed);
                }
                None
            }
            Some(Node {
                val: Val::Str(s),
                line,
            }) => Some((s.clone(), *line)),
            Some(n) => {
                self.problem(f.path(key), render(n), allowed, n.line);
                None
            }
        }
    }

    /// A count in `range` (range problems for counts that fit u32 are validation's job,
    /// so that constructed policies get the same message).
    fn count(
        &mut self,
        f: &Fields<'_>,
        key: &str,
        range: RangeInclusive<u32>,
        unit: &str,
    ) -> Option<u32> {
        let allowed = validate::range_allowed(&range, unit);
        match f.get(key) {
            None => {
                self.missing(f, key, allowed);
                None
            }
            Some(n) => match &n.val {
                Val::Int(Some(i), _) if u32::try_from(*i).is_ok() => u32::try_from(*i).ok(),
                _ => {
                    self.problem(f.path(key), render(n), allowed, n.line);
                    None
                }
            },
        }
    }

    /// A list whose items `item` parses; `None` when absent (and not required).
    fn list<T>(
        &mut self,
        f: &Fields<'_>,
        key: &str,
        allowed: &str,
        required: bool,
        item: impl Fn(&Node) -> Option<T>,
    ) -> Option<Vec<T>> {
        let path = f.path(key);
        let Some(n) = f.get(key) else {
            if required {
                self.missing(f, key, allowed);
            }
            return None;
        };
        let Val::Array(items) = &n.val else {
            self.problem(path, render(n), format!("a list of {allowed}"), n.line);
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for it in items {
            match item(it) {
                Some(v) => out.push(v),
                None => {
                    ok = false;
                    self.problem(path.clone(), render(it), allowed, it.line);
                }
            }
        }
        ok.then_some(out)
    }

    fn weekdays(&mut self, f: &Fields<'_>, key: &str, required: bool) -> Option<Vec<Weekday>> {
        let allowed = format!("weekday names: {}", weekday_names());
        self.list(f, key, &allowed, required, |n| match &n.val {
            Val::Str(s) => parse_weekday(s),
            _ => None,
        })
    }

    fn policy(&mut self, root: &Node) -> Option<Policy> {
        let f = self.table(
            root,
            "",
            &["name", "time_zone", "schedule", "retention"],
            "a policy table (name, time_zone, [schedule], [retention.*])",
        )?;
        let name = self.string(&f, "name", "a policy name, e.g. \"Gold\"", true);
        let time_zone = match self.string(
            &f,
            "time_zone",
            "an IANA time zone name, e.g. \"Europe/Berlin\"",
            false,
        ) {
            None if f.has("time_zone") => None,
            None => Some(Tz::UTC),
            Some((s, line)) => match parse_time_zone(&s) {
                Ok(tz) => Some(tz),
                Err(allowed) => {
                    self.problem("time_zone".into(), format!("{s:?}"), allowed, line);
                    None
                }
            },
        };
        let schedule = match f.get("schedule") {
            Some(n) => self.schedule(n),
            None => {
                self.missing(&f, "schedule", "a [schedule] table with frequency and time");
                None
            }
        };
        let retention = match f.get("retention") {
            Some(n) => self.retention(n),
            None => Some(Retention::default()),
        };
        Some(Policy {
            name: name?.0,
            time_zone: time_zone?,
            schedule: schedule?,
            retention: retention?,
        })
    }

    fn schedule(&mut self, n: &Node) -> Option<Schedule> {
        let f = self.table(
            n,
            "schedule",
            &["frequency", "time", "days"],
            "a table with frequency, time and (weekly) days",
        )?;
        let freq_allowed = "\"daily\" or \"weekly\"";
        let frequency = match self.string(&f, "frequency", freq_allowed, true) {
            Some((s, line)) => {
                let fr = Frequency::parse(&s);
                if fr.is_none() {
                    self.problem(f.path("frequency"), format!("{s:?}"), freq_allowed, line);
                }
                fr
            }
            None => None,
        };
        let time_allowed = "a wall-clock time \"HH:MM\" (00:00 to 23:59), e.g. \"22:30\"";
        let time = match f.get("time") {
            None => {
                self.missing(&f, "time", time_allowed);
                None
            }
            Some(t) => {
                let parsed = match &t.val {
                    Val::Str(s) | Val::Datetime(s) => parse_time(s),
                    _ => None,
                };
                if parsed.is_none() {
                    self.problem(f.path("time"), render(t), time_allowed, t.line);
                }
                parsed
            }
        };
        let days = if f.has("days") {
            self.weekdays(&f, "days", false)
        } else {
            Some(Vec::new())
        };
        Some(Schedule {
            frequency: frequency?,
            time: time?,
            days: days?,
        })
    }

    fn retention(&mut self, n: &Node) -> Option<Retention> {
        let f = self.table(
            n,
            "retention",
            &["daily", "weekly", "monthly", "yearly"],
            "a table of rules: [retention.daily], [retention.weekly], [retention.monthly], [retention.yearly]",
        )?;
        let mut ok = true;
        let mut r = Retention::default();
        if let Some(n) = f.get("daily") {
            r.daily = self.daily(n);
            ok &= r.daily.is_some();
        }
        if let Some(n) = f.get("weekly") {
            r.weekly = self.weekly(n);
            ok &= r.weekly.is_some();
        }
        if let Some(n) = f.get("monthly") {
            r.monthly = self.monthly(n);
            ok &= r.monthly.is_some();
        }
        if let Some(n) = f.get("yearly") {
            r.yearly = self.yearly(n);
            ok &= r.yearly.is_some();
        }
        ok.then_some(r)
    }

    fn daily(&mut self, n: &Node) -> Option<DailyRule> {
        let f = self.table(n, "retention.daily", &["days"], "a table with days")?;
        let days = self.count(&f, "days", validate::DAILY_DAYS, "days")?;
        Some(DailyRule { days })
    }

    fn weekly(&mut self, n: &Node) -> Option<WeeklyRule> {
        let f = self.table(
            n,
            "retention.weekly",
            &["weeks", "days_of_week"],
            "a table with weeks and days_of_week",
        )?;
        let weeks = self.count(&f, "weeks", validate::WEEKLY_WEEKS, "weeks");
        let days_of_week = self.weekdays(&f, "days_of_week", true);
        Some(WeeklyRule {
            weeks: weeks?,
            days_of_week: days_of_week?,
        })
    }

    fn monthly(&mut self, n: &Node) -> Option<MonthlyRule> {
        let f = self.table(
            n,
            "retention.monthly",
            &["months", "weeks_of_month", "days_of_week", "days_of_month"],
            "a table with months and either weeks_of_month + days_of_week or days_of_month",
        )?;
        let months = self.count(&f, "months", validate::MONTHLY_MONTHS, "months");
        let on = self.selector(&f);
        Some(MonthlyRule {
            months: months?,
            on: on?,
        })
    }

    fn yearly(&mut self, n: &Node) -> Option<YearlyRule> {
        let f = self.table(
            n,
            "retention.yearly",
            &["years", "months_of_year", "weeks_of_month", "days_of_week", "days_of_month"],
            "a table with years, months_of_year and either weeks_of_month + days_of_week or days_of_month",
        )?;
        let years = self.count(&f, "years", validate::YEARLY_YEARS, "years");
        let months_allowed = format!(
            "month names: {}",
            super::model::MONTHS.map(|m: Month| m.name()).join(", ")
        );
        let months = self.list(&f, "months_of_year", &months_allowed, true, |n| {
            match &n.val {
                Val::Str(s) => parse_month(s),
                _ => None,
            }
        });
        let on = self.selector(&f);
        Some(YearlyRule {
            years: years?,
            months_of_year: months?,
            on: on?,
        })
    }

    /// weeks_of_month + days_of_week, or days_of_month — exactly one of the two forms.
    fn selector(&mut self, f: &Fields<'_>) -> Option<DaySelector> {
        let by_week = f.has("weeks_of_month") || f.has("days_of_week");
        let by_day = f.has("days_of_month");
        let both_forms = "either weeks_of_month with days_of_week (e.g. [\"Last\"] and [\"Sunday\"]), or days_of_month (1..=28 or \"Last\")";
        if by_week && by_day {
            self.problem(
                f.path("days_of_month"),
                "days_of_month together with weeks_of_month/days_of_week".into(),
                both_forms,
                f.get("days_of_month").and_then(|n| n.line),
            );
            return None;
        }
        if by_day {
            let allowed = validate::DAY_OF_MONTH_ALLOWED;
            let days = self.list(f, "days_of_month", allowed, true, |n| match &n.val {
                Val::Int(Some(i), _) if (1..=28).contains(i) => Some(DayOfMonth::Day(*i as u8)),
                Val::Str(s) if s.trim().eq_ignore_ascii_case("last") => Some(DayOfMonth::Last),
                _ => None,
            })?;
            return Some(DaySelector::DaysOfMonth(days));
        }
        if !by_week {
            self.problem(f.path.clone(), "no days".into(), both_forms, f.line);
            return None;
        }
        let weeks_allowed = "First, Second, Third, Fourth or Last";
        let weeks = self.list(f, "weeks_of_month", weeks_allowed, false, |n| {
            match &n.val {
                Val::Str(s) => WeekOfMonth::parse(s),
                _ => None,
            }
        });
        if !f.has("weeks_of_month") {
            self.missing(
                f,
                "weeks_of_month",
                format!("{weeks_allowed}, to go with days_of_week"),
            );
        }
        let days = self.weekdays(f, "days_of_week", true);
        Some(DaySelector::Weekdays {
            weeks_of_month: weeks?,
            days_of_week: days?,
        })
    }
}

/// "HH:MM" (or "HH:MM:00", or a TOML local time `22:30:00`); whole minutes only.
fn parse_time(s: &str) -> Option<NaiveTime> {
    let s = s.trim();
    let t = NaiveTime::parse_from_str(s, "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(s, "%H:%M:%S"))
        .ok()?;
    (t.second() == 0 && t.nanosecond() == 0).then_some(t)
}

/// An IANA name; otherwise what to write instead (Windows names get their IANA name).
pub fn parse_time_zone(s: &str) -> Result<Tz, String> {
    if let Ok(tz) = s.trim().parse::<Tz>() {
        return Ok(tz);
    }
    if let Some(tz) = windows_to_iana(s) {
        return Err(format!(
            "an IANA time zone name; {s:?} is a Windows name: write {:?}",
            tz.name()
        ));
    }
    if let Some(tz) = chrono_tz::TZ_VARIANTS
        .iter()
        .find(|tz| tz.name().eq_ignore_ascii_case(s.trim()))
    {
        return Err(format!(
            "an IANA time zone name (names are case-sensitive): write {:?}",
            tz.name()
        ));
    }
    Err("an IANA time zone name, e.g. \"Europe/Berlin\", \"America/New_York\" or \"UTC\"".into())
}

#[cfg(test)]
mod tests {
    use super::super::model::seed_policy;
    use super::*;

    const GOLD: &str = r#"
name = "Gold"
time_zone = "Europe/Berlin"          # IANA name; default "UTC"
[schedule]
frequency = "daily"
time = "22:30"
[retention.daily]
days = 30
[retention.weekly]
weeks = 104
days_of_week = ["Sunday"]
[retention.monthly]
months = 120
weeks_of_month = ["Last"]
days_of_week = ["Sunday"]
[retention.yearly]
years = 99
months_of_year = ["January"]
weeks_of_month = ["First"]
days_of_week = ["Sunday"]
"#;

    #[test]
    fn reads_the_issue_example() {
        let p = Policy::from_toml_str(GOLD, "gold.toml").unwrap();
        assert_eq!(p, seed_policy());
    }

    #[test]
    fn toml_round_trips() {
        let p = seed_policy();
        let text = p.to_toml_string();
        assert_eq!(Policy::from_toml_str(&text, "x").unwrap(), p);
        let mut weekly = p.clone();
        weekly.schedule.frequency = Frequency::Weekly;
        weekly.schedule.days = vec![Weekday::Sun, Weekday::Wed];
        weekly.retention.daily = None;
        weekly.retention.weekly.as_mut().unwrap().days_of_week = vec![Weekday::Sun, Weekday::Wed];
        weekly.name = "Silver-2.weekly_x".into();
        let text = weekly.to_toml_string();
        assert!(
            text.contains("days = [\"Sunday\", \"Wednesday\"]"),
            "{text}"
        );
        assert_eq!(Policy::from_toml_str(&text, "x").unwrap(), weekly);
        let mut dom = p.clone();
        dom.retention.monthly.as_mut().unwrap().on = DaySelector::DaysOfMonth(vec![
            DayOfMonth::Day(1),
            DayOfMonth::Day(15),
            DayOfMonth::Last,
        ]);
        let text = dom.to_toml_string();
        assert!(text.contains("days_of_month = [1, 15, \"Last\"]"), "{text}");
        assert_eq!(Policy::from_toml_str(&text, "x").unwrap(), dom);
    }

    #[test]
    fn toml_serde_output_reads_back() {
        // toml's own serializer over our Serialize impl gives a file we read back.
        let p = seed_policy();
        let text = toml::to_string(&p).unwrap();
        assert_eq!(Policy::from_toml_str(&text, "x").unwrap(), p);
    }

    #[test]
    fn time_zone_defaults_to_utc() {
        let p = Policy::from_toml_str(
            "name = \"A\"\n[schedule]\nfrequency = \"daily\"\ntime = \"01:00\"\n[retention.daily]\ndays = 7\n",
            "a.toml",
        )
        .unwrap();
        assert_eq!(p.time_zone, Tz::UTC);
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let text = "name = \"A\"\ncolour = \"red\"\n[schedule]\nfrequency = \"daily\"\ntime = \"01:00\"\n[retention.dayly]\ndays = 7\n";
        let e = Policy::from_toml_str(text, "a.toml").unwrap_err();
        assert_eq!(e.origin, "a.toml");
        let fields: Vec<(&str, Option<usize>)> = e
            .problems
            .iter()
            .map(|p| (p.field.as_str(), p.line))
            .collect();
        assert_eq!(
            fields,
            vec![("colour", Some(2)), ("retention.dayly", Some(6))]
        );
        assert_eq!(e.problems[0].given, "unknown key \"colour\"");
        assert!(e.problems[1]
            .allowed
            .contains("daily, weekly, monthly, yearly"));
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        let text = "name = \"A\"\n[schedule]\nfrequency = daily\n";
        let e = Policy::from_toml_str(text, "a.toml").unwrap_err();
        assert_eq!(e.problems[0].field, "toml");
        assert_eq!(e.problems[0].line, Some(3), "{e}");
        assert!(e.to_string().starts_with("a.toml: "), "{e}");
    }

    #[test]
    fn type_errors_carry_the_line_and_all_are_reported() {
        let text = "name = 5\n[schedule]\nfrequency = \"daily\"\ntime = 2230\n[retention.daily]\ndays = \"thirty\"\n";
        let e = Policy::from_toml_str(text, "a.toml").unwrap_err();
        let got: Vec<(&str, &str, Option<usize>)> = e
            .problems
            .iter()
            .map(|p| (p.field.as_str(), p.given.as_str(), p.line))
            .collect();
        assert_eq!(
            got,
            vec![
                ("name", "5", Some(1)),
                ("schedule.time", "2230", Some(4)),
                ("retention.daily.days", "\"thirty\"", Some(6)),
            ]
        );
        assert!(e.problems[2].allowed.contains("1..=9999"));
    }

    #[test]
    fn validation_problems_get_the_line_of_their_field() {
        let text = "name = \"A\"\n[schedule]\nfrequency = \"daily\"\ntime = \"01:00\"\n[retention.daily]\ndays = 0\n";
        let e = Policy::from_toml_str(text, "a.toml").unwrap_err();
        assert_eq!(e.problems.len(), 1);
        let p = &e.problems[0];
        assert_eq!(
            (p.field.as_str(), p.given.as_str(), p.line),
            ("retention.daily.days", "0", Some(6))
        );
        assert_eq!(p.allowed, "1..=9999 days");
    }

    #[test]
    fn negative_and_huge_counts_are_range_problems() {
        for v in ["-3", "99999999999"] {
            let text = format!("name = \"A\"\n[schedule]\nfrequency = \"daily\"\ntime = \"01:00\"\n[retention.daily]\ndays = {v}\n");
            let e = Policy::from_toml_str(&text, "a.toml").unwrap_err();
            assert_eq!(e.problems[0].field, "retention.daily.days");
            assert_eq!(e.problems[0].given, v);
            assert_eq!(e.problems[0].allowed, "1..=9999 days");
        }
    }

    #[test]
    fn windows_time_zone_name_gets_the_iana_suggestion() {
        let text = "name = \"A\"\ntime_zone = \"Pacific Standard Time\"\n[schedule]\nfrequency = \"daily\"\ntime = \"01:00\"\n[retention.daily]\ndays = 7\n";
        let e = Policy::from_toml_str(text, "a.toml").unwrap_err();
        let p = &e.problems[0];
        assert_eq!(p.field, "time_zone");
        assert_eq!(p.line, Some(2));
        assert_eq!(p.given, "\"Pacific Standard Time\"");
        assert!(
            p.allowed.contains("\"America/Los_Angeles\""),
            "{}",
            p.allowed
        );
        let e = Policy::from_toml_str(&text.replace("Pacific Standard Time", "europe/berlin"), "a")
            .unwrap_err();
        assert!(e.problems[0].allowed.contains("\"Europe/Berlin\""));
        let e = Policy::from_toml_str(&text.replace("Pacific Standard Time", "Mars/Olympus"), "a")
            .unwrap_err();
        assert!(e.problems[0].allowed.contains("IANA"));
    }

    #[test]
    fn bad_items_in_lists_are_named() {
        let text = "name = \"A\"\n[schedule]\nfrequency = \"weekly\"\ntime = \"01:00\"\ndays = [\"Sun\"]\n[retention.weekly]\nweeks = 4\ndays_of_week = [\"Sunday\"]\n[retention.monthly]\nmonths = 3\nweeks_of_month = [\"Fifth\"]\ndays_of_week = [\"Sunday\"]\n";
        let e = Policy::from_toml_str(text, "a.toml").unwrap_err();
        let got: Vec<(&str, &str, Option<usize>)> = e
            .problems
            .iter()
            .map(|p| (p.field.as_str(), p.given.as_str(), p.line))
            .collect();
        assert_eq!(
            got,
            vec![
                ("schedule.days", "\"Sun\"", Some(5)),
                ("retention.monthly.weeks_of_month", "\"Fifth\"", Some(11)),
            ]
        );
        assert!(e.problems[0].allowed.contains("Sunday, Monday"));
        assert_eq!(
            e.problems[1].allowed,
            "First, Second, Third, Fourth or Last"
        );
    }

    #[test]
    fn selector_needs_exactly_one_form() {
        let base = "name = \"A\"\n[schedule]\nfrequency = \"daily\"\ntime = \"01:00\"\n[retention.daily]\ndays = 7\n[retention.monthly]\nmonths = 3\n";
        let e = Policy::from_toml_str(base, "a").unwrap_err();
        assert_eq!(e.problems[0].field, "retention.monthly");
        assert_eq!(e.problems[0].given, "no days");
        let both = format!("{base}days_of_month = [1]\nweeks_of_month = [\"First\"]\ndays_of_week = [\"Sunday\"]\n");
        let e = Policy::from_toml_str(&both, "a").unwrap_err();
        assert_eq!(e.problems[0].field, "retention.monthly.days_of_month");
        let half = format!("{base}weeks_of_month = [\"First\"]\n");
        let e = Policy::from_toml_str(&half, "a").unwrap_err();
        assert_eq!(e.problems[0].field, "retention.monthly.days_of_week");
        assert_eq!(e.problems[0].given, "nothing");
        let bad_day = format!("{base}days_of_month = [0, 29, \"First\"]\n");
        let e = Policy::from_toml_str(&bad_day, "a").unwrap_err();
        let given: Vec<&str> = e.problems.iter().map(|p| p.given.as_str()).collect();
        assert_eq!(given, vec!["0", "29", "\"First\""]);
        assert!(e
            .problems
            .iter()
            .all(|p| p.field == "retention.monthly.days_of_month"));
    }

    #[test]
    fn missing_keys_are_named() {
        let e = Policy::from_toml_str("[schedule]\nfrequency = \"daily\"\n", "a").unwrap_err();
        let fields: Vec<&str> = e.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, vec!["name", "schedule.time"]);
        assert!(e.problems.iter().all(|p| p.given == "nothing"));
    }

    #[test]
    fn toml_local_time_literal_is_accepted() {
        let p = Policy::from_toml_str(
            "name = \"A\"\n[schedule]\nfrequency = \"Daily\"\ntime = 22:30:00\n[retention.daily]\ndays = 7\n",
            "a",
        )
        .unwrap();
        assert_eq!(p.schedule.time, NaiveTime::from_hms_opt(22, 30, 0).unwrap());
        let e = Policy::from_toml_str(
            "name = \"A\"\n[schedule]\nfrequency = \"daily\"\ntime = \"22:30:15\"\n[retention.daily]\ndays = 7\n",
            "a",
        )
        .unwrap_err();
        assert_eq!(e.problems[0].field, "schedule.time");
    }

    #[test]
    fn quote_escapes() {
        assert_eq!(quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
    }
}
