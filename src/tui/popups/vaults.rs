//! Switch vault (`v`): the configured vaults; Enter opens the chosen one (after asking,
//! when jobs of this console are running: switching cancels them).

use super::{confirm, Popup};
use crate::tui::app::{App, Cx, Effect, VaultChoice};
use crate::tui::keys::Action;
use crate::tui::widgets::{centered, key_hints, popup_frame};
use crossterm::event::KeyEvent;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

#[derive(Debug)]
pub struct State {
    pub choices: Vec<VaultChoice>,
    pub selected: usize,
    pub current: Option<String>,
}

impl State {
    pub fn new(choices: &[VaultChoice], current: Option<&str>) -> State {
        let selected = current
            .and_then(|c| choices.iter().position(|v| v.name == c))
            .unwrap_or(0);
        State {
            choices: choices.to_vec(),
            selected,
            current: current.map(str::to_string),
        }
    }

    pub fn handle_key(&mut self, k: &KeyEvent, cx: &mut Cx) {
        let keys = cx.keys;
        if keys.is(Action::Up, k) {
            self.selected = self.selected.saturating_sub(1);
        } else if keys.is(Action::Down, k) {
            self.selected = (self.selected + 1).min(self.choices.len().saturating_sub(1));
        } else if keys.is(Action::Back, k) {
            cx.close();
        } else if keys.is(Action::Open, k) {
            let Some(v) = self.choices.get(self.selected) else {
                return;
            };
            if self.current.as_deref() == Some(v.name.as_str())
                && cx.vault.is_some_and(|x| x.read_only.is_none())
            {
                cx.close();
                return;
            }
            let open = Effect::OpenVault {
                name: v.name.clone(),
                read_only: false,
            };
            let own_running = if cx.vault.is_some_and(|x| x.read_only.is_none()) {
                cx.running.len()
            } else {
                0
            };
            if own_running > 0 {
                cx.replace(Popup::Confirm(confirm::State::new(
                    "Switch vault",
                    vec![
                        format!(
                            "{own_running} job(s) are running in vault {}.",
                            self.current.clone().unwrap_or_default()
                        ),
                        "Switching closes it: they are cancelled and recorded as Cancelled.".into(),
                        String::new(),
                        format!("Open vault {} anyway?", v.name),
                    ],
                    vec![open],
                    true,
                )));
            } else {
                cx.effects.push(open);
                cx.close();
            }
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, app: &App) {
        let t = &app.theme;
        let r = centered(
            area,
            70.min(area.width.saturating_sub(2)),
            (self.choices.len() as u16 + 5).min(area.height),
        );
        let inner = popup_frame(f, r, "Switch vault", t);
        let [list, foot] =
            Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(inner);
        let lines: Vec<Line> = self
            .choices
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let cur = self.current.as_deref() == Some(v.name.as_str());
                let text = format!(
                    "{} {:<24} {:<16} {}",
                    if cur { "●" } else { " " },
                    v.name,
                    v.region,
                    v.source
                );
                if i == self.selected {
                    Line::from(Span::styled(text, t.selected()))
                } else {
                    Line::from(text)
                }
            })
            .collect();
        f.render_widget(Paragraph::new(lines), list);
        let k = &app.keys;
        f.render_widget(
            Paragraph::new(key_hints(
                &[
                    (k.label(Action::Open), "open"),
                    (k.label(Action::Back), "close"),
                ],
                t,
            )),
            foot,
        );
    }
}
