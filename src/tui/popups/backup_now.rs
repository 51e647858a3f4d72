//! Back up now: asks until when to keep the recovery point (default 30 days), then starts
//! a Backup job.

use crate::fmt;
use crate::model::Item;
use crate::tui::app::{App, Command, Cx};
use crate::tui::keys::Action;
use crate::tui::widgets::{centered, key_hints, popup_frame, TextInput};
use chrono::{DateTime, Duration, Utc};
use crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};
use ratatui::Frame;

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

    /// The retain-until typed, or why it is not usable.
    pub fn parsed(&self) -> Result<DateTime<Utc>, String> {
        let t = fmt::parse_time(&self.retain_until.value, true)?;
        if t <= self.now {
            return Err(format!(
                "{} is not in the future; give a later date",
                fmt::time(t)
            ));
        }
        Ok(t)
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
        f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), body);
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
