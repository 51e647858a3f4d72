//! Jobs: the newest jobs matching the filters (status, operation, time range, item text),
//! running ones with a live progress bar. Enter opens a job's details, `c` cancels.

use super::{list_title, Sort, SortValue};
use crate::fmt;
use crate::model::*;
use crate::tui::app::{short_id, App, Command, Cx, Effect};
use crate::tui::data::{Data, JobsQuery, JOB_WINDOW};
use crate::tui::keys::Action;
use crate::tui::popups::{self, Popup};
use crate::tui::widgets::text::fit_line;
use crate::tui::widgets::{
    panel, progress::progress_line, render_table, table::cell, Column, FilterInput, FilterKey,
    TableNav,
};
use crossterm::event::KeyEvent;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;
use std::collections::HashMap;

pub const ACTIONS: &[Action] = &[
    Action::Open,
    Action::CancelJob,
    Action::FilterStatus,
    Action::FilterOperation,
    Action::FilterTime,
    Action::Filter,
    Action::ClearFilters,
    Action::Up,
    Action::Down,
    Action::PageUp,
    Action::PageDown,
    Action::Top,
    Action::Bottom,
    Action::Sort,
    Action::SortReverse,
];

const COLUMNS: [&str; 6] = [
    "Operation",
    "Item",
    "Status",
    "Start",
    "Duration",
    "Progress",
];

/// What the progress column of a wide list wants: a bar, the percent, the rate and the
/// time left (`▍░░░  38%  85.0 MiB/s  1m 20s left`).
const PROGRESS_WANTS: u16 = 34;
/// The item's name keeps at least this much when the progress column takes its share.
const ITEM_MIN: u16 = 16;

/// Operations offered by the operation filter, in the order `o` cycles through them.
const OPERATIONS: [JobOperation; 11] = [
    JobOperation::Backup,
    JobOperation::Restore,
    JobOperation::Register,
    JobOperation::ConfigureBackup,
    JobOperation::Discover,
    JobOperation::DisableBackup,
    JobOperation::DeleteBackupData,
    JobOperation::Undelete,
    JobOperation::Prune,
    JobOperation::Verify,
    JobOperation::GarbageCollect,
];

#[derive(Debug, Default)]
pub struct State {
    pub nav: TableNav,
    pub query: JobsQuery,
    pub filter: FilterInput,
    pub sort: Sort,
    /// Row order (indices into the loaded window).
    pub order: Vec<usize>,
    built: Option<(u64, Sort)>,
    selected_id: Option<String>,
    /// While a drill-down (`J`, a dashboard count) shows its own filter: the query the
    /// user had set, which comes back when they return to the tab on their own.
    own: Option<JobsQuery>,
}

impl State {
    pub fn set_query(&mut self, q: JobsQuery) {
        self.filter.set(q.item_text.clone());
        self.query = q;
        self.nav.selected = 0;
        self.selected_id = None;
    }

    /// Shows what a drill-down asks for, keeping the user's own filter to come back to.
    pub fn drill_down(&mut self, q: JobsQuery) {
        if self.own.is_none() {
            self.own = Some(self.query.clone());
        }
        self.set_query(q);
    }

    /// The user comes to the tab on their own: a drill-down's filter gives way to theirs
    /// (returned, to be loaded).
    pub fn come_back(&mut self) -> Option<JobsQuery> {
        let own = self.own.take()?;
        self.set_query(own.clone());
        Some(own)
    }

    /// A drill-down's filter is shown (not one the user set).
    pub fn drilled_down(&self) -> bool {
        self.own.is_some()
    }

    pub fn refresh(&mut self, data: &Data) {
        let k = (data.generation, self.sort);
        if self.built == Some(k) {
            return;
        }
        let rows = &data.jobs.rows;
        let mut order: Vec<usize> = (0..rows.len()).collect();
        if let Some(c) = self.sort.column {
            let now = data.now;
            let mut keyed: Vec<(SortValue, usize)> = order
                .iter()
                .map(|n| {
                    let j = &rows[*n];
                    let key = match c {
                        0 => SortValue::Text(j.operation.to_string()),
                        1 => SortValue::Text(j.item.to_lowercase()),
                        2 => SortValue::Text(j.status.to_string()),
                        3 => SortValue::Time(Some(j.start_time)),
                        4 => SortValue::Num(j.duration(now).num_milliseconds()),
                        _ => SortValue::Num((j.progress() * 1000.0) as i64),
                    };
                    (key, *n)
                })
                .collect();
            keyed.sort();
            order = keyed.into_iter().map(|(_, n)| n).collect();
        }
        if self.sort.reverse {
            order.reverse();
        }
        self.order = order;
        if let Some(id) = &self.selected_id {
            if let Some(p) = self.order.iter().position(|n| rows[*n].id == *id) {
                self.nav.selected = p;
            }
        }
        self.nav.clamp(self.order.len());
        self.built = Some(k);
    }

    fn selected<'a>(&self, data: &'a Data) -> Option<&'a Job> {
        self.order
            .get(self.nav.selected)
            .and_then(|n| data.jobs.rows.get(*n))
    }

    fn remember(&mut self, data: &Data) {
        self.selected_id = self.selected(data).map(|j| j.id.clone());
    }

    pub fn capturing_text(&self) -> bool {
        self.filter.typing
    }

    pub fn footer(&self, data: &Data, running: &HashMap<String, Job>) -> Vec<Action> {
        if self.filter.typing {
            return vec![Action::Open, Action::Back];
        }
        let mut v = vec![Action::Open];
        // Cancel only where the selected job can be cancelled (its live status if it runs).
        if self.selected(data).is_some_and(|j| {
            running.get(&j.id).map_or(j.status, |r| r.status) == JobStatus::InProgress
        }) {
            v.push(Action::CancelJob);
        }
        // With a filter set, clearing it matters more than setting another.
        if self.query.is_filtered()
            || self.query.range != JobsQuery::default().range
            || !self.filter.value().is_empty()
        {
            v.push(Action::ClearFilters);
        }
        v.extend([
            Action::FilterStatus,
            Action::FilterOperation,
            Action::FilterTime,
            Action::Filter,
        ]);
        v
    }

    /// A larger window when the selection nears the end of the loaded one.
    fn grow_window(&mut self, data: &Data) -> Option<JobsQuery> {
        let loaded = data.jobs.rows.len();
        if (data.jobs.total as usize) > loaded
            && self.nav.selected + 50 >= loaded
            && data.jobs.query.limit <= loaded
        {
            let mut q = self.query.clone();
            q.limit = loaded + JOB_WINDOW;
            self.query = q.clone();
            return Some(q);
        }
        None
    }

    /// The user changes the filter: what is shown is theirs from now on.
    fn new_filter(&mut self, cx: &mut Cx, f: impl FnOnce(&mut JobsQuery)) {
        self.own = None;
        let mut q = self.query.clone();
        f(&mut q);
        q.limit = JOB_WINDOW;
        self.nav.selected = 0;
        self.selected_id = None;
        self.query = q.clone();
        cx.effects.push(crate::tui::app::Effect::Jobs(q));
    }

    pub fn handle_key(&mut self, k: &KeyEvent, cx: &mut Cx) {
        let keys = cx.keys;
        let len = self.order.len();
        if self.filter.handle(k) == FilterKey::Used {
            let text = self.filter.value().to_string();
            if text != self.query.item_text {
                self.new_filter(cx, |q| q.item_text = text);
            }
            return;
        }
        if self.nav.navigate(keys, k, len) {
        } else if keys.is(Action::Sort, k) {
            self.remember(cx.data);
            self.sort.next(COLUMNS.len());
            self.refresh(cx.data);
            return;
        } else if keys.is(Action::SortReverse, k) {
            self.remember(cx.data);
            self.sort.reverse = !self.sort.reverse;
            self.refresh(cx.data);
            return;
        } else if keys.is(Action::Filter, k) {
            self.filter.start();
            return;
        } else if keys.is(Action::FilterStatus, k) {
            self.new_filter(cx, |q| q.status = q.status.next());
            return;
        } else if keys.is(Action::FilterOperation, k) {
            self.new_filter(cx, |q| {
                q.operation = match q.operation {
                    None => Some(OPERATIONS[0]),
                    Some(op) => OPERATIONS
                        .iter()
                        .position(|o| *o == op)
                        .and_then(|i| OPERATIONS.get(i + 1))
                        .copied(),
                }
            });
            return;
        } else if keys.is(Action::FilterTime, k) {
            self.new_filter(cx, |q| q.range = q.range.next());
            return;
        } else if keys.is(Action::ClearFilters, k) {
            self.filter.set("");
            self.new_filter(cx, |q| *q = JobsQuery::default());
            return;
        } else if keys.is(Action::Open, k) {
            if let Some(j) = self.selected(cx.data) {
                cx.push(Popup::Job(Box::new(popups::job::State::new(j.id.clone()))));
            }
            return;
        } else if keys.is(Action::CancelJob, k) {
            if let Some(j) = self.selected(cx.data) {
                cancel(j, cx);
            }
            return;
        } else {
            return;
        }
        self.remember(cx.data);
        if let Some(q) = self.grow_window(cx.data) {
            cx.effects.push(crate::tui::app::Effect::Jobs(q));
        }
    }

    /// Mouse wheel; returns a new query when the window should grow.
    pub fn scroll(&mut self, down: bool, data: &Data) -> Option<JobsQuery> {
        let len = self.order.len();
        self.nav.scroll(down, 3, len);
        self.remember(data);
        self.grow_window(data)
    }

    pub fn click(&mut self, x: u16, y: u16, cx: &mut Cx) {
        if let Some(i) = self.nav.row_at(x, y, self.order.len()) {
            if i == self.nav.selected {
                if let Some(j) = self.selected(cx.data) {
                    cx.push(Popup::Job(Box::new(popups::job::State::new(j.id.clone()))));
                }
            }
            self.nav.selected = i;
            self.remember(cx.data);
        }
    }
}

/// Asks to cancel a job, or says why it cannot be.
pub fn cancel(j: &Job, cx: &mut Cx) {
    let running = cx.running.get(&j.id).map(|r| r.status).unwrap_or(j.status);
    if !running.is_active() {
        cx.notice = Some((
            crate::engine::NoticeLevel::Warning,
            format!(
                "Job {} is {}; only running jobs can be cancelled",
                short_id(&j.id),
                j.status
            ),
        ));
        return;
    }
    if running == JobStatus::Cancelling {
        cx.notice = Some((
            crate::engine::NoticeLevel::Info,
            format!("Job {} is being cancelled already", short_id(&j.id)),
        ));
        return;
    }
    if cx.writable("Cancel") {
        // Cancelling throws away the work done so far: ask first.
        let mut lines = vec![format!("Cancel the {} of {}?", j.operation, j.item)];
        lines.push(format!(
            "Job {} started {} UTC; it is recorded as Cancelled.",
            short_id(&j.id),
            crate::fmt::time(j.start_time)
        ));
        if j.operation == JobOperation::Backup {
            lines.push("A cancelled backup creates no recovery point.".into());
        }
        cx.push(Popup::Confirm(
            popups::confirm::State::new(
                "Cancel job",
                lines,
                vec![Effect::Run(Command::CancelJob(j.id.clone()))],
                false,
            )
            .keep_below(),
        ));
    }
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let s = &app.jobs;
    let t = &app.theme;
    let [top, body] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    let q = &s.query;
    let label = |k: Action| app.keys.label(k);
    let window = &app.data.jobs;
    // A filter in force stands out; the defaults stay quiet.
    let default = JobsQuery::default();
    let value = |text: String, active: bool| {
        Span::styled(
            text,
            if active {
                t.warning().add_modifier(Modifier::BOLD)
            } else {
                t.accent()
            },
        )
    };
    let mut spans = vec![Span::raw(" ")];
    if !q.job_ids.is_empty() {
        spans.push(value(
            format!("Jobs of the notification ({})", q.job_ids.len()),
            true,
        ));
        spans.push(Span::raw("  "));
    }
    spans.extend([
        Span::styled(label(Action::FilterStatus), t.key()),
        Span::raw(" Status: "),
        value(q.status.label().into(), q.status != default.status),
        Span::raw("  "),
        Span::styled(label(Action::FilterOperation), t.key()),
        Span::raw(" Operation: "),
        value(
            q.operation.map(|o| o.as_str()).unwrap_or("any").into(),
            q.operation.is_some(),
        ),
        Span::raw("  "),
        Span::styled(label(Action::FilterTime), t.key()),
        Span::raw(" Time: "),
        value(q.range.label().into(), q.range != default.range),
    ]);
    if let Some(f) = s.filter.shown() {
        spans.push(Span::raw("  "));
        spans.push(Span::styled(label(Action::Filter), t.key()));
        spans.push(Span::raw(" Item: "));
        spans.push(value(format!("\"{f}\""), true));
    }
    f.render_widget(
        Paragraph::new(fit_line(Line::from(spans), top.width as usize)),
        top,
    );

    let wide = area.width >= 110;
    let mut cols = vec![
        Column::new(COLUMNS[0], Constraint::Length(16)),
        Column::new(COLUMNS[1], Constraint::Fill(1)),
        Column::new(COLUMNS[2], Constraint::Length(21)),
    ];
    if wide {
        cols.push(Column::new(COLUMNS[3], Constraint::Length(16)));
    }
    cols.push(Column::new(COLUMNS[4], Constraint::Length(8)));
    // Narrow: a running job's progress bar takes the place of its status. Wide: the bar
    // with its rate and time left, as long as the item keeps room for its name.
    if wide {
        let fixed: u16 = cols
            .iter()
            .map(|c| match c.width {
                Constraint::Length(n) => n,
                _ => 0,
            })
            .sum::<u16>()
            + cols.len() as u16
            + 2;
        let rest = area.width.saturating_sub(fixed);
        let progress = (rest / 2).max(PROGRESS_WANTS.min(rest.saturating_sub(ITEM_MIN)));
        cols.push(Column::new(COLUMNS[5], Constraint::Length(progress)));
    }
    let shown = s.order.len();
    let mut title = list_title(
        "Jobs",
        shown,
        window.total as usize,
        &FilterInput::default(),
        s.sort,
        &COLUMNS,
    );
    if (window.total as usize) > shown {
        title = format!(
            "Jobs (newest {shown} of {}){}",
            window.total,
            title.split_once(')').map(|x| x.1).unwrap_or("")
        );
    }
    // Whatever hides jobs is said where the eye is, with the way out.
    let filters = q.describe();
    if !filters.is_empty() {
        title.push_str(&format!(
            " · filtered: {} · {} clears",
            filters.join(", "),
            label(Action::ClearFilters)
        ));
    }
    let empty = if !app.data.loaded {
        "Loading…".to_string()
    } else if q.is_filtered() || q.range != crate::tui::data::TimeRange::All {
        format!(
            "No jobs match ({}); {} clears the filters",
            q.range.label(),
            label(Action::ClearFilters)
        )
    } else {
        "No jobs yet".to_string()
    };
    let now = app.now;
    let rows = &window.rows;
    render_table(
        f,
        body,
        panel(
            crate::tui::widgets::truncate(&title, body.width.saturating_sub(4) as usize),
            t,
        ),
        &cols,
        &s.nav,
        shown,
        true,
        t,
        &empty,
        |n, widths| {
            let row = &rows[s.order[n]];
            // Status and progress as they stand now (the snapshot may lag the events).
            let live = app.job_now(row);
            let j = live.job;
            let status = j.status;
            let width = |c: usize| widths.get(c).copied().unwrap_or(0) as usize;
            let mut cells = vec![
                cell(j.operation.to_string(), Default::default()),
                cell(j.item.clone(), Default::default()),
                if !wide && status == JobStatus::InProgress {
                    progress_line(live.progress, width(2), t)
                } else {
                    cell(status.to_string(), t.job_status(status))
                },
            ];
            if wide {
                cells.push(cell(fmt::time(j.start_time), Default::default()));
            }
            let end = if status.is_active() { None } else { j.end_time };
            cells.push(cell(
                fmt::duration(end.unwrap_or(now.max(j.start_time)) - j.start_time),
                Default::default(),
            ));
            if wide {
                cells.push(if status.is_active() {
                    progress_line(live.progress, width(5), t)
                } else {
                    match (&j.error, status) {
                        (Some(e), JobStatus::Failed) => {
                            Line::from(Span::styled(e.code.clone(), t.error()))
                        }
                        (_, JobStatus::Completed | JobStatus::CompletedWithWarnings)
                            if j.bytes_total > 0 =>
                        {
                            Line::from(Span::styled(fmt::bytes(j.bytes_done), t.muted()))
                        }
                        _ => Line::from(""),
                    }
                });
            }
            cells
        },
    );
}
