//! The protect wizard: (1) select registered, unprotected VMs; (2) choose an existing
//! policy or define a new schedule; (3) retention — editable for a new policy, read-only
//! for an existing one, validated live, with the retention preview; (4) review, then one
//! ConfigureBackup job per VM. Esc goes back a step.

use super::policy_form::{draw_preview, Part, PolicyForm};
use super::register::Picker;
use crate::model::*;
use crate::policy::Policy;
use crate::tui::app::{App, Command, Cx};
use crate::tui::data::Data;
use crate::tui::keys::Action;
use crate::tui::widgets::text::{render_scrolled, wrapped};
use crate::tui::widgets::{radio, wizard};
use chrono::{DateTime, Utc};
use crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

pub const STEPS: [&str; 4] = ["Select items", "Backup schedule", "Retention", "Review"];

/// Most VMs one protect operation takes (DOMAIN.md).
const MAX_ITEMS: usize = crate::engine::MAX_ITEMS_PER_PROTECT;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Items,
    Schedule,
    Retention,
    Review,
}

impl Step {
    fn index(self) -> usize {
        match self {
            Step::Items => 0,
            Step::Schedule => 1,
            Step::Retention => 2,
            Step::Review => 3,
        }
    }
}

/// VMs the wizard offers: registered, not protected, of this region, still found.
pub fn candidates(data: &Data, region: &str) -> Vec<Item> {
    data.items
        .iter()
        .filter(|i| {
            i.registration_state == RegistrationState::Registered
                && i.protection_state == ProtectionState::NotProtected
                && i.region.eq_ignore_ascii_case(region)
                && !i.not_found
        })
        .cloned()
        .collect()
}

#[derive(Debug)]
pub struct State {
    pub step: Step,
    pub picker: Picker,
    /// Existing policies to choose from.
    pub policies: Vec<Policy>,
    /// Index into `policies`; `policies.len()` means a new policy.
    pub choice: usize,
    /// The focus is on the policy choice row (else in the form).
    pub on_choice: bool,
    pub form: PolicyForm,
    /// The chosen existing policy, shown read-only.
    pub existing: Option<PolicyForm>,
    /// Why Enter did not move on.
    pub message: Option<String>,
    now: DateTime<Utc>,
}

impl State {
    pub fn new(data: &Data, region: &str, now: DateTime<Utc>) -> State {
        let policies: Vec<Policy> = data.policies.iter().map(|p| p.policy.clone()).collect();
        let mut s = State {
            step: Step::Items,
            picker: Picker::new(candidates(data, region)),
            policies,
            choice: 0,
            on_choice: true,
            form: PolicyForm::new(now),
            existing: None,
            message: None,
            now,
        };
        s.choose(0);
        s
    }

    pub fn refresh(&mut self, data: &Data, region: &str) {
        self.picker.set_candidates(candidates(data, region));
    }

    pub fn is_new_policy(&self) -> bool {
        self.choice >= self.policies.len()
    }

    fn choose(&mut self, i: usize) {
        self.choice = i.min(self.policies.len());
        self.existing = self
            .policies
            .get(self.choice)
            .map(|p| PolicyForm::from_policy(p, self.now));
    }

    /// The policy the wizard will use, when valid.
    pub fn policy(&self) -> Option<&Policy> {
        if self.is_new_policy() {
            self.form.policy.as_ref()
        } else {
            self.policies.get(self.choice)
        }
    }

    /// Problems that keep the current step from moving on.
    pub fn problems(&self) -> Vec<String> {
        match self.step {
            Step::Items => self.message.iter().cloned().collect(),
            Step::Schedule if self.is_new_policy() => {
                let mut v: Vec<String> =
                    self.form.schedule_problems().into_iter().cloned().collect();
                if let Some(n) = self.name_taken() {
                    v.insert(0, n);
                }
                v
            }
            Step::Retention if self.is_new_policy() => self.form.problems.clone(),
            _ => self.message.iter().cloned().collect(),
        }
    }

    fn name_taken(&self) -> Option<String> {
        let name = self.form.name.value.trim();
        self.policies
            .iter()
            .any(|p| p.name.eq_ignore_ascii_case(name))
            .then(|| format!("name: a policy named \"{name}\" exists already; choose it above or pick another name"))
    }

    pub fn actions(&self) -> Vec<Action> {
        match self.step {
            Step::Items => vec![
                Action::Up,
                Action::Down,
                Action::Toggle,
                Action::SelectAll,
                Action::Filter,
                Action::Open,
                Action::Back,
            ],
            Step::Schedule | Step::Retention => vec![
                Action::Up,
                Action::Down,
                Action::Left,
                Action::Right,
                Action::Toggle,
                Action::Open,
                Action::Back,
            ],
            Step::Review => vec![Action::Open, Action::Back],
        }
    }

    /// Keys type text now (a filter or a text field has the focus).
    pub fn capturing_text(&self) -> bool {
        match self.step {
            Step::Items => self.picker.filter.typing,
            Step::Schedule => !self.on_choice && self.form.typing(Part::Schedule),
            Step::Retention => self.form.typing(Part::Retention),
            Step::Review => false,
        }
    }

    pub fn footer(&self) -> Vec<Action> {
        match self.step {
            Step::Items => vec![
                Action::Toggle,
                Action::SelectAll,
                Action::Filter,
                Action::Open,
                Action::Back,
            ],
            Step::Schedule | Step::Retention => {
                vec![Action::Up, Action::Toggle, Action::Open, Action::Back]
            }
            Step::Review => vec![Action::Open, Action::Back],
        }
    }

    pub fn handle_key(&mut self, k: &KeyEvent, cx: &mut Cx) {
        let keys = cx.keys;
        match self.step {
            Step::Items => {
                if self.picker.handle_key(k, keys) {
                    self.message = None;
                    return;
                }
                if keys.is(Action::Back, k) {
                    cx.close();
                } else if keys.is(Action::Open, k) {
                    self.picker.mark_current_if_none();
                    let n = self.picker.marked.len();
                    if n == 0 {
                        self.message = Some(format!(
                            "Select at least one VM ({}), or discover and register VMs first",
                            keys.label(Action::Toggle)
                        ));
                    } else if n > MAX_ITEMS {
                        self.message = Some(format!("{n} VMs selected: at most {MAX_ITEMS} can be protected in one operation; select fewer"));
                    } else {
                        self.message = None;
                        self.step = Step::Schedule;
                    }
                }
            }
            Step::Schedule => {
                if k.code == KeyCode::Esc {
                    self.step = Step::Items;
                    return;
                }
                if k.code == KeyCode::Enter {
                    if self.problems().is_empty() {
                        self.step = Step::Retention;
                        self.form.focus = 0;
                    }
                    return;
                }
                if self.on_choice {
                    let n = self.policies.len() + 1;
                    let into_form = k.code == KeyCode::Tab
                        || k.code == KeyCode::Right
                        || keys.is(Action::Right, k);
                    if keys.is(Action::Up, k) {
                        self.choose(self.choice.saturating_sub(1));
                    } else if keys.is(Action::Down, k) || k.code == KeyCode::Down {
                        if self.choice + 1 < n {
                            self.choose(self.choice + 1);
                        } else {
                            self.on_choice = false;
                            self.form.focus = 0;
                        }
                    } else if into_form && self.is_new_policy() {
                        self.on_choice = false;
                        self.form.focus = 0;
                    }
                    return;
                }
                if (k.code == KeyCode::Up || k.code == KeyCode::BackTab) && self.form.focus == 0 {
                    self.on_choice = true;
                    return;
                }
                self.form.handle_key(k, keys, Part::Schedule);
            }
            Step::Retention => {
                if k.code == KeyCode::Esc {
                    self.step = Step::Schedule;
                    self.form.focus = 0;
                    return;
                }
                if k.code == KeyCode::Enter {
                    if self.problems().is_empty() && self.policy().is_some() {
                        self.step = Step::Review;
                    }
                    return;
                }
                if self.is_new_policy() {
                    self.form.handle_key(k, keys, Part::Retention);
                }
            }
            Step::Review => {
                if k.code == KeyCode::Esc {
                    self.step = Step::Retention;
                    return;
                }
                if keys.is(Action::Open, k) {
                    let Some(policy) = self.policy().cloned() else {
                        return;
                    };
                    if !cx.writable("Protect") {
                        return;
                    }
                    cx.run(Command::Protect {
                        items: self.picker.selected_items(),
                        policy: Box::new(policy),
                        create: self.is_new_policy(),
                    });
                    cx.close();
                }
            }
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, app: &App) {
        let t = &app.theme;
        let k = &app.keys;
        let popup = wizard::area(area);
        let hints: Vec<(String, &str)> = match self.step {
            Step::Items => vec![
                (k.label(Action::Toggle), "select"),
                (k.label(Action::SelectAll), "all"),
                (k.label(Action::Filter), "filter"),
                (k.label(Action::Open), "next"),
                (k.label(Action::Back), "cancel"),
            ],
            Step::Schedule if self.on_choice => vec![
                ("↑/↓".into(), "choose policy"),
                ("→".into(), "edit new policy"),
                (k.label(Action::Open), "next"),
                (k.label(Action::Back), "back"),
            ],
            Step::Schedule | Step::Retention if self.is_new_policy() => vec![
                ("↑/↓".into(), "field"),
                ("Space".into(), "toggle"),
                ("←/→".into(), "choose"),
                (k.label(Action::Open), "next"),
                (k.label(Action::Back), "back"),
            ],
            Step::Schedule | Step::Retention => vec![
                (k.label(Action::Open), "next"),
                (k.label(Action::Back), "back"),
            ],
            Step::Review => vec![
                (k.label(Action::Open), "protect"),
                (k.label(Action::Back), "back"),
            ],
        };
        let problems = self.problems();
        let content = wizard::draw(
            f,
            popup,
            "Protect items",
            &STEPS,
            self.step.index(),
            &problems,
            &hints,
            t,
        );
        match self.step {
            Step::Items => {
                let empty = "No registered, unprotected VMs in this region: register VMs first (Registered Items, r)";
                self.picker
                    .draw(f, content, "Registered VMs not protected yet", t, empty);
            }
            Step::Schedule => self.draw_schedule(f, content, app),
            Step::Retention => self.draw_retention(f, content, app),
            Step::Review => self.draw_review(f, content, app),
        }
    }

    fn draw_schedule(&self, f: &mut Frame, area: Rect, app: &App) {
        let t = &app.theme;
        // The policies on the left, the chosen one (or the new policy's form) on the right.
        let [list_a, detail_a] =
            Layout::horizontal([Constraint::Length(26), Constraint::Min(20)]).areas(area);
        let mut list = vec![Line::from(Span::styled(
            "Backup policy",
            if self.on_choice {
                t.focused()
            } else {
                t.header()
            },
        ))];
        let names = self
            .policies
            .iter()
            .map(|p| p.name.clone())
            .chain(["New policy…".to_string()]);
        for (i, name) in names.enumerate() {
            let on = i == self.choice;
            let style = match (on, self.on_choice) {
                (true, true) => t.selected(),
                (true, false) => t.accent(),
                _ => Default::default(),
            };
            list.push(Line::from(Span::styled(
                format!("{} {}", radio(on), crate::tui::widgets::truncate(&name, 21)),
                style,
            )));
        }
        f.render_widget(Paragraph::new(list), list_a);
        let mut lines = Vec::new();
        let mut focus = None;
        if self.is_new_policy() {
            lines.push(Line::from(Span::styled("New policy: schedule", t.header())));
            let (form, f_focus) = self.form.lines(Part::Schedule, !self.on_choice, t);
            focus = f_focus.map(|r| r.start + 1..r.end + 1);
            lines.extend(form);
            if self.on_choice {
                lines.push(Line::from(""));
                lines.push(Line::from(Span::styled(
                    "→ or Tab: fill in the new policy",
                    t.muted(),
                )));
            }
        } else if let Some(p) = self.policies.get(self.choice) {
            lines.push(Line::from(Span::styled(
                format!("Policy {}", p.name),
                t.header(),
            )));
            for d in p.describe() {
                lines.push(Line::from(format!("  {d}")));
            }
            let users = app
                .data
                .policies
                .iter()
                .find(|x| x.policy.name == p.name)
                .map(|x| x.used_by)
                .unwrap_or(0);
            lines.push(Line::from(Span::styled(
                format!("  Used by {users} item(s)"),
                t.muted(),
            )));
        }
        render_scrolled(f, detail_a, lines, focus);
    }

    fn draw_retention(&self, f: &mut Frame, area: Rect, app: &App) {
        let t = &app.theme;
        let form = if self.is_new_policy() {
            &self.form
        } else {
            self.existing.as_ref().unwrap_or(&self.form)
        };
        let mut lines = vec![Line::from(Span::styled(
            if form.read_only {
                format!(
                    "Retention of {} (read-only for an existing policy)",
                    form.name.value
                )
            } else {
                "Retention: which backups are kept, and how long".to_string()
            },
            t.header(),
        ))];
        let (form_lines, focus) = form.lines(Part::Retention, !form.read_only, t);
        lines.extend(form_lines);
        let focus = focus.map(|r| r.start + 1..r.end + 1);
        let form_h = lines.len() as u16;
        let preview_h = if area.height > form_h + 6 {
            (area.height - form_h).min(10)
        } else {
            0
        };
        let [top, bottom] =
            Layout::vertical([Constraint::Min(1), Constraint::Length(preview_h)]).areas(area);
        render_scrolled(f, top, lines, focus);
        if let Some(pv) = &form.preview {
            draw_preview(f, bottom, pv, t);
        }
    }

    fn draw_review(&self, f: &mut Frame, area: Rect, app: &App) {
        let t = &app.theme;
        let items = self.picker.selected_items();
        let mut lines = Vec::new();
        let Some(p) = self.policy() else { return };
        let new = self.is_new_policy();
        lines.push(Line::from(Span::styled("What will happen", t.header())));
        if new {
            lines.push(Line::from(format!("• Policy {} is created:", p.name)));
        } else {
            lines.push(Line::from(format!("• Policy {} is used:", p.name)));
        }
        for d in p.describe() {
            lines.push(Line::from(Span::styled(format!("      {d}"), t.muted())));
        }
        lines.push(Line::from(format!(
            "• {} ConfigureBackup job(s) are created, one per VM; each VM becomes \"Protected (pending initial backup)\"",
            items.len()
        )));
        let next = crate::policy::next_run_after(p, app.now);
        lines.push(Line::from(format!(
            "• The initial backup runs at the first scheduled time, {} UTC (or use Back up now)",
            crate::fmt::time(next)
        )));
        lines.push(Line::from(""));
        lines.push(Line::from(Span::styled(
            format!("Virtual machines ({})", items.len()),
            t.header(),
        )));
        let room = (area.height as usize).saturating_sub(lines.len() + 1);
        for (n, i) in items.iter().enumerate() {
            if n + 1 >= room && items.len() > room {
                lines.push(Line::from(Span::styled(
                    format!("  … and {} more", items.len() - n),
                    t.muted(),
                )));
                break;
            }
            lines.push(Line::from(format!(
                "  {}  ({}, {})",
                i.qualified_name(),
                i.os,
                i.region
            )));
        }
        f.render_widget(wrapped(lines, area.width), area);
    }
}
