//! A message (an error from the engine, with what to do), wrapped to fit; Esc closes.

use crate::tui::app::{App, Cx};
use crate::tui::widgets::text::wrap;
use crate::tui::widgets::{centered, popup_frame};
use crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

#[derive(Debug)]
pub struct State {
    pub title: String,
    pub text: String,
    pub error: bool,
    pub scroll: u16,
}

impl State {
    pub fn error(title: impl Into<String>, text: impl Into<String>) -> State {
        State {
            title: title.into(),
            text: text.into(),
            error: true,
            scroll: 0,
        }
    }

    pub fn info(title: impl Into<String>, text: impl Into<String>) -> State {
        State {
            title: title.into(),
            text: text.into(),
            error: false,
            scroll: 0,
        }
    }

    pub fn handle_key(&mut self, k: &KeyEvent, cx: &mut Cx) {
        match k.code {
            KeyCode::Up => self.scroll = self.scroll.saturating_sub(1),
            KeyCode::Down => self.scroll = self.scroll.saturating_add(1),
            KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q') | KeyCode::Char(' ') => cx.close(),
            _ => {}
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, app: &App) {
        let t = &app.theme;
        let w = 76.min(area.width.saturating_sub(2));
        let style = if self.error {
            t.error()
        } else {
            Default::default()
        };
        let lines = wrap(
            self.text
                .lines()
                .enumerate()
                .map(|(i, l)| {
                    Line::from(Span::styled(
                        l.to_string(),
                        if i == 0 { style } else { Default::default() },
                    ))
                })
                .collect(),
            w.saturating_sub(2) as usize,
        );
        let lines_needed = lines.len() as u16;
        let r = centered(
            area,
            w,
            (lines_needed + 4).min(area.height.saturating_sub(2)),
        );
        let inner = popup_frame(f, r, &self.title, t);
        let [body, foot] =
            Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(inner);
        f.render_widget(Paragraph::new(lines).scroll((self.scroll, 0)), body);
        f.render_widget(
            Paragraph::new(Span::styled("Esc close", t.muted())).right_aligned(),
            foot,
        );
    }
}
