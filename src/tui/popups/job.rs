//! A job's details: operation, item, status, times, bytes and rate, its tasks with their
//! status, and on failure the error code, message and recommendations. `c` cancels it
//! while it runs.

use crate::fmt;
use crate::model::*;
use crate::tui::app::{App, Cx, Effect};
use crate::tui::keys::Action;
use crate::tui::widgets::text::wrapped;
use crate::tui::widgets::{key_hints, popup_frame, progress::progress_line, wizard};
use crossterm::event::KeyEvent;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

#[derive(Debug)]
pub struct State {
    id: String,
    pub job: Option<Job>,
    pub error: Option<String>,
    pub scroll: u16,
    requested: bool,
}

impl State {
    pub fn new(id: String) -> State {
        State {
            id,
            job: None,
            error: None,
            scroll: 0,
            requested: false,
        }
    }

    /// A job already loaded (tests, or from an event).
    pub fn with_job(job: Job) -> State {
        State {
            id: job.id.clone(),
            job: Some(job),
            error: None,
            scroll: 0,
            requested: true,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn wants(&mut self) -> Vec<Effect> {
        if self.requested {
            return vec![];
        }
        self.requested = true;
        vec![Effect::LoadJob(self.id.clone())]
    }

    pub fn loaded(&mut self, r: &Result<Job, String>) {
        match r {
            Ok(j) if j.id == self.id || j.id.starts_with(&self.id) => {
                self.id = j.id.clone();
                self.job = Some(j.clone());
                self.error = None;
            }
            Ok(_) => {}
            Err(e) => {
                if self.job.is_none() {
                    self.error = Some(e.clone());
                }
            }
        }
    }

    pub fn job_updated(&mut self, j: &Job) {
        if j.id == self.id {
            self.job = Some(j.clone());
        }
    }

    /// The job can still be cancelled (as far as this popup knows).
    pub fn cancellable(&self) -> bool {
        self.job
            .as_ref()
            .is_some_and(|j| j.status.is_active() && j.status != JobStatus::Cancelling)
    }

    /// The keys the footer shows: `c` only while the job can be cancelled.
    pub fn footer(&self) -> Vec<Action> {
        if self.cancellable() {
            vec![Action::Up, Action::CancelJob, Action::Back]
        } else {
            vec![Action::Up, Action::Back]
        }
    }

    pub fn handle_key(&mut self, k: &KeyEvent, cx: &mut Cx) {
        let keys = cx.keys;
        if keys.is(Action::Back, k) {
            cx.close();
        } else if keys.is(Action::Up, k) {
            self.scroll = self.scroll.saturating_sub(1);
        } else if keys.is(Action::Down, k) {
            self.scroll = self.scroll.saturating_add(1);
        } else if keys.is(Action::CancelJob, k) {
            if let Some(j) = &self.job {
                crate::tui::tabs::jobs::cancel(j, cx);
            }
        } else if keys.is(Action::Refresh, k) {
            // Load it again (after a load error, or to be sure it is current).
            self.error = None;
            cx.effects.push(Effect::LoadJob(self.id.clone()));
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, app: &App) {
        let t = &app.theme;
        let popup = wizard::area(area);
        let inner = popup_frame(
            f,
            popup,
            &format!("Job {}", crate::tui::app::short_id(&self.id)),
            t,
        );
        let [body, foot] =
            Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(inner);
        let k = &app.keys;
        let mut hints = vec![("↑/↓".into(), "scroll"), (k.label(Action::Back), "close")];
        if self.cancellable() {
            hints.insert(0, (k.label(Action::CancelJob), "cancel job"));
        }
        f.render_widget(Paragraph::new(key_hints(&hints, t)), foot);
        let Some(loaded) = &self.job else {
            let msg = match &self.error {
                Some(e) => format!("{e}\n\nPress {} to try again.", k.label(Action::Refresh)),
                None => "Loading…".into(),
            };
            f.render_widget(
                wrapped(msg.lines().map(Line::from).collect(), body.width).style(t.muted()),
                body,
            );
            return;
        };
        // As it stands now: the loaded record may be older than the job's end or progress
        // (its tasks and details are kept when the newer record has none).
        let live = app.job_now(loaded);
        let mut newer = live.job.clone();
        if newer.tasks.is_empty() {
            newer.tasks = loaded.tasks.clone();
        }
        if newer.details.is_empty() {
            newer.details = loaded.details.clone();
        }
        let j = &newer;
        let kv = |k: &str, v: Span<'static>| {
            Line::from(vec![Span::styled(format!("{k:<14}"), t.header()), v])
        };
        let now = app.now;
        let mut lines = vec![
            kv("Operation", Span::raw(j.operation.to_string())),
            kv("Item", Span::raw(j.item.clone())),
            kv(
                "Status",
                Span::styled(j.status.to_string(), t.job_status(j.status)),
            ),
            kv(
                "Started",
                Span::raw(format!(
                    "{} UTC{}",
                    fmt::time(j.start_time),
                    if j.is_user_triggered {
                        ""
                    } else {
                        " · scheduled"
                    }
                )),
            ),
            kv(
                "Duration",
                Span::raw(format!(
                    "{}{}",
                    fmt::duration(j.end_time.unwrap_or(now.max(j.start_time)) - j.start_time),
                    j.end_time
                        .map(|e| format!(" · ended {} UTC", fmt::time(e)))
                        .unwrap_or_default()
                )),
            ),
            kv("Job id", Span::styled(j.id.clone(), t.muted())),
        ];
        let p = live.progress;
        if p.total > 0 || live.task.is_some() {
            lines.push(kv(
                "Data",
                Span::raw(format!("{} of {}", fmt::bytes(p.done), fmt::bytes(p.total))),
            ));
        }
        if j.status.is_active() {
            let mut l = vec![Span::styled(format!("{:<14}", "Progress"), t.header())];
            l.extend(progress_line(p, (body.width as usize).saturating_sub(16), t).spans);
            lines.push(Line::from(l));
            if let Some(task) = live.task {
                lines.push(kv("Now", Span::raw(task.to_string())));
            }
        } else if let (Some(end), true) = (j.end_time, j.bytes_done > 0) {
            let secs = (end - j.start_time).num_milliseconds() as f64 / 1000.0;
            if secs > 0.0 {
                lines.push(kv(
                    "Average rate",
                    Span::raw(fmt::rate(j.bytes_done as f64 / secs)),
                ));
            }
        }
        lines.push(Line::from(""));
        lines.push(Line::from(Span::styled("Tasks", t.header())));
        if j.tasks.is_empty() {
            lines.push(Line::from(Span::styled("  (loading…)", t.muted())));
        }
        for task in &j.tasks {
            let style = match task.status {
                TaskStatus::Completed => t.ok(),
                TaskStatus::Failed => t.error(),
                TaskStatus::InProgress => t.running(),
                TaskStatus::Cancelled | TaskStatus::Skipped | TaskStatus::NotStarted => t.muted(),
            };
            let dur = match (task.start_time, task.end_time) {
                (Some(s), Some(e)) => fmt::duration(e - s),
                (Some(s), None) => fmt::duration(now.max(s) - s),
                _ => String::new(),
            };
            let bytes = if task.bytes_total > 0 {
                format!(
                    "  {} of {}",
                    fmt::bytes(task.bytes_done),
                    fmt::bytes(task.bytes_total)
                )
            } else {
                String::new()
            };
            lines.push(Line::from(vec![
                Span::raw(format!("  {:<26}", task.name)),
                Span::styled(format!("{:<12}", task.status.to_string()), style),
                Span::styled(format!("{dur:>8}{bytes}"), t.muted()),
            ]));
        }
        if let Some(e) = &j.error {
            lines.push(Line::from(""));
            let style = if j.status == JobStatus::Failed {
                t.error()
            } else {
                t.warning()
            };
            lines.push(Line::from(Span::styled("Error", t.header())));
            lines.push(kv("Code", Span::styled(e.code.clone(), style)));
            lines.push(kv("Title", Span::raw(e.title.clone())));
            lines.push(kv("Message", Span::raw(e.message.clone())));
            for r in &e.recommendations {
                lines.push(Line::from(vec![
                    Span::styled(format!("{:<14}", "Recommended"), t.header()),
                    Span::raw(format!("→ {r}")),
                ]));
            }
        }
        if !j.details.is_empty() {
            lines.push(Line::from(""));
            lines.push(Line::from(Span::styled("Details", t.header())));
            for (key, v) in &j.details {
                let (label, values) = fmt::job_detail(key, v);
                for (n, text) in values.into_iter().enumerate() {
                    let label = if n == 0 { label.as_str() } else { "" };
                    lines.push(Line::from(vec![
                        Span::styled(format!("  {label:<18}"), t.muted()),
                        Span::raw(text),
                    ]));
                }
            }
        }
        f.render_widget(wrapped(lines, body.width).scroll((self.scroll, 0)), body);
    }
}
