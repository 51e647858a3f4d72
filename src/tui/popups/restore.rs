//! Restore: pick the recovery point, the target folder and the disk image format (raw,
//! qcow2, vhd, vmdk); Enter starts a Restore job. Files are never overwritten. The form
//! stays open until the engine answers: a refusal (a file exists already, the folder is a
//! file…) is shown in the form, with what was typed kept, so it can be corrected there.

use crate::engine::{restore_targets, RestoreFormat};
use crate::fmt;
use crate::model::*;
use crate::tui::app::{App, Command, Cx, Effect};
use crate::tui::keys::Action;
use crate::tui::widgets::{centered, key_hints, popup_frame, radio, TextInput};
use chrono::{DateTime, Utc};
use crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use crate::tui::widgets::text::wrapped;
use ratatui::Frame;
use std::path::{Path, PathBuf};

pub const FORMATS: [RestoreFormat; 4] = [
    RestoreFormat::Raw,
    RestoreFormat::Qcow2,
    RestoreFormat::Vhd,
    RestoreFormat::Vmdk,
];

#[derive(Debug)]
pub struct State {
    pub item: Item,
    pub points: Vec<RecoveryPoint>,
    pub point: usize,
    pub folder: TextInput,
    pub format: usize,
    /// 0 point, 1 folder, 2 format.
    pub focus: usize,
    cwd: PathBuf,
    /// Asked for; waiting for the engine's answer (see [`State::answered`]).
    pub pending: bool,
    /// The engine's refusal of the last attempt.
    pub error: Option<String>,
}

impl State {
    pub fn new(
        item: Item,
        points: Vec<RecoveryPoint>,
        selected: usize,
        cwd: &Path,
        now: DateTime<Utc>,
    ) -> State {
        let folder = cwd.join(format!(
            "restore-{}-{}",
            item.name,
            now.format("%Y%m%d-%H%M")
        ));
        State {
            item,
            point: selected.min(points.len().saturating_sub(1)),
            points,
            folder: TextInput::new(folder.display().to_string()),
            format: 0,
            focus: 1,
            cwd: cwd.to_path_buf(),
            pending: false,
            error: None,
        }
    }

    /// The engine answered the restore this form asked for: true when the form should
    /// close (a job was created); a refusal stays in the form.
    pub fn answered(&mut self, result: &Result<Vec<String>, String>) -> bool {
        self.pending = false;
        match result {
            Ok(_) => true,
            Err(message) => {
                self.error = Some(message.clone());
                false
            }
        }
    }

    /// The target folder has the focus: keys type its name.
    pub fn capturing_text(&self) -> bool {
        self.focus == 1
    }

    pub fn wants(&mut self) -> Vec<Effect> {
        vec![]
    }

    fn dir(&self) -> PathBuf {
        let p = crate::config::expand_home(Path::new(self.folder.value.trim()));
        if p.is_relative() {
            self.cwd.join(p)
        } else {
            p
        }
    }

    pub fn handle_key(&mut self, k: &KeyEvent, cx: &mut Cx) {
        let typing = self.focus == 1;
        match k.code {
            KeyCode::Esc => cx.close(),
            KeyCode::Up | KeyCode::BackTab => self.focus = self.focus.saturating_sub(1),
            KeyCode::Down | KeyCode::Tab => self.focus = (self.focus + 1).min(2),
            KeyCode::Enter => {
                let Some(point) = self.points.get(self.point) else {
                    return;
                };
                if self.folder.value.trim().is_empty() || self.pending {
                    return;
                }
                if cx.writable("Restore") {
                    cx.run(Command::Restore {
                        item: Box::new(self.item.clone()),
                        point: Box::new(point.clone()),
                        dir: self.dir(),
                        format: FORMATS[self.format],
                    });
                    self.pending = true;
                    self.error = None;
                }
            }
            _ if typing => {
                if self.folder.handle(k) {
                    self.error = None;
                }
            }
            _ => {
                let left = k.code == KeyCode::Left || cx.keys.is(Action::Left, k);
                let right = k.code == KeyCode::Right
                    || cx.keys.is(Action::Right, k)
                    || k.code == KeyCode::Char(' ');
                let (v, n) = if self.focus == 0 {
                    (&mut self.point, self.points.len())
                } else {
                    (&mut self.format, FORMATS.len())
                };
                if n > 0 {
                    if left {
                        *v = (*v + n - 1) % n;
                    } else if right {
                        *v = (*v + 1) % n;
                    }
                }
            }
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, app: &App) {
        let t = &app.theme;
        let r = centered(
            area,
            90.min(area.width.saturating_sub(2)),
            16.min(area.height),
        );
        let inner = popup_frame(
            f,
            r,
            &format!("Restore · {}", self.item.qualified_name()),
            t,
        );
        let [body, foot] =
            Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(inner);
        let marker = |i: usize| {
            if self.focus == i {
                Span::styled("▶ ", t.accent())
            } else {
                Span::raw("  ")
            }
        };
        let label = |i: usize, s: &str| {
            Span::styled(
                format!("{s:<16}"),
                if self.focus == i {
                    t.focused()
                } else {
                    t.header()
                },
            )
        };
        let mut lines = Vec::new();
        if let Some(p) = self.points.get(self.point) {
            lines.push(Line::from(vec![
                marker(0),
                label(0, "Recovery point"),
                Span::raw(format!("‹ {} UTC › ", fmt::time(p.time))),
                Span::styled(
                    format!(
                        "{} of {} · {} · {} · {}",
                        self.point + 1,
                        self.points.len(),
                        if p.kind == PointKind::OnDemand {
                            "on demand"
                        } else {
                            "scheduled"
                        },
                        p.consistency,
                        fmt::bytes(p.logical_bytes)
                    ),
                    t.muted(),
                ),
            ]));
        }
        let mut folder = vec![marker(1), label(1, "Target folder")];
        folder.extend(
            self.folder
                .line(
                    self.focus == 1,
                    Style::default(),
                    Style::default().add_modifier(Modifier::REVERSED),
                )
                .spans,
        );
        lines.push(Line::from(folder));
        let mut fmts = vec![marker(2), label(2, "Format")];
        for (i, fm) in FORMATS.iter().enumerate() {
            let on = i == self.format;
            fmts.push(Span::styled(
                format!("{} {}   ", radio(on), fm.extension()),
                if on { t.accent() } else { Default::default() },
            ));
        }
        lines.push(Line::from(fmts));
        if FORMATS[self.format] != RestoreFormat::Raw {
            lines.push(Line::from(Span::styled(
                format!("{:18}converted with qemu-img (package qemu-utils)", ""),
                t.muted(),
            )));
        }
        lines.push(Line::from(""));
        if let Some(e) = &self.error {
            lines.push(Line::from(Span::styled(format!("Refused: {e}"), t.error())));
        } else if self.pending {
            lines.push(Line::from(Span::styled(
                "Starting the restore…",
                t.running(),
            )));
        }
        if let Some(p) = self.points.get(self.point) {
            lines.push(Line::from(Span::styled(
                "Files written (never overwritten):",
                t.header(),
            )));
            // (No existence check here: drawing does no I/O; the engine refuses to overwrite.)
            for target in restore_targets(&self.item, p, &self.dir(), FORMATS[self.format]) {
                lines.push(Line::from(Span::styled(
                    format!("  {}", target.display()),
                    t.muted(),
                )));
            }
        }
        f.render_widget(wrapped(lines, body.width), body);
        let k = &app.keys;
        f.render_widget(
            Paragraph::new(key_hints(
                &[
                    ("↑/↓".into(), "field"),
                    ("←/→".into(), "choose"),
                    (k.label(Action::Open), "restore"),
                    (k.label(Action::Back), "cancel"),
                ],
                t,
            )),
            foot,
        );
    }
}
