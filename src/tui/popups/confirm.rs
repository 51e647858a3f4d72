//! A yes/no question (quit with running jobs, delete a policy, delete backup data). Every
//! question guards something destructive, so only `y` answers yes: Enter, `n` and Esc
//! answer no (Enter is pressed out of habit, and must never destroy anything).

use crate::tui::app::{App, Cx, Effect, Nav};
use crate::tui::widgets::text::wrapped;
use crate::tui::widgets::{centered, key_hints, popup_frame};
use crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::Paragraph;
use ratatui::Frame;

/// The keys of the question, for its own last line and the console's footer.
pub const HINTS: [(&str, &str); 2] = [("y", "Yes"), ("n/Esc", "No")];

#[derive(Debug)]
pub struct State {
    pub title: String,
    pub lines: Vec<String>,
    pub on_yes: Vec<Effect>,
    /// The answer destroys something: the question is in the error colour.
    pub danger: bool,
    /// Yes closes every popup (the question ends what they were about); otherwise only
    /// the question closes, back to the popup that asked it.
    pub close_all: bool,
}

impl State {
    pub fn new(
        title: impl Into<String>,
        lines: Vec<String>,
        on_yes: Vec<Effect>,
        danger: bool,
    ) -> State {
        State {
            title: title.into(),
            lines,
            on_yes,
            danger,
            close_all: true,
        }
    }

    /// Yes goes back to the popup below (which stays meaningful after the answer).
    pub fn keep_below(mut self) -> State {
        self.close_all = false;
        self
    }

    pub fn handle_key(&mut self, k: &KeyEvent, cx: &mut Cx) {
        match k.code {
            KeyCode::Char('y') | KeyCode::Char('Y') => {
                cx.effects.append(&mut self.on_yes);
                cx.nav = if self.close_all {
                    Nav::CloseAll
                } else {
                    Nav::Close
                };
            }
            KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc | KeyCode::Enter => cx.close(),
            _ => {}
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, app: &App) {
        let t = &app.theme;
        let r = centered(
            area,
            64.min(area.width.saturating_sub(2)),
            (self.lines.len() as u16 + 5).min(area.height),
        );
        let inner = popup_frame(f, r, &self.title, t);
        let [body, foot] =
            Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(inner);
        let lines: Vec<Line> = self
            .lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                if i == 0 && self.danger {
                    Line::styled(l.clone(), t.error())
                } else {
                    Line::from(l.clone())
                }
            })
            .collect();
        f.render_widget(wrapped(lines, body.width), body);
        f.render_widget(
            Paragraph::new(key_hints(&HINTS.map(|(k, v)| (k.to_string(), v)), t)).right_aligned(),
            foot,
        );
    }
}
