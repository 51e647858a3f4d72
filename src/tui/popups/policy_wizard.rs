//! Create policy (Policies tab, `n`): the protect wizard's policy steps — schedule,
//! retention with live validation and the preview — and a review. Edit policy (`e`) is the
//! same wizard on an existing policy, without the name (policies are not renamed); saving
//! it re-evaluates the expiry of the recovery points of the items it protects.

use super::policy_form::{draw_preview, Part, PolicyForm};
use crate::policy::Policy;
use crate::tui::app::{App, Command, Cx};
use crate::tui::keys::Action;
use crate::tui::widgets::text::{render_scrolled, wrapped};
use crate::tui::widgets::wizard;
use chrono::{DateTime, Utc};
use crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::Frame;

pub const STEPS: [&str; 3] = ["Backup schedule", "Retention", "Review"];

#[derive(Debug)]
pub struct State {
    /// 0 schedule, 1 retention, 2 review.
    pub step: usize,
    pub form: PolicyForm,
    existing: Vec<String>,
    /// Editing this policy (used by this many items), not creating one.
    editing: Option<(Policy, usize)>,
}

impl State {
    pub fn new(existing: Vec<String>, now: DateTime<Utc>) -> State {
        State {
            step: 0,
            form: PolicyForm::new(now),
            existing,
            editing: None,
        }
    }

    /// The wizard on `policy`, which `used_by` items follow, to change its schedule and
    /// retention.
    pub fn edit(policy: &Policy, used_by: usize, now: DateTime<Utc>) -> State {
        let mut form = PolicyForm::from_policy(policy, now);
        form.read_only = false;
        form.with_name = false;
        form.recompute();
        State {
            step: 0,
            form,
            existing: vec![],
            editing: Some((policy.clone(), used_by)),
        }
    }

    /// What the wizard does: "Edit policy" or "Create policy".
    fn verb(&self) -> &'static str {
        if self.editing.is_some() {
            "Edit policy"
        } else {
            "Create policy"
        }
    }

    fn title(&self) -> String {
        match &self.editing {
            Some((p, _)) => format!("{} {}", self.verb(), p.name),
            None => self.verb().into(),
        }
    }

    pub fn problems(&self) -> Vec<String> {
        match self.step {
            0 => {
                let mut v: Vec<String> =
                    self.form.schedule_problems().into_iter().cloned().collect();
                let name = self.form.name.value.trim();
                if self.existing.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                    v.insert(
                        0,
                        format!(
                            "name: a policy named \"{name}\" exists already; pick another name"
                        ),
                    );
                }
                v
            }
            1 => self.form.problems.clone(),
            _ => vec![],
        }
    }

    pub fn policy(&self) -> Option<&Policy> {
        self.form.policy.as_ref()
    }

    pub fn actions(&self) -> Vec<Action> {
        vec![
            Action::Up,
            Action::Down,
            Action::Left,
            Action::Right,
            Action::Toggle,
            Action::Open,
            Action::Back,
        ]
    }

    pub fn footer(&self) -> Vec<Action> {
        vec![Action::Up, Action::Toggle, Action::Open, Action::Back]
    }

    /// Keys type text now (a text field has the focus).
    pub fn capturing_text(&self) -> bool {
        match self.step {
            0 => self.form.typing(Part::Schedule),
            1 => self.form.typing(Part::Retention),
            _ => false,
        }
    }

    pub fn handle_key(&mut self, k: &KeyEvent, cx: &mut Cx) {
        if k.code == KeyCode::Esc {
            if self.step == 0 {
                cx.close();
            } else {
                self.step -= 1;
                self.form.focus = 0;
            }
            return;
        }
        if k.code == KeyCode::Enter {
            match self.step {
                0 | 1 => {
                    if self.problems().is_empty() && (self.step == 0 || self.policy().is_some()) {
                        self.step += 1;
                        self.form.focus = 0;
                    }
                }
                _ => {
                    if let Some(p) = self.policy().cloned() {
                        if cx.writable(self.verb()) {
                            cx.run(if self.editing.is_some() {
                                Command::UpdatePolicy(Box::new(p))
                            } else {
                                Command::CreatePolicy(Box::new(p))
                            });
                            cx.close();
                        }
                    }
                }
            }
            return;
        }
        let part = if self.step == 0 {
            Part::Schedule
        } else {
            Part::Retention
        };
        if self.step < 2 {
            self.form.handle_key(k, cx.keys, part);
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, app: &App) {
        let t = &app.theme;
        let k = &app.keys;
        let hints: Vec<(String, &str)> = if self.step < 2 {
            vec![
                ("↑/↓".into(), "field"),
                ("Space".into(), "toggle"),
                ("←/→".into(), "choose"),
                (k.label(Action::Open), "next"),
                (
                    k.label(Action::Back),
                    if self.step == 0 { "cancel" } else { "back" },
                ),
            ]
        } else {
            vec![
                (
                    k.label(Action::Open),
                    if self.editing.is_some() {
                        "save"
                    } else {
                        "create"
                    },
                ),
                (k.label(Action::Back), "back"),
            ]
        };
        let content = wizard::draw(
            f,
            wizard::area(area),
            &self.title(),
            &STEPS,
            self.step,
            &self.problems(),
            &hints,
            t,
        );
        match self.step {
            0 => {
                let mut lines = vec![Line::from(Span::styled("Schedule", t.header()))];
                let (form, focus) = self.form.lines(Part::Schedule, true, t);
                lines.extend(form);
                render_scrolled(f, content, lines, focus.map(|r| r.start + 1..r.end + 1));
            }
            1 => {
                let mut lines = vec![Line::from(Span::styled(
                    "Retention: which backups are kept, and how long",
                    t.header(),
                ))];
                let (form, focus) = self.form.lines(Part::Retention, true, t);
                lines.extend(form);
                let h = lines.len() as u16;
                let preview_h = if content.height > h + 6 {
                    (content.height - h).min(10)
                } else {
                    0
                };
                let [top, bottom] =
                    Layout::vertical([Constraint::Min(1), Constraint::Length(preview_h)])
                        .areas(content);
                render_scrolled(f, top, lines, focus.map(|r| r.start + 1..r.end + 1));
                if let Some(pv) = &self.form.preview {
                    draw_preview(f, bottom, pv, t);
                }
            }
            _ => {
                let mut lines = vec![Line::from(Span::styled("The policy", t.header()))];
                if let Some(p) = self.policy() {
                    lines.push(Line::from(format!("  Name: {}", p.name)));
                    for d in p.describe() {
                        lines.push(Line::from(format!("  {d}")));
                    }
                    lines.push(Line::from(""));
                    match &self.editing {
                        Some((old, _)) if old == p => lines.push(Line::from(Span::styled(
                            "Nothing changed.",
                            t.muted(),
                        ))),
                        Some((_, used_by)) => lines.push(Line::from(format!(
                            "{} saves it: the {used_by} item(s) it protects follow it from their \
                             next backup, and their recovery points the new retention.",
                            k.label(Action::Open)
                        ))),
                        None => lines.push(Line::from(format!(
                            "{} creates it; protect VMs with it in the protect wizard (Protected Items, {}).",
                            k.label(Action::Open),
                            k.label(Action::Protect)
                        ))),
                    }
                }
                let [top, bottom] = Layout::vertical([
                    Constraint::Min(1),
                    Constraint::Length(content.height.saturating_sub(8).min(10)),
                ])
                .areas(content);
                f.render_widget(wrapped(lines, top.width), top);
                if let Some(pv) = &self.form.preview {
                    draw_preview(f, bottom, pv, t);
                }
            }
        }
    }
}
