//! Restore: pick the recovery point, the target folder and the disk image format (raw,
//! qcow2, vhd, vmdk), then confirm; files are never overwritten.
//!
//! Nothing is written where the user did not say: the target folder starts empty (never the
//! current folder) and an empty one is refused in the form. The form shows how much the
//! restore may write (the disks' logical size: "up to", as sparse images take less) against
//! the free space of the target's file system (asked off the UI task, whenever the target
//! changes), and Enter only asks: `y` starts the Restore job. The form stays open until the
//! engine answers: a refusal (a file exists already, the folder is a file…) is shown in the
//! form, with what was typed kept, so it can be corrected there.

use crate::engine::{restore_targets, RestoreFormat};
use crate::fmt;
use crate::model::*;
use crate::tui::app::{App, Command, Cx, Effect};
use crate::tui::keys::Action;
use crate::tui::popups::confirm;
use crate::tui::widgets::text::wrap;
use crate::tui::widgets::{centered, key_hints, popup_frame, radio, TextInput};
use crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;
use std::path::{Path, PathBuf};

pub const FORMATS: [RestoreFormat; 4] = [
    RestoreFormat::Raw,
    RestoreFormat::Qcow2,
    RestoreFormat::Vhd,
    RestoreFormat::Vmdk,
];

/// The free space of a target's file system: the nearest existing folder at or above the
/// target and its free bytes, or why it could not be told.
pub type Space = Result<(PathBuf, u64), String>;

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
    /// Enter was pressed on a complete form: `y` starts the restore.
    pub confirming: bool,
    /// What the form itself refuses (no target folder).
    pub problem: Option<String>,
    /// Asked for; waiting for the engine's answer (see [`State::answered`]).
    pub pending: bool,
    /// The engine's refusal of the last attempt.
    pub error: Option<String>,
    /// The target whose free space was last asked for, and the answer for it.
    asked: Option<PathBuf>,
    space: Option<Space>,
}

impl State {
    pub fn new(item: Item, points: Vec<RecoveryPoint>, selected: usize, cwd: &Path) -> State {
        State {
            item,
            point: selected.min(points.len().saturating_sub(1)),
            points,
            folder: TextInput::new(String::new()),
            format: 0,
            focus: 1,
            cwd: cwd.to_path_buf(),
            confirming: false,
            problem: None,
            pending: false,
            error: None,
            asked: None,
            space: None,
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
        self.focus == 1 && !self.confirming
    }

    /// The free space of a new target is asked for once, off the UI task.
    pub fn wants(&mut self) -> Vec<Effect> {
        let Some(dir) = self.dir() else {
            return vec![];
        };
        if self.asked.as_ref() == Some(&dir) {
            return vec![];
        }
        self.asked = Some(dir.clone());
        self.space = None;
        vec![Effect::ProbeSpace(dir)]
    }

    /// The free space of `dir` was told (an answer for an older target is dropped).
    pub fn space_probed(&mut self, dir: &Path, space: &Space) {
        if self.asked.as_deref() == Some(dir) {
            self.space = Some(space.clone());
        }
    }

    /// The target folder, absolute (relative to the console's folder when typed so);
    /// None while none is given.
    fn dir(&self) -> Option<PathBuf> {
        let typed = self.folder.value.trim();
        if typed.is_empty() {
            return None;
        }
        let p = crate::config::expand_home(Path::new(typed));
        Some(if p.is_relative() { self.cwd.join(p) } else { p })
    }

    /// The most the restore writes: the logical size of the point's disks.
    fn size(point: &RecoveryPoint) -> u64 {
        point.disks.iter().map(|d| d.capacity).sum()
    }

    pub fn handle_key(&mut self, k: &KeyEvent, cx: &mut Cx) {
        if self.confirming {
            match k.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => self.start(cx),
                KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc | KeyCode::Enter => {
                    self.confirming = false
                }
                _ => {}
            }
            return;
        }
        let typing = self.focus == 1;
        match k.code {
            KeyCode::Esc => cx.close(),
            KeyCode::Up | KeyCode::BackTab => self.focus = self.focus.saturating_sub(1),
            KeyCode::Down | KeyCode::Tab => self.focus = (self.focus + 1).min(2),
            KeyCode::Enter => {
                if self.pending || self.points.get(self.point).is_none() {
                    return;
                }
                if self.dir().is_none() {
                    self.focus = 1;
                    self.problem = Some(
                        "Type the folder to restore into (nothing is written anywhere unasked)"
                            .into(),
                    );
                    return;
                }
                self.problem = None;
                self.confirming = true;
            }
            _ if typing => {
                if self.folder.handle(k) {
                    self.error = None;
                    self.problem = None;
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

    /// `y` on the question: starts the Restore job.
    fn start(&mut self, cx: &mut Cx) {
        self.confirming = false;
        let (Some(point), Some(dir)) = (self.points.get(self.point), self.dir()) else {
            return;
        };
        if cx.writable("Restore") {
            cx.run(Command::Restore {
                item: Box::new(self.item.clone()),
                point: Box::new(point.clone()),
                dir,
                format: FORMATS[self.format],
            });
            self.pending = true;
            self.error = None;
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, app: &App) {
        let t = &app.theme;
        let w = 90.min(area.width.saturating_sub(2));
        let lines = wrap(self.lines(app), w.saturating_sub(2) as usize);
        let r = centered(area, w, (lines.len() as u16 + 3).min(area.height));
        let inner = popup_frame(
            f,
            r,
            &format!("Restore · {}", self.item.qualified_name()),
            t,
        );
        let [body, foot] =
            Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(inner);
        // The question and what it is about are at the end: keep the end in view.
        let scroll = lines.len().saturating_sub(body.height as usize);
        f.render_widget(
            Paragraph::new(lines).scroll((scroll.min(u16::MAX as usize) as u16, 0)),
            body,
        );
        let k = &app.keys;
        let hints: Vec<(String, &str)> = if self.confirming {
            confirm::HINTS
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect()
        } else {
            vec![
                ("↑/↓".into(), "field"),
                ("←/→".into(), "choose"),
                (k.label(Action::Open), "restore…"),
                (k.label(Action::Back), "cancel"),
            ]
        };
        f.render_widget(Paragraph::new(key_hints(&hints, t)), foot);
    }

    fn lines(&self, app: &App) -> Vec<Line<'static>> {
        let t = &app.theme;
        let marker = |i: usize| {
            if self.focus == i && !self.confirming {
                Span::styled("▶ ", t.accent())
            } else {
                Span::raw("  ")
            }
        };
        let label = |i: usize, s: &str| {
            Span::styled(
                format!("{s:<16}"),
                if self.focus == i && !self.confirming {
                    t.focused()
                } else {
                    t.header()
                },
            )
        };
        let fact = |s: &str| Span::styled(format!("  {s:<16}"), t.header());
        let mut lines = Vec::new();
        let point = self.points.get(self.point);
        if let Some(p) = point {
            lines.push(Line::from(vec![
                marker(0),
                label(0, "Recovery point"),
                Span::raw(format!("‹ {} UTC ›", fmt::time(p.time))),
                Span::styled(
                    format!(
                        " {} of {} · {} · {}",
                        self.point + 1,
                        self.points.len(),
                        if p.kind == PointKind::OnDemand {
                            "on demand"
                        } else {
                            "scheduled"
                        },
                        p.consistency,
                    ),
                    t.muted(),
                ),
            ]));
        }
        let mut folder = vec![marker(1), label(1, "Target folder")];
        folder.extend(
            self.folder
                .line(
                    self.focus == 1 && !self.confirming,
                    Style::default(),
                    Style::default().add_modifier(Modifier::REVERSED),
                )
                .spans,
        );
        if self.folder.value.is_empty() {
            folder.push(Span::styled(
                " (none yet: type where to restore)",
                t.muted(),
            ));
        }
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
            lines.push(Line::from(vec![
                Span::raw(format!("{:18}", "")),
                Span::styled("converted with qemu-img (package qemu-utils)", t.muted()),
            ]));
        }
        lines.push(Line::from(""));
        if let Some(p) = point {
            let size = Self::size(p);
            lines.push(Line::from(vec![
                fact("Size"),
                Span::raw(format!(
                    "up to {} for {} disk(s); {} hold data, sparse images need less",
                    fmt::bytes(size),
                    p.disks.len(),
                    fmt::bytes(p.logical_bytes)
                )),
            ]));
            lines.push(self.space_line(p, app));
        }
        let dir = self.dir();
        if let (Some(p), Some(dir)) = (point, &dir) {
            lines.push(Line::from(Span::styled(
                "Files written (never overwritten):",
                t.header(),
            )));
            // (No existence check here: drawing does no I/O; the engine refuses to overwrite.)
            for target in restore_targets(&self.item, p, dir, FORMATS[self.format]) {
                lines.push(Line::from(Span::styled(
                    format!("  {}", target.display()),
                    t.muted(),
                )));
            }
        }
        if let Some(problem) = &self.problem {
            lines.push(Line::from(Span::styled(problem.clone(), t.error())));
        } else if let Some(e) = &self.error {
            lines.push(Line::from(vec![
                Span::styled("Refused: ", t.error()),
                Span::styled(e.clone(), t.error()),
            ]));
        } else if self.pending {
            lines.push(Line::from(Span::styled(
                "Starting the restore…",
                t.running(),
            )));
        }
        if let (true, Some(p), Some(dir)) = (self.confirming, point, &dir) {
            lines.push(Line::from(""));
            lines.push(Line::from(Span::styled(
                format!(
                    "Restore {} disk(s) of {} (up to {}) into {} as {}?",
                    p.disks.len(),
                    self.item.qualified_name(),
                    fmt::bytes(Self::size(p)),
                    dir.display(),
                    FORMATS[self.format].extension()
                ),
                t.warning().add_modifier(Modifier::BOLD),
            )));
        }
        lines
    }

    /// "Free space  12.0 GiB on the file system of /home" against what the point needs.
    fn space_line(&self, p: &RecoveryPoint, app: &App) -> Line<'static> {
        let t = &app.theme;
        let head = Span::styled(format!("  {:<16}", "Free space"), t.header());
        let fresh = self.asked.is_some() && self.asked == self.dir();
        let (text, style) = match (&self.space, fresh) {
            _ if self.dir().is_none() => ("— (give a target folder)".to_string(), t.muted()),
            (Some(Ok((at, free))), true) => {
                let on = format!(
                    "{} on the file system of {}",
                    fmt::bytes(*free),
                    at.display()
                );
                if *free < p.logical_bytes {
                    (
                        format!("{on}: too little, the data alone takes more"),
                        t.error(),
                    )
                } else if *free < Self::size(p) {
                    (
                        format!("{on}: enough only while the images stay sparse"),
                        t.warning(),
                    )
                } else {
                    (on, Style::default())
                }
            }
            (Some(Err(e)), true) => (format!("cannot tell: {e}"), t.muted()),
            _ => ("checking…".to_string(), t.muted()),
        };
        Line::from(vec![head, Span::styled(text, style)])
    }
}
