//! An item's details: its facts, state and last error, and its recovery points (time,
//! kind, expiry, size, consistency), with the item's actions: restore (`R`), back up now
//! (`b`), stop protection (`s`), resume (`u`), undelete (`U`).

use super::{backup_now, restore, resume, stop, Popup};
use crate::fmt;
use crate::model::*;
use crate::tui::app::{App, Cx, Effect};
use crate::tui::data::Data;
use crate::tui::keys::Action;
use crate::tui::widgets::text::wrapped;
use crate::tui::widgets::{
    key_hints, panel, popup_frame, render_table, table::cell, wizard, Column, TableNav,
};
use crossterm::event::KeyEvent;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

#[derive(Debug)]
pub struct State {
    pub item: Item,
    /// None until loaded.
    pub points: Option<Vec<RecoveryPoint>>,
    pub error: Option<String>,
    pub nav: TableNav,
    requested: bool,
}

impl State {
    pub fn new(item: Item) -> State {
        State {
            item,
            points: None,
            error: None,
            nav: TableNav::default(),
            requested: false,
        }
    }

    pub fn item_id(&self) -> &str {
        &self.item.id
    }

    pub fn wants(&mut self) -> Vec<Effect> {
        if self.requested {
            return vec![];
        }
        self.requested = true;
        vec![Effect::LoadPoints(self.item.id.clone())]
    }

    pub fn points_loaded(&mut self, item_id: &str, r: &Result<Vec<RecoveryPoint>, String>) {
        if item_id != self.item.id {
            return;
        }
        match r {
            Ok(p) => {
                // Newest first.
                let mut p = p.clone();
                p.sort_by_key(|b| std::cmp::Reverse(b.time));
                self.nav.clamp(p.len());
                self.points = Some(p);
                self.error = None;
            }
            Err(e) => self.error = Some(e.clone()),
        }
    }

    /// A new snapshot: the item's fresh state.
    pub fn refresh(&mut self, data: &Data) {
        if let Some(i) = data.items.iter().find(|i| i.id == self.item.id) {
            self.item = i.clone();
        }
    }

    pub fn selected_point(&self) -> Option<&RecoveryPoint> {
        self.points.as_ref().and_then(|p| p.get(self.nav.selected))
    }

    pub fn footer(&self) -> Vec<Action> {
        let mut v = vec![];
        if self.item.protection_state != ProtectionState::SoftDeleted {
            v.push(Action::Restore);
        }
        if self.item.protection_state.is_under_policy() {
            v.push(Action::BackupNow);
        }
        match self.item.protection_state {
            s if s.is_under_policy() => v.push(Action::StopProtection),
            ProtectionState::ProtectionStopped => {
                v.extend([Action::ResumeProtection, Action::StopProtection])
            }
            ProtectionState::SoftDeleted => v.push(Action::Undelete),
            _ => {}
        }
        v.push(Action::Back);
        v
    }

    pub fn handle_key(&mut self, k: &KeyEvent, cx: &mut Cx) {
        let keys = cx.keys;
        let len = self.points.as_ref().map(|p| p.len()).unwrap_or(0);
        if keys.is(Action::Back, k) {
            cx.close();
        } else if self.nav.navigate(keys, k, len) {
        } else if keys.is(Action::Restore, k) {
            if self.item.protection_state == ProtectionState::SoftDeleted {
                cx.notice = Some((
                    crate::engine::NoticeLevel::Warning,
                    format!(
                        "{}: its backup data is soft-deleted — press {} to undelete it, then restore",
                        self.item.qualified_name(),
                        keys.label(Action::Undelete)
                    ),
                ));
                return;
            }
            let Some(points) = self.points.clone().filter(|p| !p.is_empty()) else {
                cx.notice = Some((
                    crate::engine::NoticeLevel::Warning,
                    format!(
                        "{} has no recovery points to restore",
                        self.item.qualified_name()
                    ),
                ));
                return;
            };
            if cx.writable("Restore") {
                cx.push(Popup::Restore(Box::new(restore::State::new(
                    self.item.clone(),
                    points,
                    self.nav.selected,
                    cx.cwd,
                ))));
            }
        } else if keys.is(Action::BackupNow, k) {
            if let Some(why) = backup_now::refusal(&self.item, cx, true) {
                cx.notice = Some((crate::engine::NoticeLevel::Warning, why));
            } else if cx.writable("Back up now") {
                cx.push(Popup::BackupNow(backup_now::State::new(
                    self.item.clone(),
                    cx.now,
                )));
            }
        } else if keys.is(Action::StopProtection, k) {
            let s = self.item.protection_state;
            if s.is_under_policy() || s == ProtectionState::ProtectionStopped {
                if cx.writable("Stop protection") {
                    cx.push(Popup::Stop(stop::State::new(self.item.clone(), len)));
                }
            } else {
                cx.notice = Some((
                    crate::engine::NoticeLevel::Warning,
                    format!(
                        "{} is {}: there is no protection to stop",
                        self.item.qualified_name(),
                        s.label().to_lowercase()
                    ),
                ));
            }
        } else if keys.is(Action::ResumeProtection, k) {
            if matches!(
                self.item.protection_state,
                ProtectionState::ProtectionStopped | ProtectionState::BackupsSuspended
            ) {
                if cx.writable("Resume protection") {
                    let policies = cx
                        .data
                        .policies
                        .iter()
                        .map(|p| {
                            (
                                p.policy.name.clone(),
                                p.policy.describe().into_iter().next().unwrap_or_default(),
                            )
                        })
                        .collect();
                    cx.push(Popup::Resume(resume::State::new(
                        self.item.clone(),
                        policies,
                        cx.data
                            .previous_policy
                            .get(&self.item.id)
                            .map(String::as_str),
                    )));
                }
            } else {
                cx.notice = Some((
                    crate::engine::NoticeLevel::Warning,
                    format!(
                        "Resume applies to stopped protection; {} is {}",
                        self.item.qualified_name(),
                        self.item.protection_state.label().to_lowercase()
                    ),
                ));
            }
        } else if keys.is(Action::Undelete, k) {
            if self.item.protection_state == ProtectionState::SoftDeleted {
                if cx.writable("Undelete") {
                    cx.run(crate::tui::app::Command::Undelete(Box::new(
                        self.item.clone(),
                    )));
                }
            } else {
                cx.notice = Some((
                    crate::engine::NoticeLevel::Warning,
                    format!("{} is not soft-deleted", self.item.qualified_name()),
                ));
            }
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, app: &App) {
        let t = &app.theme;
        let i = &self.item;
        let popup = wizard::area(area);
        let inner = popup_frame(f, popup, &format!("{} · {}", i.name, i.cloud_service), t);
        let facts_h = if inner.height >= 20 { 8 } else { 6 };
        let [facts, points_a, foot] = Layout::vertical([
            Constraint::Length(facts_h),
            Constraint::Min(3),
            Constraint::Length(1),
        ])
        .areas(inner);
        let disks: Vec<String> = i
            .disks
            .iter()
            .map(|d| format!("{} {}", d.name, fmt::bytes(d.capacity)))
            .collect();
        let kv = |k: &str, v: Span<'static>| {
            Line::from(vec![Span::styled(format!("{k:<18}"), t.header()), v])
        };
        let mut lines = vec![
            kv(
                "Protection",
                Span::styled(
                    format!(
                        "{}{}",
                        i.protection_state.label(),
                        i.policy
                            .as_ref()
                            .map(|p| format!(" · policy {p}"))
                            .unwrap_or_default()
                    ),
                    t.protection_state(i.protection_state),
                ),
            ),
            kv(
                "Last backup",
                match (i.last_backup_time, i.last_backup_status) {
                    (Some(tm), Some(s)) => {
                        Span::styled(format!("{} UTC · {s}", fmt::time(tm)), t.job_status(s))
                    }
                    _ => Span::styled("none yet", t.muted()),
                },
            ),
            kv(
                "Next backup",
                Span::raw(
                    app.data
                        .next_backup
                        .get(&i.id)
                        .map(|x| format!("{} UTC", fmt::time(*x)))
                        .unwrap_or_else(|| "—".into()),
                ),
            ),
            kv(
                "VM",
                Span::raw(format!(
                    "{} · {} · {} · {}",
                    i.region, i.os, i.size, i.power_state
                )),
            ),
            kv("Disks", Span::raw(disks.join(", "))),
        ];
        if let Some(p) = i.purge_at {
            let when = if p > app.now {
                format!(
                    "{} UTC · {} undeletes it until then",
                    fmt::time(p),
                    app.keys.label(Action::Undelete)
                )
            } else {
                format!("{} UTC · at the next clean-up", fmt::time(p))
            };
            lines.push(kv("Will be purged", Span::styled(when, t.warning())));
        }
        if let Some(e) = &i.last_error {
            lines.push(kv(
                "Last error",
                Span::styled(format!("{}: {}", e.code, e.message), t.error()),
            ));
            for r in &e.recommendations {
                lines.push(Line::from(Span::styled(
                    format!("{:18}→ {r}", ""),
                    t.muted(),
                )));
            }
        }
        f.render_widget(wrapped(lines, facts.width), facts);

        let cols = [
            Column::new("Time (UTC)", Constraint::Length(16)),
            Column::new("Kind", Constraint::Length(9)),
            Column::new("Expiry", Constraint::Length(16)),
            Column::new("Size", Constraint::Length(10)),
            Column::new("Consistency", Constraint::Fill(1)),
        ];
        let (len, empty) = match (&self.points, &self.error) {
            (_, Some(e)) => (0, e.clone()),
            (None, _) => (0, "Loading recovery points…".to_string()),
            (Some(p), _) => (
                p.len(),
                format!(
                    "No recovery points yet: back up now ({}) or wait for the scheduled backup",
                    app.keys.label(Action::BackupNow)
                ),
            ),
        };
        let title = format!("Recovery points ({len})");
        let points = self.points.as_deref().unwrap_or(&[]);
        render_table(
            f,
            points_a,
            panel(title, t),
            &cols,
            &self.nav,
            len,
            true,
            t,
            &empty,
            |n, _| {
                let p = &points[n];
                vec![
                    cell(fmt::time(p.time), Default::default()),
                    cell(
                        if p.kind == PointKind::OnDemand {
                            "On demand"
                        } else {
                            "Scheduled"
                        },
                        Default::default(),
                    ),
                    cell(
                        p.expiry.map(fmt::time).unwrap_or_else(|| "never".into()),
                        if p.expiry.is_none() {
                            t.muted()
                        } else {
                            Default::default()
                        },
                    ),
                    cell(fmt::bytes(p.logical_bytes), Default::default()),
                    cell(p.consistency.to_string(), Default::default()),
                ]
            },
        );
        let k = &app.keys;
        let hints: Vec<(String, &str)> = self
            .footer()
            .into_iter()
            .map(|a| (k.label(a), a.short()))
            .collect();
        f.render_widget(Paragraph::new(key_hints(&hints, t)), foot);
    }
}
