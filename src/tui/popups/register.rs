//! Register items: a multi-select list of the discovered, unregistered VMs of the vault's
//! region (Space toggles, `a` selects all, `/` filters), with the cloud service shown so
//! same-named VMs are told apart. Enter registers the ticked VMs, one Register job each;
//! with none ticked it says how to tick one (it never guesses the highlighted row).
//!
//! [`Picker`], the selectable list, also serves the protect wizard's first step.

use crate::model::*;
use crate::tui::app::{App, Command, Cx};
use crate::tui::data::Data;
use crate::tui::keys::{Action, KeyMap};
use crate::tui::theme::Theme;
use crate::tui::widgets::text::wrapped;
use crate::tui::widgets::{
    check, key_hints, panel, popup_frame, render_table, table::cell, Column, FilterInput,
    FilterKey, TableNav,
};
use crossterm::event::KeyEvent;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;
use std::collections::BTreeSet;

/// A filterable multi-select list of items.
#[derive(Debug, Default)]
pub struct Picker {
    pub candidates: Vec<Item>,
    /// Ids of the selected items.
    pub marked: BTreeSet<String>,
    pub nav: TableNav,
    pub filter: FilterInput,
    order: Vec<usize>,
}

impl Picker {
    pub fn new(candidates: Vec<Item>) -> Picker {
        let mut p = Picker {
            candidates,
            ..Default::default()
        };
        p.rebuild();
        p
    }

    /// New candidates (a snapshot arrived); selections of items still listed are kept.
    pub fn set_candidates(&mut self, candidates: Vec<Item>) {
        let current = self.current().map(|i| i.id.clone());
        self.candidates = candidates;
        let ids: BTreeSet<&str> = self.candidates.iter().map(|i| i.id.as_str()).collect();
        self.marked.retain(|id| ids.contains(id.as_str()));
        self.rebuild();
        if let Some(id) = current {
            if let Some(p) = self.order.iter().position(|n| self.candidates[*n].id == id) {
                self.nav.selected = p;
            }
        }
    }

    fn rebuild(&mut self) {
        let needle = self.filter.value().trim().to_lowercase();
        self.order = self
            .candidates
            .iter()
            .enumerate()
            .filter(|(_, i)| {
                needle.is_empty()
                    || format!("{} {} {}", i.name, i.cloud_service, i.os)
                        .to_lowercase()
                        .contains(&needle)
            })
            .map(|(n, _)| n)
            .collect();
        self.nav.clamp(self.order.len());
    }

    pub fn current(&self) -> Option<&Item> {
        self.order
            .get(self.nav.selected)
            .map(|n| &self.candidates[*n])
    }

    /// The selected items, in list order.
    pub fn selected_items(&self) -> Vec<Item> {
        self.candidates
            .iter()
            .filter(|i| self.marked.contains(&i.id))
            .cloned()
            .collect()
    }

    /// Marks the highlighted item when nothing is selected (Enter on a single row).
    pub fn mark_current_if_none(&mut self) {
        if self.marked.is_empty() {
            if let Some(id) = self.current().map(|i| i.id.clone()) {
                self.marked.insert(id);
            }
        }
    }

    /// Handles navigation, selection and filter keys; true when used.
    pub fn handle_key(&mut self, k: &KeyEvent, keys: &KeyMap) -> bool {
        let len = self.order.len();
        if self.filter.handle(k) == FilterKey::Used {
            self.nav.selected = 0;
            self.rebuild();
            return true;
        }
        if self.nav.navigate(keys, k, len) {
        } else if keys.is(Action::Toggle, k) {
            if let Some(id) = self.current().map(|i| i.id.clone()) {
                if !self.marked.remove(&id) {
                    self.marked.insert(id);
                }
                self.nav.down(1, len);
            }
        } else if keys.is(Action::SelectAll, k) {
            // All shown (filtered) items, or none when they are all selected already.
            let shown: Vec<String> = self
                .order
                .iter()
                .map(|n| self.candidates[*n].id.clone())
                .collect();
            if shown.iter().all(|id| self.marked.contains(id)) {
                for id in shown {
                    self.marked.remove(&id);
                }
            } else {
                self.marked.extend(shown);
            }
        } else if keys.is(Action::Filter, k) {
            self.filter.start();
        } else {
            return false;
        }
        true
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, title: &str, theme: &Theme, empty: &str) {
        let mut t = format!(
            "{title} · {} of {} selected",
            self.marked.len(),
            self.candidates.len()
        );
        if let Some(f) = self.filter.shown() {
            t.push_str(&format!(" · filter \"{f}\""));
        }
        let cols = [
            Column::new("", Constraint::Length(3)),
            Column::new("Name", Constraint::Fill(1)),
            Column::new("Cloud service", Constraint::Fill(1)),
            Column::new("OS", Constraint::Length(7)),
            Column::new("Power state", Constraint::Length(11)),
            Column::new("Disks", Constraint::Length(9)),
        ];
        render_table(
            f,
            area,
            panel(t, theme),
            &cols,
            &self.nav,
            self.order.len(),
            true,
            theme,
            empty,
            |n, _| {
                let i = &self.candidates[self.order[n]];
                let on = self.marked.contains(&i.id);
                vec![
                    cell(check(on), if on { theme.accent() } else { theme.muted() }),
                    cell(i.name.clone(), Default::default()),
                    cell(i.cloud_service.clone(), Default::default()),
                    cell(i.os.to_string(), Default::default()),
                    cell(i.power_state.to_string(), Default::default()),
                    cell(
                        crate::fmt::bytes(i.disks.iter().map(|d| d.capacity).sum()),
                        theme.muted(),
                    ),
                ]
            },
        );
    }
}

/// VMs Register items offers: discovered in this region, not registered, still found.
/// Whether `i` can be registered in a vault of `region`: found there, not registered and
/// not registering.
pub fn can_register(i: &Item, region: &str) -> bool {
    i.region.eq_ignore_ascii_case(region)
        && !i.not_found
        && matches!(
            i.registration_state,
            RegistrationState::NotRegistered | RegistrationState::RegistrationFailed
        )
}

pub fn candidates(data: &Data, region: &str) -> Vec<Item> {
    data.items
        .iter()
        .filter(|i| can_register(i, region))
        .cloned()
        .collect()
}

#[derive(Debug)]
pub struct State {
    pub picker: Picker,
    region: String,
    other_regions: usize,
    /// Enter was pressed with no VM ticked: say how to tick one.
    pub nothing_ticked: bool,
}

impl State {
    pub fn new(data: &Data, region: &str) -> State {
        let other_regions = data
            .items
            .iter()
            .filter(|i| {
                !i.region.eq_ignore_ascii_case(region)
                    && i.registration_state == RegistrationState::NotRegistered
            })
            .count();
        State {
            picker: Picker::new(candidates(data, region)),
            region: region.to_string(),
            other_regions,
            nothing_ticked: false,
        }
    }

    pub fn refresh(&mut self, data: &Data, region: &str) {
        self.picker.set_candidates(candidates(data, region));
    }

    pub fn handle_key(&mut self, k: &KeyEvent, cx: &mut Cx) {
        if self.picker.handle_key(k, cx.keys) {
            self.nothing_ticked &= self.picker.marked.is_empty();
            return;
        }
        if cx.keys.is(Action::Back, k) {
            cx.close();
        } else if cx.keys.is(Action::Open, k) {
            // As the portal's Register button, Enter needs a ticked VM: registering the
            // highlighted row unasked would act on a row the user may never have chosen.
            let items = self.picker.selected_items();
            if items.is_empty() {
                self.nothing_ticked = true;
                return;
            }
            if cx.writable("Register") {
                cx.run(Command::Register(items));
                cx.close();
            }
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, app: &App) {
        let t = &app.theme;
        let r = crate::tui::widgets::wizard::area(area);
        let inner = popup_frame(f, r, "Register items", t);
        let [intro, list, hints] = Layout::vertical([
            Constraint::Length(3),
            Constraint::Min(3),
            Constraint::Length(1),
        ])
        .areas(inner);
        let mut lines = vec![Line::from(vec![
            Span::raw("Workload type: "),
            Span::styled("Virtual machine", t.accent()),
            Span::raw(format!(
                " · region {} · discovered, not registered",
                self.region
            )),
        ])];
        if self.nothing_ticked {
            lines.push(Line::from(Span::styled(
                format!(
                    "No VM is ticked: {} ticks the highlighted one ({} all), then {} registers them",
                    app.keys.label(Action::Toggle),
                    app.keys.label(Action::SelectAll),
                    app.keys.label(Action::Open)
                ),
                t.error(),
            )));
        }
        if self.other_regions > 0 {
            lines.push(Line::from(Span::styled(
                format!(
                    "{} VM(s) of other regions not listed (register them in their region's vault)",
                    self.other_regions
                ),
                t.muted(),
            )));
        }
        f.render_widget(wrapped(lines, intro.width), intro);
        let empty = format!(
            "No unregistered VMs in {}: discover ({}) to find new ones",
            self.region,
            app.keys.label(Action::Discover)
        );
        self.picker.draw(f, list, "Virtual machines", t, &empty);
        let k = &app.keys;
        let hints_v = [
            (k.label(Action::Toggle), "select"),
            (k.label(Action::SelectAll), "all"),
            (k.label(Action::Filter), "filter"),
            (k.label(Action::Open), "register selected"),
            (k.label(Action::Back), "close"),
        ];
        f.render_widget(Paragraph::new(key_hints(&hints_v, t)), hints);
    }
}
