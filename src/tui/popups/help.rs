//! Help (`?`): the keys of the view it was opened from; typing searches them.

use crate::tui::app::{App, Cx};
use crate::tui::widgets::{centered, popup_frame, TextInput};
use crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

#[derive(Debug)]
pub struct State {
    pub view: String,
    /// (keys, what they do).
    pub entries: Vec<(String, String)>,
    pub search: TextInput,
    pub scroll: usize,
}

impl State {
    pub fn new(view: String, entries: Vec<(String, String)>) -> State {
        State {
            view,
            entries,
            search: TextInput::default(),
            scroll: 0,
        }
    }

    /// Entries matching the search (in keys or words).
    pub fn matching(&self) -> Vec<&(String, String)> {
        let q = self.search.value.trim().to_lowercase();
        self.entries
            .iter()
            .filter(|(k, d)| q.is_empty() || d.to_lowercase().contains(&q) || k.to_lowercase() == q)
            .collect()
    }

    pub fn handle_key(&mut self, k: &KeyEvent, cx: &mut Cx) {
        match k.code {
            KeyCode::Esc => {
                if self.search.value.is_empty() {
                    cx.close();
                } else {
                    self.search.set("");
                }
            }
            KeyCode::Enter => cx.close(),
            KeyCode::Up => self.scroll = self.scroll.saturating_sub(1),
            KeyCode::Down => {
                self.scroll = (self.scroll + 1).min(self.matching().len().saturating_sub(1))
            }
            KeyCode::Char('?') if self.search.value.is_empty() => cx.close(),
            KeyCode::F(1) => cx.close(),
            _ => {
                if self.search.handle(k) {
                    self.scroll = 0;
                }
            }
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, app: &App) {
        let t = &app.theme;
        let rows = self.entries.len() as u16 + 5;
        let r = centered(
            area,
            72.min(area.width.saturating_sub(2)),
            rows.min(area.height.saturating_sub(2)),
        );
        let inner = popup_frame(f, r, &format!("Keys · {}", self.view), t);
        let [search, list, foot] = Layout::vertical([
            Constraint::Length(2),
            Constraint::Min(1),
            Constraint::Length(1),
        ])
        .areas(inner);
        f.render_widget(
            Paragraph::new(Line::from(vec![
                Span::styled("Search: ", t.header()),
                Span::raw(self.search.value.clone()),
                Span::styled("▏", t.accent()),
            ])),
            search,
        );
        let m = self.matching();
        let key_w = m
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(4)
            .min(22);
        let lines: Vec<Line> = if m.is_empty() {
            vec![Line::from(Span::styled(
                "No key matches the search",
                t.muted(),
            ))]
        } else {
            m.iter()
                .skip(self.scroll)
                .map(|(k, d)| {
                    Line::from(vec![
                        Span::styled(format!("{k:>key_w$}"), t.key()),
                        Span::raw("  "),
                        Span::raw(d.clone()),
                    ])
                })
                .collect()
        };
        f.render_widget(Paragraph::new(lines), list);
        f.render_widget(
            Paragraph::new(Span::styled(
                "type to search · ↑↓ scroll · Esc close · keys are set in [tui.keys]",
                t.muted(),
            )),
            foot,
        );
    }
}
