//! Policies: the vault's policies, the selected one in words with its retention preview;
//! `n` creates one (the wizard's policy steps), `x` deletes one no item uses.

use crate::tui::app::{App, Command, Cx, Effect};
use crate::tui::data::Data;
use crate::tui::keys::Action;
use crate::tui::popups::policy_form::{draw_preview, RetentionPreview};
use crate::tui::popups::{confirm, policy_wizard, Popup};
use crate::tui::widgets::text::wrapped;
use crate::tui::widgets::{panel, render_table, table::cell, Column, TableNav};
use chrono::{DateTime, Utc};
use crossterm::event::KeyEvent;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::Frame;

pub const ACTIONS: &[Action] = &[
    Action::Up,
    Action::Down,
    Action::PageUp,
    Action::PageDown,
    Action::Top,
    Action::Bottom,
    Action::NewPolicy,
    Action::EditPolicy,
    Action::DeletePolicy,
];
pub const FOOTER: &[Action] = &[
    Action::Up,
    Action::NewPolicy,
    Action::EditPolicy,
    Action::DeletePolicy,
];

#[derive(Debug, Default)]
pub struct State {
    pub nav: TableNav,
    /// Preview of the selected policy: (policy name, generation, preview).
    preview: Option<(String, u64, RetentionPreview)>,
}

impl State {
    pub fn refresh(&mut self, data: &Data) {
        self.nav.clamp(data.policies.len());
        self.update_preview(data, data.now);
    }

    fn update_preview(&mut self, data: &Data, now: DateTime<Utc>) {
        let Some(p) = data.policies.get(self.nav.selected) else {
            self.preview = None;
            return;
        };
        if self
            .preview
            .as_ref()
            .is_some_and(|(n, g, _)| *n == p.policy.name && *g == data.generation)
        {
            return;
        }
        self.preview = Some((
            p.policy.name.clone(),
            data.generation,
            RetentionPreview::compute(&p.policy, now),
        ));
    }

    pub fn handle_key(&mut self, k: &KeyEvent, cx: &mut Cx) {
        let keys = cx.keys;
        let len = cx.data.policies.len();
        if self.nav.navigate(keys, k, len) {
        } else if keys.is(Action::NewPolicy, k) {
            if cx.writable("Create policy") {
                let names = cx
                    .data
                    .policies
                    .iter()
                    .map(|p| p.policy.name.clone())
                    .collect();
                cx.push(Popup::PolicyWizard(Box::new(policy_wizard::State::new(
                    names, cx.now,
                ))));
            }
        } else if keys.is(Action::EditPolicy, k) {
            let Some(p) = cx.data.policies.get(self.nav.selected) else {
                return;
            };
            if cx.writable("Edit policy") {
                cx.push(Popup::PolicyWizard(Box::new(policy_wizard::State::edit(
                    &p.policy, p.used_by, cx.now,
                ))));
            }
        } else if keys.is(Action::DeletePolicy, k) {
            let Some(p) = cx.data.policies.get(self.nav.selected) else {
                return;
            };
            let name = p.policy.name.clone();
            if p.builtin {
                cx.notice = Some((
                    crate::engine::NoticeLevel::Warning,
                    format!("{name} is built in and cannot be deleted"),
                ));
            } else if p.used_by > 0 {
                cx.notice = Some((
                    crate::engine::NoticeLevel::Warning,
                    format!("{name} is used by {} item(s); stop or move their protection before deleting it", p.used_by),
                ));
            } else if cx.writable("Delete policy") {
                cx.push(Popup::Confirm(confirm::State::new(
                    "Delete policy",
                    vec![format!("Delete policy {name}?"), "No item uses it.".into()],
                    vec![Effect::Run(Command::DeletePolicy(name))],
                    true,
                )));
            }
        } else {
            return;
        }
        self.update_preview(cx.data, cx.now);
    }

    pub fn scroll(&mut self, down: bool, data: &Data, now: DateTime<Utc>) {
        self.nav.scroll(down, 1, data.policies.len());
        self.update_preview(data, now);
    }

    pub fn click(&mut self, x: u16, y: u16, cx: &mut Cx) {
        if let Some(i) = self.nav.row_at(x, y, cx.data.policies.len()) {
            self.nav.selected = i;
            self.update_preview(cx.data, cx.now);
        }
    }
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let s = &app.policies;
    let t = &app.theme;
    let d = &app.data;
    let [list_a, detail_a] = if area.width >= 100 {
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(area)
    } else {
        Layout::vertical([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(area)
    };
    let cols = [
        Column::new("Name", Constraint::Length(18)),
        Column::new("Schedule", Constraint::Fill(1)),
        Column::new("Items", Constraint::Length(5)),
    ];
    let empty = if d.loaded {
        "No policies"
    } else {
        "Loading…"
    };
    render_table(
        f,
        list_a,
        panel(format!("Policies ({})", d.policies.len()), t),
        &cols,
        &s.nav,
        d.policies.len(),
        true,
        t,
        empty,
        |n, _| {
            let p = &d.policies[n];
            let name = p.policy.name.clone();
            vec![
                cell(name, Default::default()),
                cell(
                    p.policy.describe().into_iter().next().unwrap_or_default(),
                    Default::default(),
                ),
                cell(
                    format!("{:>5}", p.used_by),
                    if p.used_by == 0 {
                        t.muted()
                    } else {
                        Default::default()
                    },
                ),
            ]
        },
    );
    let block = panel("Details", t);
    let inner = block.inner(detail_a);
    f.render_widget(block, detail_a);
    let Some(p) = d.policies.get(s.nav.selected) else {
        return;
    };
    let mut lines = vec![
        Line::from(Span::styled(p.policy.name.clone(), t.title())),
        Line::from(Span::styled(
            format!("Time zone {}", p.policy.time_zone.name()),
            t.muted(),
        )),
        Line::from(""),
    ];
    let desc = p.policy.describe();
    lines.push(Line::from(vec![
        Span::styled("Schedule  ", t.header()),
        Span::raw(desc.first().cloned().unwrap_or_default()),
    ]));
    for (i, r) in desc.iter().skip(1).enumerate() {
        lines.push(Line::from(vec![
            Span::styled(if i == 0 { "Retention " } else { "          " }, t.header()),
            Span::raw(r.clone()),
        ]));
    }
    lines.push(Line::from(""));
    let usage = match (p.builtin, p.used_by) {
        (true, n) => format!("Used by {n} item(s) · built in: cannot be deleted"),
        (false, 0) => format!(
            "Used by no item · {} deletes it",
            app.keys.label(Action::DeletePolicy)
        ),
        (false, n) => format!("Used by {n} item(s) · can be deleted once no item uses it"),
    };
    lines.push(Line::from(Span::styled(usage, t.muted())));
    // The text first (every rule and the usage line); the chart only in the room left.
    let text_h = lines
        .iter()
        .map(|l| wrapped_rows(l, inner.width))
        .sum::<u16>()
        + 1;
    let [text_a, chart_a] = Layout::vertical([
        Constraint::Length(text_h.min(inner.height)),
        Constraint::Min(0),
    ])
    .areas(inner);
    f.render_widget(wrapped(lines, text_a.width), text_a);
    if let Some((name, _, pv)) = &s.preview {
        if *name == p.policy.name && chart_a.height >= MIN_CHART_ROWS {
            draw_preview(f, chart_a, pv, t);
        }
    }
}

/// Fewest rows worth drawing the retention chart in.
const MIN_CHART_ROWS: u16 = 5;

/// Rows a line takes when word-wrapped to `width` (as `Wrap` does, give or take a row).
fn wrapped_rows(line: &Line, width: u16) -> u16 {
    let width = width.max(1) as usize;
    let text: String = line.spans.iter().map(|s| s.content.as_ref()).collect();
    let mut rows = 1;
    let mut used = 0;
    for word in text.split(' ') {
        let w = word.chars().count();
        let need = if used == 0 { w } else { used + 1 + w };
        if need <= width {
            used = need;
        } else {
            rows += 1 + (w.saturating_sub(1) / width);
            used = w % width;
        }
    }
    rows as u16
}
