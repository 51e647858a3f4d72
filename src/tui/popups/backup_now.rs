//! Back up now: asks until when to keep the recovery point (default 30 days), then starts
//! a Backup job.

use crate::fmt;
use crate::model::{Item, JobOperation, ProtectionState, RegistrationState};
use crate::tui::app::{App, Command, Cx};
use crate::tui::keys::Action;
use crate::tui::widgets::text::wrapped;
use crate::tui::widgets::{centered, key_hints, popup_frame, TextInput};
use chrono::{DateTime, Duration, Utc};
use crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

/// Why `item` cannot be backed up now, in words that end with the key to press; None when
/// it can. `in_details`: asked from the item's details (its keys work there directly),
/// otherwise from a list (the item's details open with Enter first).
pub fn refusal(item: &Item, cx: &Cx, in_details: bool) -> Option<String> {
    let q = item.qualified_name();
    let key = |a: Action| cx.keys.label(a);
    let open = if in_details {
        String::new()
    } else {
        format!("{}, then ", key(Action::Open))
    };
    let region = cx.region();
    if !region.is_empty() && !item.region.eq_ignore_ascii_case(region) {
        return Some(format!(
            "{q} is in region {}, this vault in {region}; back it up from a vault in {} — press {} to switch vault",
            item.region,
            item.region,
            key(Action::SwitchVault)
        ));
    }
    let why = match item.protection_state {
        s if s.is_under_policy() => {
            let running = cx.running.values().find(|j| {
                j.operation == JobOperation::Backup
                    && j.item_id.as_deref() == Some(item.id.as_str())
                    && j.status.is_active()
            });
            return running.map(|j| {
                format!(
                    "{q}: a backup is already running (job {}) — press {} to see it",
                    crate::tui::app::short_id(&j.id),
                    key(Action::TabJobs)
                )
            });
        }
        ProtectionState::NotProtected
            if item.registration_state != RegistrationState::Registered =>
        {
            format!(
                "is not registered — register it in Registered Items ({}, then {})",
                key(Action::TabRegistered),
                key(Action::Register)
            )
        }
        ProtectionState::NotProtected => format!(
            "is not protected — press {} in Protected Items to protect it",
            key(Action::Protect)
        ),
        ProtectionState::ProtectionStopped => format!(
            "protection is stopped — press {open}{} to resume",
            key(Action::ResumeProtection)
        ),
        ProtectionState::BackupsSuspended => format!(
            "backups are suspended — press {open}{} to resume",
            key(Action::ResumeProtection)
        ),
        ProtectionState::SoftDeleted => format!(
            "its backup data is soft-deleted — press {open}{} to undelete, then {} to resume",
            key(Action::Undelete),
            key(Action::ResumeProtection)
        ),
        s => format!("cannot be backed up while {}", s.label().to_lowercase()),
    };
    Some(format!("{q}: {why}"))
}

#[derive(Debug)]
pub struct State {
    pub item: Item,
    pub retain_until: TextInput,
    now: DateTime<Utc>,
}

impl State {
    pub fn new(item: Item, now: DateTime<Utc>) -> State {
        let default = now + Duration::days(crate::engine::DEFAULT_ON_DEMAND_DAYS);
        State {
            item,
            retain_until: TextInput::new(default.format("%Y-%m-%d").to_string()),
            now,
        }
    }

    /// The retain-until typed, or why it is not usable (by the engine's own rule, so the
    /// engine never refuses what the form accepted).
    pub fn parsed(&self) -> Result<DateTime<Utc>, String> {
        let t = fmt::parse_time(&self.retain_until.value, true)?;
        match crate::engine::retain_until_problem(self.now, t) {
            Some(problem) => Err(problem),
            None => Ok(t),
        }
    }

    pub fn handle_key(&mut self, k: &KeyEvent, cx: &mut Cx) {
        match k.code {
            KeyCode::Esc => cx.close(),
            KeyCode::Enter => {
                if let Ok(t) = self.parsed() {
                    if cx.writable("Back up now") {
                        cx.run(Command::BackupNow {
                            item: Box::new(self.item.clone()),
                            retain_until: t,
                        });
                        cx.close();
                    }
                }
            }
            _ => {
                self.retain_until.handle(k);
            }
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, app: &App) {
        let t = &app.theme;
        let r = centered(
            area,
            66.min(area.width.saturating_sub(2)),
            11.min(area.height),
        );
        let inner = popup_frame(
            f,
            r,
            &format!("Back up now · {}", self.item.qualified_name()),
            t,
        );
        let [body, foot] =
            Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(inner);
        let mut field = vec![Span::styled("Retain backup until: ", t.header())];
        field.extend(
            self.retain_until
                .line(
                    true,
                    Style::default(),
                    Style::default().add_modifier(Modifier::REVERSED),
                )
                .spans,
        );
        let mut lines = vec![
            Line::from("Takes a snapshot now and transfers it to the vault (a Backup job)."),
            Line::from(""),
            Line::from(field),
        ];
        match self.parsed() {
            Ok(until) => lines.push(Line::from(Span::styled(
                format!(
                    "The recovery point is kept until {} UTC ({} days).",
                    fmt::time(until),
                    (until - self.now).num_days()
                ),
                t.muted(),
            ))),
            Err(e) => lines.push(Line::from(Span::styled(e, t.error()))),
        }
        lines.push(Line::from(Span::styled(
            "Date as YYYY-MM-DD (end of day, UTC) or YYYY-MM-DD HH:MM.",
            t.muted(),
        )));
        f.render_widget(wrapped(lines, body.width), body);
        let k = &app.keys;
        f.render_widget(
            Paragraph::new(key_hints(
                &[
                    (k.label(Action::Open), "back up"),
                    (k.label(Action::Back), "cancel"),
                ],
                t,
            )),
            foot,
        );
    }
}
