//! The dashboard: item counts, jobs of the last 24 hours (each count selectable: Enter
//! opens Jobs filtered to it), storage, jobs per hour, upcoming backups, recent failures.

use crate::fmt;
use crate::tui::app::{App, Cx, Tab};
use crate::tui::data::{JobsQuery, StatusFilter, TimeRange};
use crate::tui::keys::Action;
use crate::tui::widgets::{bars, panel, truncate};
use crossterm::event::KeyEvent;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;
use std::cell::Cell;

pub const ACTIONS: &[Action] = &[
    Action::Left,
    Action::Right,
    Action::Up,
    Action::Down,
    Action::Open,
];
pub const FOOTER: &[Action] = &[Action::Left, Action::Open];

/// The three selectable counts of the last 24 hours.
pub const CHOICES: [StatusFilter; 3] = [
    StatusFilter::Completed,
    StatusFilter::Failed,
    StatusFilter::InProgress,
];

#[derive(Debug, Default)]
pub struct State {
    /// Index into [`CHOICES`].
    pub selected: usize,
    /// Where each count was drawn (for clicks).
    areas: [Cell<Rect>; 3],
}

impl State {
    pub fn handle_key(&mut self, k: &KeyEvent, cx: &mut Cx) {
        let keys = cx.keys;
        if keys.is(Action::Left, k) || keys.is(Action::Up, k) {
            self.selected = self.selected.saturating_sub(1);
        } else if keys.is(Action::Right, k) || keys.is(Action::Down, k) {
            self.selected = (self.selected + 1).min(CHOICES.len() - 1);
        } else if keys.is(Action::Open, k) {
            open(self.selected, cx);
        }
    }

    pub fn click(&mut self, x: u16, y: u16, cx: &mut Cx) {
        for (i, a) in self.areas.iter().enumerate() {
            let r = a.get();
            if x >= r.x && x < r.x + r.width && y >= r.y && y < r.y + r.height {
                self.selected = i;
                open(i, cx);
            }
        }
    }
}

/// Opens Jobs filtered to the chosen count.
fn open(i: usize, cx: &mut Cx) {
    cx.jobs_query = Some(JobsQuery {
        status: CHOICES[i],
        range: TimeRange::Day,
        ..Default::default()
    });
    cx.goto = Some(Tab::Jobs);
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let d = &app.data;
    let compact = area.height < 24;
    let [row1, row2, row3] = Layout::vertical([
        Constraint::Length(7),
        Constraint::Length(if compact { 6 } else { 9 }),
        Constraint::Min(0),
    ])
    .areas(area);
    let [items_a, jobs_a, storage_a] = Layout::horizontal([
        Constraint::Percentage(28),
        Constraint::Percentage(36),
        Constraint::Percentage(36),
    ])
    .areas(row1);

    let s = d.summary.as_deref();
    let num = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_else(|| "…".into());
    // Items.
    let attention = s.map(|s| s.needs_attention).unwrap_or(0);
    let w = items_a.width.saturating_sub(2);
    let ikv = |k: &str, v: String, style: Style| kv(k, v, style, w);
    let lines = vec![
        ikv("Protected", num(s.map(|s| s.protected)), Style::default()),
        ikv("Registered", num(s.map(|s| s.registered)), Style::default()),
        ikv(
            "Need attention",
            num(s.map(|s| s.needs_attention)),
            if attention > 0 {
                t.warning()
            } else {
                Style::default()
            },
        ),
        ikv("Discovered", d.items.len().to_string(), t.muted()),
    ];
    f.render_widget(Paragraph::new(lines).block(panel("Items", t)), items_a);

    // Jobs of the last 24 hours: three selectable counts.
    let block = panel("Jobs · last 24 hours", t);
    let inner = block.inner(jobs_a);
    f.render_widget(block, jobs_a);
    let counts = s.map(|s| s.jobs_24h);
    let values = [
        counts.map(|c| c.completed),
        counts.map(|c| c.failed),
        counts.map(|c| c.in_progress),
    ];
    let styles = [t.ok(), t.error(), t.running()];
    if inner.width >= 36 {
        // Three columns: the count large, its name below.
        let cells = Layout::horizontal([Constraint::Ratio(1, 3); 3]).split(inner);
        for i in 0..3 {
            let selected = app.dashboard.selected == i && app.popups.is_empty();
            let r = cells[i];
            app.dashboard.areas[i].set(r);
            let label_style = if selected {
                t.selected()
            } else {
                Style::default()
            };
            let mut lines = vec![
                Line::from(""),
                Line::from(Span::styled(
                    num(values[i]),
                    styles[i].add_modifier(Modifier::BOLD),
                ))
                .centered(),
                Line::from(Span::styled(
                    format!(" {} ", CHOICES[i].label()),
                    label_style,
                ))
                .centered(),
            ];
            if selected && inner.height >= 5 {
                lines.push(
                    Line::from(Span::styled(
                        format!("{} opens", app.keys.label(Action::Open)),
                        t.muted(),
                    ))
                    .centered(),
                );
            }
            f.render_widget(Paragraph::new(lines), r);
        }
    } else {
        // Narrow: one row each.
        for i in 0..3 {
            let selected = app.dashboard.selected == i && app.popups.is_empty();
            let r = Rect {
                y: inner.y + 1 + i as u16,
                height: 1,
                ..inner
            };
            if r.y >= inner.y + inner.height {
                break;
            }
            app.dashboard.areas[i].set(r);
            let label_style = if selected {
                t.selected()
            } else {
                Style::default()
            };
            let line = Line::from(vec![
                Span::styled(
                    format!(" {:>6} ", num(values[i])),
                    styles[i].add_modifier(Modifier::BOLD),
                ),
                Span::styled(format!(" {} ", CHOICES[i].label()), label_style),
            ]);
            f.render_widget(Paragraph::new(line), r);
        }
        if inner.height >= 5 {
            let r = Rect {
                y: inner.y + 4,
                height: 1,
                ..inner
            };
            f.render_widget(
                Paragraph::new(Span::styled(
                    format!(" {} opens the jobs", app.keys.label(Action::Open)),
                    t.muted(),
                )),
                r,
            );
        }
    }

    // Storage.
    let st = s.map(|s| s.storage);
    let w = storage_a.width.saturating_sub(2);
    let skv = |k: &str, v: String, style: Style| kv(k, v, style, w);
    let lines = match st {
        Some(st) => vec![
            skv(
                "Protected size",
                fmt::bytes(st.protected_bytes),
                Style::default(),
            ),
            skv("Stored size", fmt::bytes(st.stored_bytes), Style::default()),
            skv(
                "Deduplication",
                format!("{:.2}×", st.dedup_ratio),
                Style::default(),
            ),
            skv(
                "Compression",
                format!("{:.2}×", st.compression_ratio),
                Style::default(),
            ),
            skv("Recovery points", st.recovery_points.to_string(), t.muted()),
        ],
        None => vec![Line::from(Span::styled("Loading…", t.muted()))],
    };
    f.render_widget(Paragraph::new(lines).block(panel("Storage", t)), storage_a);

    // Jobs per hour.
    let total: u64 = d.jobs_per_hour.iter().map(|x| x.1).sum();
    let block = panel(format!("Jobs per hour · last 24 h · {total} jobs"), t);
    let inner = block.inner(row2);
    f.render_widget(block, row2);
    if inner.height >= 2 && !d.jobs_per_hour.is_empty() {
        let [chart, axis] =
            Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(inner);
        let values: Vec<u64> = d.jobs_per_hour.iter().map(|x| x.1).collect();
        let max = values.iter().copied().max().unwrap_or(0);
        // Bars as wide as fit: 24 bars with one column of gap.
        let label_w = max.to_string().len() as u16 + 1;
        let chart = Rect {
            x: chart.x + label_w,
            width: chart.width.saturating_sub(label_w),
            ..chart
        };
        let bar_w = ((chart.width + 1) / 24).saturating_sub(1).max(1);
        let gap = if (bar_w + 1) * 24 <= chart.width + 1 {
            1
        } else {
            0
        };
        bars::draw(f.buffer_mut(), chart, &values, None, bar_w, gap, t.accent());
        let ymax = Rect {
            x: inner.x,
            y: inner.y,
            width: label_w,
            height: 1,
        };
        f.render_widget(
            Paragraph::new(Span::styled(max.to_string(), t.muted())),
            ymax,
        );
        // Hour labels every 6 bars.
        let step = bar_w + gap;
        let mut axis_line = String::new();
        for (i, (h, _)) in d.jobs_per_hour.iter().enumerate() {
            if i % 6 == 0 {
                let x = (i as u16 * step) as usize;
                while axis_line.chars().count() < x {
                    axis_line.push(' ');
                }
                axis_line.push_str(&h.format("%H:00").to_string());
            }
        }
        let axis = Rect {
            x: axis.x + label_w,
            width: axis.width.saturating_sub(label_w),
            ..axis
        };
        f.render_widget(Paragraph::new(Span::styled(axis_line, t.muted())), axis);
    }

    // Upcoming backups and recent failures.
    let [up_a, fail_a] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(row3);
    let block = panel("Upcoming scheduled backups", t);
    let inner = block.inner(up_a);
    f.render_widget(block, up_a);
    let w = inner.width as usize;
    let lines: Vec<Line> = if d.upcoming.is_empty() {
        vec![Line::from(Span::styled(
            "No backups scheduled: protect items to schedule them",
            t.muted(),
        ))]
    } else {
        d.upcoming
            .iter()
            .take(inner.height as usize)
            .map(|u| {
                let time = fmt::time(u.time);
                let rest = w.saturating_sub(time.len() + 1);
                Line::from(vec![
                    Span::styled(time, t.accent()),
                    Span::raw(" "),
                    Span::raw(truncate(&format!("{} ({})", u.item, u.policy), rest)),
                ])
            })
            .collect()
    };
    f.render_widget(Paragraph::new(lines), inner);

    let block = panel("Recent failures · 7 days", t);
    let inner = block.inner(fail_a);
    f.render_widget(block, fail_a);
    let w = inner.width as usize;
    let lines: Vec<Line> = if d.recent_failures.is_empty() {
        vec![Line::from(Span::styled("No failed jobs", t.ok()))]
    } else {
        d.recent_failures
            .iter()
            .take(inner.height as usize)
            .map(|j| {
                let time = fmt::time(j.start_time);
                let code = j.error.as_ref().map(|e| e.code.as_str()).unwrap_or("");
                let rest = w.saturating_sub(time.len() + 1);
                Line::from(vec![
                    Span::styled(time, t.error()),
                    Span::raw(" "),
                    Span::raw(truncate(
                        &format!("{} {} {code}", j.operation, j.item),
                        rest,
                    )),
                ])
            })
            .collect()
    };
    f.render_widget(Paragraph::new(lines), inner);
}

/// A label and its value in a panel `width` wide (inside the borders). The value is never
/// cut: the label gives way first (shortened with "…", then dropped).
fn kv(k: &str, v: String, style: Style, width: u16) -> Line<'static> {
    let width = width as usize;
    let value_len = v.chars().count();
    let room = width.saturating_sub(value_len + 2); // a space before and after the label
    let label = if k.chars().count() <= room {
        format!(" {k:<w$} ", w = room.min(15))
    } else if room >= 3 {
        let cut: String = k.chars().take(room - 1).collect();
        format!(" {cut}… ")
    } else {
        " ".repeat(width.saturating_sub(value_len).min(1))
    };
    Line::from(vec![
        Span::raw(label),
        Span::styled(v, style.add_modifier(ratatui::style::Modifier::BOLD)),
    ])
}
