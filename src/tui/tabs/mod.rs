//! The five tabs, one file each, and the item table the two item tabs share.

pub mod dashboard;
pub mod jobs;
pub mod policies;
pub mod protected;
pub mod registered;

use super::data::Data;
use super::keys::{Action, KeyMap};
use super::widgets::{FilterInput, FilterKey, TableNav};
use crate::model::*;
use chrono::{DateTime, Utc};
use crossterm::event::{KeyCode, KeyEvent};

/// A value to sort a column by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SortValue {
    Text(String),
    Num(i64),
    Time(Option<DateTime<Utc>>),
}

/// Sort column and direction: `s` moves to the next column (then back to none), `S`
/// reverses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sort {
    pub column: Option<usize>,
    pub reverse: bool,
}

impl Sort {
    pub fn next(&mut self, columns: usize) {
        self.column = match self.column {
            None => Some(0),
            Some(c) if c + 1 < columns => Some(c + 1),
            Some(_) => None,
        };
    }
}

/// A filtered, sorted view of the vault's items: the indices to show, rebuilt only when
/// the data, the filter or the sort changes (not per frame).
#[derive(Debug, Default)]
pub struct ItemTable {
    pub nav: TableNav,
    pub filter: FilterInput,
    pub sort: Sort,
    /// Indices into `data.items`, in display order.
    pub order: Vec<usize>,
    built: Option<(u64, String, Sort)>,
    selected_id: Option<String>,
}

impl ItemTable {
    /// Opens the item details of the selected row.
    pub fn open_selected(&self, cx: &mut super::app::Cx) {
        if let Some(i) = self.selected(cx.data) {
            cx.push(super::popups::Popup::Item(Box::new(
                super::popups::item::State::new(i.clone()),
            )));
        }
    }

    pub fn scroll(&mut self, down: bool, data: &Data) {
        let len = self.order.len();
        self.nav.scroll(down, 3, len);
        self.remember_selection(data);
    }

    /// A click selects a row; a click on the selected row opens it.
    pub fn click(&mut self, x: u16, y: u16, cx: &mut super::app::Cx) {
        if let Some(i) = self.nav.row_at(x, y, self.order.len()) {
            if i == self.nav.selected {
                self.open_selected(cx);
            }
            self.nav.selected = i;
            self.remember_selection(cx.data);
        }
    }

    /// Rebuilds the order when something it depends on changed, keeping the selection on
    /// the same item.
    pub fn rebuild(
        &mut self,
        data: &Data,
        include: impl Fn(&Item) -> bool,
        text: impl Fn(&Item) -> String,
        key: impl Fn(&Item, usize) -> SortValue,
    ) {
        let k = (data.generation, self.filter.value().to_string(), self.sort);
        if self.built.as_ref() == Some(&k) {
            return;
        }
        // `order` indexes the items it was built from: only while they are still the items
        // shown can it name the selected one (every move remembers it anyway; a new
        // snapshot may have shifted the indices).
        if self.built.as_ref().is_some_and(|b| b.0 == data.generation) {
            if let Some(i) = self
                .order
                .get(self.nav.selected)
                .and_then(|i| data.items.get(*i))
            {
                self.selected_id = Some(i.id.clone());
            }
        }
        let needle = self.filter.value().trim().to_lowercase();
        let mut order: Vec<usize> = data
            .items
            .iter()
            .enumerate()
            .filter(|(_, i)| include(i))
            .filter(|(_, i)| needle.is_empty() || text(i).to_lowercase().contains(&needle))
            .map(|(n, _)| n)
            .collect();
        if let Some(c) = self.sort.column {
            let mut keyed: Vec<(SortValue, usize)> = order
                .iter()
                .map(|n| (key(&data.items[*n], c), *n))
                .collect();
            keyed.sort();
            order = keyed.into_iter().map(|(_, n)| n).collect();
        }
        if self.sort.reverse {
            order.reverse();
        }
        self.order = order;
        if let Some(id) = &self.selected_id {
            if let Some(pos) = self
                .order
                .iter()
                .position(|n| data.items.get(*n).is_some_and(|i| &i.id == id))
            {
                self.nav.selected = pos;
            }
        }
        self.nav.clamp(self.order.len());
        self.built = Some(k);
    }

    pub fn selected<'a>(&self, data: &'a Data) -> Option<&'a Item> {
        self.order
            .get(self.nav.selected)
            .and_then(|n| data.items.get(*n))
    }

    pub fn remember_selection(&mut self, data: &Data) {
        self.selected_id = self.selected(data).map(|i| i.id.clone());
    }

    /// Navigation, filter typing and sorting. Returns true when the key was used.
    pub fn handle(&mut self, k: &KeyEvent, keys: &KeyMap, columns: usize, data: &Data) -> bool {
        let len = self.order.len();
        if self.filter.handle(k) == FilterKey::Used {
            self.nav.selected = 0;
            return true;
        }
        if self.nav.navigate(keys, k, len) {
        } else if keys.is(Action::Filter, k) {
            self.filter.start();
        } else if keys.is(Action::Sort, k) {
            self.remember_selection(data);
            self.sort.next(columns);
        } else if keys.is(Action::SortReverse, k) {
            self.remember_selection(data);
            self.sort.reverse = !self.sort.reverse;
        } else if k.code == KeyCode::Esc && !self.filter.value().is_empty() {
            self.filter.set("");
        } else {
            return false;
        }
        self.remember_selection(data);
        true
    }
}

/// Status words of an item in the Registered Items list.
pub fn registration_label(i: &Item) -> &'static str {
    if i.not_found {
        return "Not found";
    }
    match i.registration_state {
        RegistrationState::NotRegistered => "Not registered",
        RegistrationState::Registering => "Registering",
        RegistrationState::Registered => "Registered",
        RegistrationState::RegistrationFailed => "Registration failed",
    }
}

/// The title of a list with its filter and sort, e.g. `Registered Items (13) · filter "web"`.
pub fn list_title(
    name: &str,
    shown: usize,
    total: usize,
    filter: &FilterInput,
    sort: Sort,
    columns: &[&str],
) -> String {
    let mut t = if shown == total {
        format!("{name} ({total})")
    } else {
        format!("{name} ({shown} of {total})")
    };
    if let Some(f) = filter.shown() {
        t.push_str(&format!(" · filter \"{f}\""));
    }
    if let Some(c) = sort.column {
        t.push_str(&format!(
            " · sorted by {}{}",
            columns.get(c).copied().unwrap_or("?"),
            if sort.reverse { " ↓" } else { " ↑" }
        ));
    } else if sort.reverse {
        t.push_str(" · reversed");
    }
    t
}
