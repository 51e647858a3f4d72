//! Stop protection: retain the backup data (DisableBackup) or delete it (DeleteBackupData,
//! soft delete for 14 days), then a confirmation.

use super::{confirm, Popup};
use crate::model::{Item, ProtectionState};
use crate::tui::app::{App, Command, Cx, Effect};
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
    /// 0 retain, 1 delete.
    pub choice: usize,
    pub points: usize,
}

impl State {
    pub fn new(item: Item, points: usize) -> State {
        // A stopped item can only go on to having its data deleted.
        let choice = usize::from(item.protection_state == ProtectionState::ProtectionStopped);
        State {
            item,
            choice,
            points,
        }
    }

    fn allowed(&self, choice: usize) -> bool {
        choice == 1 || self.item.protection_state.is_under_policy()
    }

    pub fn handle_key(&mut self, k: &KeyEvent, cx: &mut Cx) {
        let keys = cx.keys;
        if keys.is(Action::Up, k) && self.allowed(0) {
            self.choice = 0;
        } else if keys.is(Action::Down, k) {
            self.choice = 1;
        } else if keys.is(Action::Back, k) {
            cx.close();
        } else if keys.is(Action::Open, k) {
            if !cx.writable("Stop protection") {
                return;
            }
            let delete = self.choice == 1;
            let name = self.item.qualified_name();
            let lines = if delete {
                vec![
                    format!("Stop protection of {name} and DELETE its backup data?"),
                    format!(
                        "Its {} recovery point(s) are soft-deleted: kept 14 days, then purged.",
                        self.points
                    ),
                    "Undelete brings them back within those 14 days.".into(),
                ]
            } else {
                vec![
                    format!("Stop protection of {name} and retain its backup data?"),
                    format!(
                        "No more backups run; its {} recovery point(s) are kept until deleted.",
                        self.points
                    ),
                    "Resume protection later with a policy.".into(),
                ]
            };
            cx.replace(Popup::Confirm(confirm::State::new(
                "Stop protection",
                lines,
                vec![Effect::Run(Command::StopProtection {
                    item: Box::new(self.item.clone()),
                    delete_data: delete,
                })],
                delete,
            )));
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, app: &App) {
        let t = &app.theme;
        let r = centered(
            area,
            72.min(area.width.saturating_sub(2)),
            11.min(area.height),
        );
        let inner = popup_frame(
            f,
            r,
            &format!("Stop protection · {}", self.item.qualified_name()),
            t,
        );
        let [body, foot] =
            Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(inner);
        let opt = |i: usize, title: &str, words: &str| -> Vec<Line<'static>> {
            let sel = i == self.choice;
            let style = if !self.allowed(i) {
                t.muted()
            } else if sel {
                t.selected()
            } else {
                Default::default()
            };
            vec![
                Line::from(Span::styled(format!("{} {title}", radio(sel)), style)),
                Line::from(Span::styled(format!("    {words}"), t.muted())),
            ]
        };
        let mut lines = opt(
            0,
            "Retain backup data",
            "no more backups; recovery points kept until deleted by hand",
        );
        lines.extend(opt(
            1,
            "Delete backup data",
            "soft delete: kept 14 days, then purged (Undelete within 14 days)",
        ));
        lines.push(Line::from(""));
        lines.push(Line::from(Span::styled(
            format!("{} recovery point(s) now.", self.points),
            t.muted(),
        )));
        f.render_widget(wrapped(lines, body.width), body);
        let k = &app.keys;
        f.render_widget(
            Paragraph::new(key_hints(
                &[
                    ("↑/↓".into(), "choose"),
                    (k.label(Action::Open), "continue"),
                    (k.label(Action::Back), "cancel"),
                ],
                t,
            )),
            foot,
        );
    }
}
