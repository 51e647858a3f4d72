//! The policy form shared by the protect wizard and the Policies tab's create wizard: the
//! schedule (name, daily/weekly, weekdays, time, time zone) and the retention rules (daily,
//! weekly, monthly, yearly; each on/off with its count and day pickers), validated live
//! with [`Policy::validate`]'s messages, and the retention preview chart from
//! [`crate::policy::preview`].
//!
//! Keys: ↑/↓ (or Tab / Shift-Tab) move between rows; on a text row characters type; on a
//! rule row Space turns the rule on or off and digits edit its count; on a picker row ←/→
//! move and Space toggles; on a choice row ←/→ or Space change it.

use crate::policy::model::{weekday_name, MONTHS, WEEKDAYS};
use crate::policy::validate::name_problem;
use crate::policy::{
    DailyRule, DayOfMonth, DaySelector, Frequency, MonthlyRule, Policy, Retention, Schedule,
    WeekOfMonth, WeeklyRule, YearlyRule,
};
use crate::tui::keys::{Action, KeyMap};
use crate::tui::theme::Theme;
use crate::tui::widgets::{bars, TextInput};
use chrono::{DateTime, NaiveTime, Utc};
use chrono_tz::Tz;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;
use std::ops::Range;

/// Which days of a month a monthly or yearly rule keeps, as the form edits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorDraft {
    /// Week-of-month + weekday (true) or days of the month (false).
    pub by_weekday: bool,
    pub weeks: [bool; 5],
    pub days: [bool; 7],
    /// Days 1..=28, then Last.
    pub dom: [bool; 29],
}

impl SelectorDraft {
    fn first_sunday() -> SelectorDraft {
        let mut s = SelectorDraft {
            by_weekday: true,
            weeks: [false; 5],
            days: [false; 7],
            dom: [false; 29],
        };
        s.weeks[0] = true;
        s.days[0] = true;
        s.dom[0] = true;
        s
    }
    fn from(on: &DaySelector) -> SelectorDraft {
        let mut s = SelectorDraft {
            by_weekday: true,
            weeks: [false; 5],
            days: [false; 7],
            dom: [false; 29],
        };
        match on {
            DaySelector::Weekdays {
                weeks_of_month,
                days_of_week,
            } => {
                for w in weeks_of_month {
                    if let Some(i) = WeekOfMonth::ALL.iter().position(|x| x == w) {
                        s.weeks[i] = true;
                    }
                }
                for d in days_of_week {
                    if let Some(i) = WEEKDAYS.iter().position(|x| x == d) {
                        s.days[i] = true;
                    }
                }
            }
            DaySelector::DaysOfMonth(days) => {
                s.by_weekday = false;
                for d in days {
                    match d {
                        DayOfMonth::Day(n) if (1..=28).contains(n) => s.dom[*n as usize - 1] = true,
                        DayOfMonth::Last => s.dom[28] = true,
                        DayOfMonth::Day(_) => {}
                    }
                }
            }
        }
        s
    }
    fn to_selector(&self) -> DaySelector {
        if self.by_weekday {
            DaySelector::Weekdays {
                weeks_of_month: WeekOfMonth::ALL
                    .iter()
                    .zip(self.weeks)
                    .filter(|x| x.1)
                    .map(|x| *x.0)
                    .collect(),
                days_of_week: WEEKDAYS
                    .iter()
                    .zip(self.days)
                    .filter(|x| x.1)
                    .map(|x| *x.0)
                    .collect(),
            }
        } else {
            DaySelector::DaysOfMonth(
                (0..29)
                    .filter(|i| self.dom[*i])
                    .map(|i| {
                        if i == 28 {
                            DayOfMonth::Last
                        } else {
                            DayOfMonth::Day(i as u8 + 1)
                        }
                    })
                    .collect(),
            )
        }
    }
}

/// A row of the form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Row {
    Name,
    Frequency,
    ScheduleDays,
    Time,
    TimeZone,
    Daily,
    Weekly,
    WeeklyDays,
    Monthly,
    MonthlyMode,
    MonthlyWeeks,
    MonthlyDays,
    MonthlyDom,
    Yearly,
    YearlyMonths,
    YearlyMode,
    YearlyWeeks,
    YearlyDays,
    YearlyDom,
}

impl Row {
    fn is_text(self) -> bool {
        matches!(self, Row::Name | Row::Time | Row::TimeZone)
    }
}

/// The two steps the form has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Schedule,
    Retention,
}

/// The retention preview of a policy: points alive per day from today.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionPreview {
    pub days: u32,
    pub counts: Vec<u64>,
    pub peak: u64,
    pub last: u64,
}

impl RetentionPreview {
    /// How far the preview looks: a little past the longest rule, from 30 days to 5 years.
    pub fn horizon(p: &Policy) -> u32 {
        let r = &p.retention;
        let mut d: u64 = 0;
        if let Some(x) = &r.daily {
            d = d.max(x.days as u64);
        }
        if let Some(x) = &r.weekly {
            d = d.max(x.weeks as u64 * 7);
        }
        if let Some(x) = &r.monthly {
            d = d.max(x.months as u64 * 31);
        }
        if let Some(x) = &r.yearly {
            d = d.max(x.years as u64 * 366);
        }
        ((d * 5 / 4) as u32).clamp(30, 5 * 365)
    }

    pub fn compute(p: &Policy, now: DateTime<Utc>) -> RetentionPreview {
        let days = Self::horizon(p);
        let from = crate::policy::schedule::local_date(p.time_zone, now);
        let pv = crate::policy::preview(p, from, days);
        let counts: Vec<u64> = pv.daily_counts.iter().map(|(_, n)| *n as u64).collect();
        RetentionPreview {
            days,
            peak: counts.iter().copied().max().unwrap_or(0),
            last: counts.last().copied().unwrap_or(0),
            counts,
        }
    }

    /// "60 days", "2 years".
    pub fn horizon_label(&self) -> String {
        if self.days >= 730 {
            format!("{:.0} years", self.days as f64 / 365.0)
        } else if self.days >= 365 {
            format!("{:.1} years", self.days as f64 / 365.0)
        } else {
            format!("{} days", self.days)
        }
    }
}

/// Draws a retention preview: a chart of points alive per day, with its scale.
pub fn draw_preview(f: &mut Frame, area: Rect, pv: &RetentionPreview, theme: &Theme) {
    if area.height < 3 || area.width < 20 {
        return;
    }
    // A taller chart says no more.
    let area = Rect {
        height: area.height.min(10),
        ..area
    };
    // A taller chart says no more.
    let area = Rect {
        height: area.height.min(10),
        ..area
    };
    let [head, chart, axis] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(area);
    f.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled("Retention preview", theme.header()),
            Span::styled(
                format!(
                    " · recovery points, next {} · peak {} · {} at the end",
                    pv.horizon_label(),
                    pv.peak,
                    pv.last
                ),
                theme.muted(),
            ),
        ])),
        head,
    );
    let label_w = pv.peak.to_string().len() as u16 + 1;
    let c = Rect {
        x: chart.x + label_w,
        width: chart.width.saturating_sub(label_w),
        ..chart
    };
    let values = bars::resample(&pv.counts, c.width as usize);
    bars::draw(
        f.buffer_mut(),
        c,
        &values,
        Some(pv.peak),
        1,
        0,
        theme.accent(),
    );
    f.render_widget(
        Paragraph::new(Span::styled(pv.peak.to_string(), theme.muted())),
        Rect {
            x: chart.x,
            y: chart.y,
            width: label_w,
            height: 1,
        },
    );
    let end = format!("+{}", pv.horizon_label());
    let pad = (c.width as usize).saturating_sub(5 + end.len());
    f.render_widget(
        Paragraph::new(Span::styled(
            format!("today{}{end}", " ".repeat(pad)),
            theme.muted(),
        )),
        Rect {
            x: c.x,
            width: c.width,
            ..axis
        },
    );
}

/// The form's state.
#[derive(Debug, Clone)]
pub struct PolicyForm {
    pub name: TextInput,
    pub frequency: Frequency,
    pub schedule_days: [bool; 7],
    pub time: TextInput,
    pub time_zone: TextInput,
    pub daily_on: bool,
    pub daily_n: TextInput,
    pub weekly_on: bool,
    pub weekly_n: TextInput,
    pub weekly_days: [bool; 7],
    pub monthly_on: bool,
    pub monthly_n: TextInput,
    pub monthly: SelectorDraft,
    pub yearly_on: bool,
    pub yearly_n: TextInput,
    pub yearly_months: [bool; 12],
    pub yearly: SelectorDraft,
    /// Shows the name row (a new policy).
    pub with_name: bool,
    /// An existing policy shown, not edited.
    pub read_only: bool,
    pub focus: usize,
    /// Position inside a picker row.
    pub cursor: usize,
    /// Problems of the current values (parse problems, then `Policy::validate`'s).
    pub problems: Vec<String>,
    /// The policy when the values are valid.
    pub policy: Option<Policy>,
    pub preview: Option<RetentionPreview>,
    now: DateTime<Utc>,
}

impl PolicyForm {
    /// A new policy with the portal's defaults: daily at 22:00 UTC kept 30 days; the other
    /// rules off, with their usual values ready (Sunday, 12 weeks; first Sunday, 60 months;
    /// first Sunday of January, 10 years).
    pub fn new(now: DateTime<Utc>) -> PolicyForm {
        let mut sunday = [false; 7];
        sunday[0] = true;
        let mut january = [false; 12];
        january[0] = true;
        let mut f = PolicyForm {
            name: TextInput::default(),
            frequency: Frequency::Daily,
            schedule_days: sunday,
            time: TextInput::new("22:00"),
            time_zone: TextInput::new("UTC"),
            daily_on: true,
            daily_n: TextInput::new("30"),
            weekly_on: false,
            weekly_n: TextInput::new("12"),
            weekly_days: sunday,
            monthly_on: false,
            monthly_n: TextInput::new("60"),
            monthly: SelectorDraft::first_sunday(),
            yearly_on: false,
            yearly_n: TextInput::new("10"),
            yearly_months: january,
            yearly: SelectorDraft::first_sunday(),
            with_name: true,
            read_only: false,
            focus: 0,
            cursor: 0,
            problems: vec![],
            policy: None,
            preview: None,
            now,
        };
        f.recompute();
        f
    }

    /// An existing policy, read-only.
    pub fn from_policy(p: &Policy, now: DateTime<Utc>) -> PolicyForm {
        let mut f = PolicyForm::new(now);
        f.name.set(p.name.clone());
        f.frequency = p.schedule.frequency;
        f.schedule_days = [false; 7];
        for d in &p.schedule.days {
            if let Some(i) = WEEKDAYS.iter().position(|x| x == d) {
                f.schedule_days[i] = true;
            }
        }
        if p.schedule.days.is_empty() {
            f.schedule_days[0] = true;
        }
        f.time.set(p.schedule.time.format("%H:%M").to_string());
        f.time_zone.set(p.time_zone.name().to_string());
        let r = &p.retention;
        f.daily_on = r.daily.is_some();
        if let Some(d) = &r.daily {
            f.daily_n.set(d.days.to_string());
        }
        f.weekly_on = r.weekly.is_some();
        if let Some(w) = &r.weekly {
            f.weekly_n.set(w.weeks.to_string());
            f.weekly_days = [false; 7];
            for d in &w.days_of_week {
                if let Some(i) = WEEKDAYS.iter().position(|x| x == d) {
                    f.weekly_days[i] = true;
                }
            }
        }
        f.monthly_on = r.monthly.is_some();
        if let Some(m) = &r.monthly {
            f.monthly_n.set(m.months.to_string());
            f.monthly = SelectorDraft::from(&m.on);
        }
        f.yearly_on = r.yearly.is_some();
        if let Some(y) = &r.yearly {
            f.yearly_n.set(y.years.to_string());
            f.yearly_months = [false; 12];
            for m in &y.months_of_year {
                if let Some(i) = MONTHS.iter().position(|x| x == m) {
                    f.yearly_months[i] = true;
                }
            }
            f.yearly = SelectorDraft::from(&y.on);
        }
        f.read_only = true;
        f.recompute();
        f
    }

    pub fn rows(&self, part: Part) -> Vec<Row> {
        let mut v = Vec::new();
        match part {
            Part::Schedule => {
                if self.with_name {
                    v.push(Row::Name);
                }
                v.push(Row::Frequency);
                if self.frequency == Frequency::Weekly {
                    v.push(Row::ScheduleDays);
                }
                v.push(Row::Time);
                v.push(Row::TimeZone);
            }
            Part::Retention => {
                if self.frequency == Frequency::Daily {
                    v.push(Row::Daily);
                }
                v.push(Row::Weekly);
                if self.weekly_on {
                    v.push(Row::WeeklyDays);
                }
                v.push(Row::Monthly);
                if self.monthly_on {
                    v.push(Row::MonthlyMode);
                    if self.monthly.by_weekday {
                        v.extend([Row::MonthlyWeeks, Row::MonthlyDays]);
                    } else {
                        v.push(Row::MonthlyDom);
                    }
                }
                v.push(Row::Yearly);
                if self.yearly_on {
                    v.extend([Row::YearlyMonths, Row::YearlyMode]);
                    if self.yearly.by_weekday {
                        v.extend([Row::YearlyWeeks, Row::YearlyDays]);
                    } else {
                        v.push(Row::YearlyDom);
                    }
                }
            }
        }
        v
    }

    pub fn focused_row(&self, part: Part) -> Option<Row> {
        self.rows(part).get(self.focus).copied()
    }

    /// Whether the focused row takes typed characters.
    pub fn typing(&self, part: Part) -> bool {
        !self.read_only && self.focused_row(part).is_some_and(|r| r.is_text())
    }

    fn picker_len(row: Row) -> usize {
        match row {
            Row::ScheduleDays | Row::WeeklyDays | Row::MonthlyDays | Row::YearlyDays => 7,
            Row::MonthlyWeeks | Row::YearlyWeeks => 5,
            Row::MonthlyDom | Row::YearlyDom => 29,
            Row::YearlyMonths => 12,
            _ => 0,
        }
    }

    fn picker(&mut self, row: Row) -> Option<&mut [bool]> {
        Some(match row {
            Row::ScheduleDays => &mut self.schedule_days,
            Row::WeeklyDays => &mut self.weekly_days,
            Row::MonthlyDays => &mut self.monthly.days,
            Row::YearlyDays => &mut self.yearly.days,
            Row::MonthlyWeeks => &mut self.monthly.weeks,
            Row::YearlyWeeks => &mut self.yearly.weeks,
            Row::MonthlyDom => &mut self.monthly.dom,
            Row::YearlyDom => &mut self.yearly.dom,
            Row::YearlyMonths => &mut self.yearly_months,
            _ => return None,
        })
    }

    /// The first IANA zone starting with what was typed (for → completion).
    pub fn tz_suggestion(&self) -> Option<&'static str> {
        let typed = self.time_zone.value.trim();
        if typed.len() < 2 || typed.parse::<Tz>().is_ok() {
            return None;
        }
        let lower = typed.to_ascii_lowercase();
        chrono_tz::TZ_VARIANTS
            .iter()
            .map(|tz| tz.name())
            .find(|n| n.to_ascii_lowercase().starts_with(&lower))
            .or_else(|| {
                chrono_tz::TZ_VARIANTS
                    .iter()
                    .map(|tz| tz.name())
                    .find(|n| n.to_ascii_lowercase().contains(&lower))
            })
    }

    /// Handles a key of part `part`; returns true when it was used.
    pub fn handle_key(&mut self, k: &KeyEvent, keys: &KeyMap, part: Part) -> bool {
        let rows = self.rows(part);
        let Some(row) = rows.get(self.focus).copied() else {
            self.focus = 0;
            return false;
        };
        let text_row = row.is_text() && !self.read_only;
        let up = k.code == KeyCode::Up
            || k.code == KeyCode::BackTab
            || (!text_row && keys.is(Action::Up, k));
        let down = k.code == KeyCode::Down
            || k.code == KeyCode::Tab
            || (!text_row && keys.is(Action::Down, k));
        if up {
            if self.focus > 0 {
                self.focus -= 1;
                self.cursor = 0;
            }
            return true;
        }
        if down {
            if self.focus + 1 < rows.len() {
                self.focus += 1;
                self.cursor = 0;
            }
            return true;
        }
        if self.read_only {
            return false;
        }
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        let left = k.code == KeyCode::Left || (!text_row && !ctrl && keys.is(Action::Left, k));
        let right = k.code == KeyCode::Right || (!text_row && !ctrl && keys.is(Action::Right, k));
        let space = k.code == KeyCode::Char(' ');
        let used = match row {
            Row::Name | Row::Time => self.text_mut(row).is_some_and(|t| t.handle(k)),
            Row::TimeZone => {
                if right && self.time_zone.cursor == self.time_zone.value.chars().count() {
                    if let Some(s) = self.tz_suggestion() {
                        self.time_zone.set(s);
                        self.recompute();
                        return true;
                    }
                }
                self.time_zone.handle(k)
            }
            Row::Frequency => {
                if left || right || space {
                    self.frequency = match self.frequency {
                        Frequency::Daily => Frequency::Weekly,
                        Frequency::Weekly => Frequency::Daily,
                    };
                    if self.frequency == Frequency::Weekly && !self.weekly_on {
                        // As the portal does: a weekly schedule keeps its points with a
                        // weekly rule on the scheduled days (the daily rule does not apply).
                        self.weekly_on = true;
                        self.weekly_days = self.schedule_days;
                    }
                    true
                } else {
                    false
                }
            }
            Row::MonthlyMode | Row::YearlyMode => {
                if left || right || space {
                    let s = if row == Row::MonthlyMode {
                        &mut self.monthly
                    } else {
                        &mut self.yearly
                    };
                    s.by_weekday = !s.by_weekday;
                    true
                } else {
                    false
                }
            }
            Row::Daily | Row::Weekly | Row::Monthly | Row::Yearly => {
                if space {
                    let on = match row {
                        Row::Daily => &mut self.daily_on,
                        Row::Weekly => &mut self.weekly_on,
                        Row::Monthly => &mut self.monthly_on,
                        _ => &mut self.yearly_on,
                    };
                    *on = !*on;
                    true
                } else {
                    match k.code {
                        KeyCode::Char(c) if c.is_ascii_digit() => self.count_mut(row).handle(k),
                        KeyCode::Backspace | KeyCode::Delete => self.count_mut(row).handle(k),
                        _ => false,
                    }
                }
            }
            _ => {
                let n = Self::picker_len(row);
                if left {
                    self.cursor = self.cursor.saturating_sub(1);
                    return true;
                }
                if right {
                    self.cursor = (self.cursor + 1).min(n.saturating_sub(1));
                    return true;
                }
                if space {
                    let c = self.cursor;
                    let before = self.schedule_days;
                    if let Some(p) = self.picker(row) {
                        if let Some(b) = p.get_mut(c) {
                            *b = !*b;
                        }
                    }
                    if row == Row::ScheduleDays {
                        // Weekday pickers of the rules that still follow the schedule
                        // (the same days as before this change) follow it.
                        let after = self.schedule_days;
                        for days in [
                            &mut self.weekly_days,
                            &mut self.monthly.days,
                            &mut self.yearly.days,
                        ] {
                            if *days == before {
                                *days = after;
                            }
                        }
                    }
                    true
                } else {
                    false
                }
            }
        };
        if used {
            self.recompute();
        }
        used
    }

    fn text_mut(&mut self, row: Row) -> Option<&mut TextInput> {
        match row {
            Row::Name => Some(&mut self.name),
            Row::Time => Some(&mut self.time),
            Row::TimeZone => Some(&mut self.time_zone),
            _ => None,
        }
    }

    fn count_mut(&mut self, row: Row) -> &mut TextInput {
        match row {
            Row::Daily => &mut self.daily_n,
            Row::Weekly => &mut self.weekly_n,
            Row::Monthly => &mut self.monthly_n,
            _ => &mut self.yearly_n,
        }
    }

    /// Builds the policy from the fields, collecting every problem.
    pub fn build(&self) -> Result<Policy, Vec<String>> {
        let mut problems: Vec<String> = Vec::new();
        let mut bad_fields: Vec<&str> = Vec::new();
        let name = self.name.value.trim().to_string();
        if self.with_name {
            if let Some(p) = name_problem(&name) {
                problems.push(if name.is_empty() {
                    "name: give the policy a name (letters, digits, '-', '_', '.')".into()
                } else {
                    p.to_string()
                });
                bad_fields.push("name");
            }
        }
        let time = match NaiveTime::parse_from_str(self.time.value.trim(), "%H:%M") {
            Ok(t) => t,
            Err(_) => {
                problems.push(format!(
                    "schedule.time: given {:?}; allowed: a time of day as HH:MM, 00:00 to 23:59",
                    self.time.value
                ));
                bad_fields.push("schedule.time");
                NaiveTime::MIN
            }
        };
        let tz = match self.time_zone.value.trim().parse::<Tz>() {
            Ok(tz) => tz,
            Err(_) => {
                let hint = crate::policy::windows_to_iana(self.time_zone.value.trim())
                    .map(|i| format!(" (the IANA name of that Windows zone is {i})"))
                    .unwrap_or_default();
                problems.push(format!(
                    "time_zone: given {:?}; allowed: an IANA time zone name such as UTC or Europe/Berlin{hint}",
                    self.time_zone.value
                ));
                bad_fields.push("time_zone");
                Tz::UTC
            }
        };
        let mut count = |t: &TextInput, field: &'static str| -> u32 {
            match t.value.trim().parse::<u32>() {
                Ok(n) => n,
                Err(_) => {
                    problems.push(format!(
                        "{field}: given {:?}; allowed: a whole number",
                        t.value
                    ));
                    bad_fields.push(field);
                    1
                }
            }
        };
        let daily = (self.daily_on && self.frequency == Frequency::Daily).then(|| DailyRule {
            days: count(&self.daily_n, "retention.daily.days"),
        });
        let weekly = self.weekly_on.then(|| WeeklyRule {
            weeks: count(&self.weekly_n, "retention.weekly.weeks"),
            days_of_week: WEEKDAYS
                .iter()
                .zip(self.weekly_days)
                .filter(|x| x.1)
                .map(|x| *x.0)
                .collect(),
        });
        let monthly = self.monthly_on.then(|| MonthlyRule {
            months: count(&self.monthly_n, "retention.monthly.months"),
            on: self.monthly.to_selector(),
        });
        let yearly = self.yearly_on.then(|| YearlyRule {
            years: count(&self.yearly_n, "retention.yearly.years"),
            months_of_year: MONTHS
                .iter()
                .zip(self.yearly_months)
                .filter(|x| x.1)
                .map(|x| *x.0)
                .collect(),
            on: self.yearly.to_selector(),
        });
        let policy = Policy {
            name: if self.with_name && !bad_fields.contains(&"name") {
                name
            } else if self.with_name {
                "x".into()
            } else {
                name
            },
            time_zone: tz,
            schedule: Schedule {
                frequency: self.frequency,
                time,
                days: match self.frequency {
                    Frequency::Daily => vec![],
                    Frequency::Weekly => WEEKDAYS
                        .iter()
                        .zip(self.schedule_days)
                        .filter(|x| x.1)
                        .map(|x| *x.0)
                        .collect(),
                },
            },
            retention: Retention {
                daily,
                weekly,
                monthly,
                yearly,
            },
        };
        if let Err(e) = policy.validate() {
            for p in e.problems {
                if !bad_fields.iter().any(|f| p.field == *f) {
                    problems.push(p.to_string());
                }
            }
        }
        if problems.is_empty() {
            Ok(policy)
        } else {
            Err(problems)
        }
    }

    /// Problems that concern the schedule step (name, time, zone, days).
    pub fn schedule_problems(&self) -> Vec<&String> {
        self.problems
            .iter()
            .filter(|p| {
                p.starts_with("name") || p.starts_with("schedule") || p.starts_with("time_zone")
            })
            .collect()
    }

    pub fn recompute(&mut self) {
        let rows = self
            .rows(Part::Schedule)
            .len()
            .max(self.rows(Part::Retention).len());
        if self.focus >= rows {
            self.focus = rows.saturating_sub(1);
        }
        match self.build() {
            Ok(p) => {
                // The preview does not depend on the name: keep it when only that changed.
                let same = self.policy.as_ref().is_some_and(|old| {
                    old.schedule == p.schedule
                        && old.retention == p.retention
                        && old.time_zone == p.time_zone
                });
                if !same || self.preview.is_none() {
                    self.preview = Some(RetentionPreview::compute(&p, self.now));
                }
                self.problems.clear();
                self.policy = Some(p);
            }
            Err(problems) => {
                self.problems = problems;
                self.policy = None;
                self.preview = None;
            }
        }
    }

    /// The lines of a part, with the focused row marked (when `focused`), and which of
    /// them the focused row takes (to scroll to it where the form does not fit).
    pub fn lines(
        &self,
        part: Part,
        focused: bool,
        theme: &Theme,
    ) -> (Vec<Line<'static>>, Option<Range<usize>>) {
        let rows = self.rows(part);
        let mut out = Vec::new();
        let mut focus = None;
        for (i, row) in rows.iter().enumerate() {
            let has_focus = focused && i == self.focus;
            let start = out.len();
            out.extend(self.row_lines(*row, has_focus, theme));
            if has_focus {
                focus = Some(start..out.len());
            }
        }
        (out, focus)
    }

    fn row_lines(&self, row: Row, focus: bool, t: &Theme) -> Vec<Line<'static>> {
        let marker = if focus {
            Span::styled("▶ ", t.accent())
        } else {
            Span::raw("  ")
        };
        let label = |s: &str| {
            Span::styled(
                format!("{s:<16}"),
                if focus { t.focused() } else { t.header() },
            )
        };
        let edit = focus && !self.read_only;
        let text = |ti: &TextInput| -> Vec<Span<'static>> {
            ti.line(
                edit,
                Style::default(),
                Style::default().add_modifier(Modifier::REVERSED),
            )
            .spans
            .into_iter()
            .collect()
        };
        let choice = |a: &str, b: &str, first: bool| -> Vec<Span<'static>> {
            vec![
                Span::styled(
                    format!("{} {a}", super::super::widgets::radio(first)),
                    if first { t.accent() } else { Style::default() },
                ),
                Span::raw("   "),
                Span::styled(
                    format!("{} {b}", super::super::widgets::radio(!first)),
                    if !first { t.accent() } else { Style::default() },
                ),
            ]
        };
        let picker = |names: &[String], on: &[bool]| -> Vec<Span<'static>> {
            names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let mut s = if on[i] {
                        t.accent().add_modifier(Modifier::BOLD)
                    } else {
                        t.muted()
                    };
                    if edit && i == self.cursor {
                        s = s.add_modifier(Modifier::REVERSED);
                    }
                    Span::styled(
                        if on[i] {
                            format!("[{n}]")
                        } else {
                            format!(" {n} ")
                        },
                        s,
                    )
                })
                .collect()
        };
        let rule = |name: &str, on: bool, n: &TextInput, unit: &str| -> Vec<Span<'static>> {
            let mut v = vec![
                Span::styled(
                    format!("{} ", super::super::widgets::check(on)),
                    if on { t.accent() } else { t.muted() },
                ),
                Span::raw("keep "),
            ];
            let _ = name;
            v.extend(
                n.line(
                    edit,
                    if on {
                        Style::default().add_modifier(Modifier::BOLD)
                    } else {
                        t.muted()
                    },
                    Style::default().add_modifier(Modifier::REVERSED),
                )
                .spans,
            );
            v.push(Span::raw(format!(" {unit}")));
            v
        };
        let weekday_names: Vec<String> = WEEKDAYS
            .iter()
            .map(|d| weekday_name(*d)[..2].to_string())
            .collect();
        let week_names: Vec<String> = WeekOfMonth::ALL
            .iter()
            .map(|w| w.as_str().to_string())
            .collect();
        let month_names: Vec<String> = MONTHS.iter().map(|m| m.name()[..3].to_string()).collect();
        let dom_names: Vec<String> = (1..=28)
            .map(|d| format!("{d:>2}"))
            .chain(["Last".to_string()])
            .collect();
        let line = |l: &str, mut rest: Vec<Span<'static>>| {
            let mut v = vec![marker.clone(), label(l)];
            v.append(&mut rest);
            Line::from(v)
        };
        match row {
            Row::Name => vec![line("Policy name", text(&self.name))],
            Row::Frequency => vec![line(
                "Frequency",
                choice("Daily", "Weekly", self.frequency == Frequency::Daily),
            )],
            Row::ScheduleDays => vec![line("  on", picker(&weekday_names, &self.schedule_days))],
            Row::Time => vec![line("Time (HH:MM)", text(&self.time))],
            Row::TimeZone => {
                let mut v = vec![line("Time zone", text(&self.time_zone))];
                if edit {
                    if let Some(s) = self.tz_suggestion() {
                        v.push(Line::from(vec![
                            Span::raw(" ".repeat(18)),
                            Span::styled(format!("→ {s}  (→ completes)"), t.muted()),
                        ]));
                    }
                }
                v
            }
            Row::Daily => vec![line(
                "Daily backups",
                rule("daily", self.daily_on, &self.daily_n, "days"),
            )],
            Row::Weekly => vec![line(
                "Weekly backups",
                rule("weekly", self.weekly_on, &self.weekly_n, "weeks"),
            )],
            Row::WeeklyDays => vec![line("  on", picker(&weekday_names, &self.weekly_days))],
            Row::Monthly => vec![line(
                "Monthly backups",
                rule("monthly", self.monthly_on, &self.monthly_n, "months"),
            )],
            Row::Yearly => vec![line(
                "Yearly backups",
                rule("yearly", self.yearly_on, &self.yearly_n, "years"),
            )],
            Row::MonthlyMode => vec![line(
                "  by",
                choice("Week and day", "Day of month", self.monthly.by_weekday),
            )],
            Row::YearlyMode => vec![line(
                "  by",
                choice("Week and day", "Day of month", self.yearly.by_weekday),
            )],
            Row::MonthlyWeeks => vec![line("  week", picker(&week_names, &self.monthly.weeks))],
            Row::YearlyWeeks => vec![line("  week", picker(&week_names, &self.yearly.weeks))],
            Row::MonthlyDays => vec![line("  day", picker(&weekday_names, &self.monthly.days))],
            Row::YearlyDays => vec![line("  day", picker(&weekday_names, &self.yearly.days))],
            Row::YearlyMonths => vec![line("  in", picker(&month_names, &self.yearly_months))],
            Row::MonthlyDom | Row::YearlyDom => {
                let s = if row == Row::MonthlyDom {
                    &self.monthly
                } else {
                    &self.yearly
                };
                let spans = picker(&dom_names, &s.dom);
                // Ten days a line: 1–10, 11–20, 21–28 and Last.
                let mut out = Vec::new();
                for (i, chunk) in spans.chunks(10).enumerate() {
                    if i == 0 {
                        out.push(line("  days", chunk.to_vec()));
                    } else {
                        out.push(Line::from(
                            [vec![Span::raw(" ".repeat(18))], chunk.to_vec()].concat(),
                        ));
                    }
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap()
    }

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    #[test]
    fn defaults_need_only_a_name() {
        let mut f = PolicyForm::new(now());
        assert!(f.policy.is_none());
        assert!(f.problems[0].starts_with("name"), "{:?}", f.problems);
        for c in "Gold".chars() {
            f.handle_key(&key(KeyCode::Char(c)), &KeyMap::default(), Part::Schedule);
        }
        let p = f.policy.clone().expect("valid");
        assert_eq!(p.name, "Gold");
        assert_eq!(p.retention.daily, Some(DailyRule { days: 30 }));
        assert!(f.preview.as_ref().unwrap().peak >= 30);
    }

    #[test]
    fn existing_policies_round_trip() {
        let mut p = Policy::default_policy();
        p.retention.weekly = Some(WeeklyRule {
            weeks: 104,
            days_of_week: vec![chrono::Weekday::Sun],
        });
        p.retention.monthly = Some(MonthlyRule {
            months: 120,
            on: DaySelector::Weekdays {
                weeks_of_month: vec![WeekOfMonth::Last],
                days_of_week: vec![chrono::Weekday::Sun],
            },
        });
        p.retention.yearly = Some(YearlyRule {
            years: 99,
            months_of_year: vec![chrono::Month::January],
            on: DaySelector::DaysOfMonth(vec![DayOfMonth::Day(1), DayOfMonth::Last]),
        });
        let f = PolicyForm::from_policy(&p, now());
        assert_eq!(f.build().unwrap(), p);
    }

    #[test]
    fn weekly_schedule_problems_are_live() {
        let mut f = PolicyForm::new(now());
        f.name.set("W");
        f.handle_key(&key(KeyCode::Down), &KeyMap::default(), Part::Schedule);
        assert_eq!(f.focused_row(Part::Schedule), Some(Row::Frequency));
        f.handle_key(&key(KeyCode::Char(' ')), &KeyMap::default(), Part::Schedule);
        assert_eq!(f.frequency, Frequency::Weekly);
        // Like the portal: the weekly rule comes on, on the scheduled days.
        assert!(f.weekly_on);
        assert!(f.problems.is_empty(), "{:?}", f.problems);
        // Scheduling Wednesday too: the rules' weekdays follow the schedule.
        f.handle_key(&key(KeyCode::Down), &KeyMap::default(), Part::Schedule);
        assert_eq!(f.focused_row(Part::Schedule), Some(Row::ScheduleDays));
        for _ in 0..3 {
            f.handle_key(&key(KeyCode::Right), &KeyMap::default(), Part::Schedule);
        }
        f.handle_key(&key(KeyCode::Char(' ')), &KeyMap::default(), Part::Schedule);
        assert_eq!(
            f.schedule_days,
            [true, false, false, true, false, false, false]
        );
        assert_eq!(f.weekly_days, f.schedule_days);
        assert_eq!(f.monthly.days, f.schedule_days);
        assert!(f.problems.is_empty(), "{:?}", f.problems);
        // A weekly schedule needs a weekly rule covering its days.
        f.weekly_on = false;
        f.recompute();
        assert!(
            f.problems.iter().any(|p| p.contains("weekly")),
            "{:?}",
            f.problems
        );
        f.weekly_on = true;
        f.recompute();
        assert!(f.problems.is_empty(), "{:?}", f.problems);
        f.time.set("25:00");
        f.recompute();
        assert!(
            f.problems.iter().any(|p| p.starts_with("schedule.time")),
            "{:?}",
            f.problems
        );
    }

    #[test]
    fn time_zone_completes_and_windows_names_are_explained() {
        let mut f = PolicyForm::new(now());
        f.time_zone.set("europe/ber");
        assert_eq!(f.tz_suggestion(), Some("Europe/Berlin"));
        f.time_zone.set("W. Europe Standard Time");
        f.recompute();
        assert!(
            f.problems.iter().any(|p| p.contains("Europe/Berlin")),
            "{:?}",
            f.problems
        );
    }
}
