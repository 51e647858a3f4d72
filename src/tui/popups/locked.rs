//! The vault is owned by another process: say so, and offer to open it read-only (every
//! action disabled), to choose another vault, or to quit.

use super::{vaults, Popup};
use crate::tui::app::{App, Cx, Effect};
use crate::tui::keys::Action;
use crate::tui::widgets::text::wrapped;
use crate::tui::widgets::{centered, key_hints, popup_frame};
use crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

#[derive(Debug)]
pub struct State {
    pub vault: String,
    pub message: String,
}

impl State {
    pub fn new(vault: String, message: String) -> State {
        State { vault, message }
    }

    pub fn handle_key(&mut self, k: &KeyEvent, cx: &mut Cx) {
        let keys = cx.keys;
        if keys.is(Action::Open, k) || k.code == KeyCode::Char('o') {
            cx.effects.push(Effect::OpenVault {
                name: self.vault.clone(),
                read_only: true,
            });
            cx.close();
        } else if keys.is(Action::SwitchVault, k) {
            let current = cx.vault.map(|v| v.name.as_str());
            cx.replace(Popup::Vaults(vaults::State::new(cx.vaults, current)));
        } else if keys.is(Action::Quit, k) {
            cx.effects.push(Effect::Quit);
        } else if keys.is(Action::Back, k) && cx.vault.is_some() {
            cx.close();
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, app: &App) {
        let t = &app.theme;
        let r = centered(
            area,
            74.min(area.width.saturating_sub(2)),
            12.min(area.height),
        );
        let inner = popup_frame(f, r, &format!("Vault {} is in use", self.vault), t);
        let [body, foot] =
            Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(inner);
        let lines = vec![
            Line::from(Span::styled(self.message.clone(), t.error())),
            Line::from(""),
            Line::from(
                "Another vmvault process owns this vault (a console, `vmvault run`, or a backup).",
            ),
            Line::from("You can look at it read-only meanwhile: every action is disabled."),
        ];
        f.render_widget(wrapped(lines, body.width), body);
        let k = &app.keys;
        f.render_widget(
            Paragraph::new(key_hints(
                &[
                    (k.label(Action::Open), "open read-only"),
                    (k.label(Action::SwitchVault), "other vault"),
                    (k.label(Action::Quit), "quit"),
                ],
                t,
            )),
            foot,
        );
    }
}
