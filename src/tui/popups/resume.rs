//! Resume protection of a stopped item: choose the policy.

use crate::model::Item;
use crate::tui::app::{App, Command, Cx};
use crate::tui::keys::Action;
use crate::tui::widgets::text::wrapped;
use crate::tui::widgets::{centered, key_hints, popup_frame, radio};
use crossterm::event::KeyEvent;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

#[derive(Debug)]
pub struct State {
    pub item: Item,
    pub policies: Vec<(String, String)>,
    pub selected: usize,
    /// The policy the item had (when it still exists).
    pub previous: Option<String>,
}

impl State {
    /// `policies`: (name, first line of its description). `previous`: the policy the item
    /// had, chosen first when it is in the list.
    pub fn new(item: Item, policies: Vec<(String, String)>, previous: Option<&str>) -> State {
        let selected = previous
            .and_then(|p| policies.iter().position(|(n, _)| n == p))
            .unwrap_or(0);
        let previous = previous
            .filter(|p| policies.iter().any(|(n, _)| n == p))
            .map(str::to_string);
        State {
            item,
            policies,
            selected,
            previous,
        }
    }

    pub fn handle_key(&mut self, k: &KeyEvent, cx: &mut Cx) {
        let keys = cx.keys;
        if keys.is(Action::Up, k) {
            self.selected = self.selected.saturating_sub(1);
        } else if keys.is(Action::Down, k) {
            self.selected = (self.selected + 1).min(self.policies.len().saturating_sub(1));
        } else if keys.is(Action::Back, k) {
            cx.close();
        } else if keys.is(Action::Open, k) {
            if let Some((name, _)) = self.policies.get(self.selected) {
                if cx.writable("Resume protection") {
                    cx.run(Command::ResumeProtection {
                        item: Box::new(self.item.clone()),
                        policy: name.clone(),
                    });
                    cx.close();
                }
            }
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, app: &App) {
        let t = &app.theme;
        let r = centered(
            area,
            72.min(area.width.saturating_sub(2)),
            (self.policies.len() as u16 + 7).min(area.height),
        );
        let inner = popup_frame(
            f,
            r,
            &format!("Resume protection · {}", self.item.qualified_name()),
            t,
        );
        let [intro, list, foot] = Layout::vertical([
            Constraint::Length(3),
            Constraint::Min(1),
            Constraint::Length(1),
        ])
        .areas(inner);
        f.render_widget(
            wrapped(
                vec![Line::from(
                    "Choose the policy; its retention applies to the item's scheduled points again.",
                )],
                intro.width,
            ),
            intro,
        );
        let lines: Vec<Line> = self
            .policies
            .iter()
            .enumerate()
            .map(|(i, (n, d))| {
                let sel = i == self.selected;
                let mut l = vec![
                    Span::styled(
                        format!("{} {n:<20}", radio(sel)),
                        if sel {
                            t.selected()
                        } else {
                            Default::default()
                        },
                    ),
                    Span::styled(format!(" {d}"), t.muted()),
                ];
                if self.previous.as_deref() == Some(n.as_str()) {
                    l.push(Span::styled(" · previous", t.muted()));
                }
                Line::from(l)
            })
            .collect();
        f.render_widget(Paragraph::new(lines), list);
        let k = &app.keys;
        f.render_widget(
            Paragraph::new(key_hints(
                &[
                    (k.label(Action::Open), "resume"),
                    (k.label(Action::Back), "cancel"),
                ],
                t,
            )),
            foot,
        );
    }
}
