//! Protected Items: items under (or once under) a policy, with their last backup, points
//! and next backup. `p` opens the protect wizard, `b` backs up now, Enter opens an item.

use super::{list_title, ItemTable, SortValue};
use crate::fmt;
use crate::model::*;
use crate::tui::app::{App, Cx};
use crate::tui::data::Data;
use crate::tui::keys::Action;
use crate::tui::popups::{self, Popup};
use crate::tui::widgets::{panel, render_table, table::cell, table::fit_columns, Column};
use crossterm::event::KeyEvent;
use ratatui::layout::{Constraint, Rect};
use ratatui::Frame;

pub const ACTIONS: &[Action] = &[
    Action::Protect,
    Action::BackupNow,
    Action::Open,
    Action::Up,
    Action::Down,
    Action::PageUp,
    Action::PageDown,
    Action::Top,
    Action::Bottom,
    Action::Filter,
    Action::Sort,
    Action::SortReverse,
];

const COLUMNS: [&str; 8] = [
    "Name",
    "Cloud service",
    "Policy",
    "Protection state",
    "Last backup",
    "Last status",
    "Points",
    "Next backup",
];

#[derive(Debug, Default)]
pub struct State {
    pub table: ItemTable,
}

/// Items the Protected Items list shows: everything that is or was protected.
pub fn is_listed(i: &Item) -> bool {
    i.protection_state != ProtectionState::NotProtected
}

impl State {
    pub fn refresh(&mut self, data: &Data) {
        let counts = data.point_counts.clone();
        let next = data.next_backup.clone();
        self.table.rebuild(
            data,
            is_listed,
            |i| {
                format!(
                    "{} {} {} {}",
                    i.name,
                    i.cloud_service,
                    i.policy.as_deref().unwrap_or(""),
                    i.protection_state.label()
                )
            },
            move |i, c| match c {
                0 => SortValue::Text(i.name.to_lowercase()),
                1 => SortValue::Text(i.cloud_service.to_lowercase()),
                2 => SortValue::Text(i.policy.clone().unwrap_or_default()),
                3 => SortValue::Text(i.protection_state.label().to_string()),
                4 => SortValue::Time(i.last_backup_time),
                5 => SortValue::Text(
                    i.last_backup_status
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                ),
                6 => SortValue::Num(counts.get(&i.id).copied().unwrap_or(0) as i64),
                _ => SortValue::Time(next.get(&i.id).copied()),
            },
        );
    }

    pub fn capturing_text(&self) -> bool {
        self.table.filter.typing
    }

    pub fn footer(&self, data: &Data) -> Vec<Action> {
        if self.table.filter.typing {
            return vec![Action::Open, Action::Back];
        }
        let mut v = vec![Action::Protect];
        // b only for an item that can be backed up (b on another says why).
        if self
            .table
            .selected(data)
            .is_some_and(|i| i.protection_state.is_under_policy())
        {
            v.push(Action::BackupNow);
        }
        v.extend([Action::Open, Action::Filter, Action::Sort]);
        v
    }

    pub fn handle_key(&mut self, k: &KeyEvent, cx: &mut Cx) {
        if self.table.handle(k, cx.keys, COLUMNS.len(), cx.data) {
            self.refresh(cx.data);
            return;
        }
        let keys = cx.keys;
        if keys.is(Action::Protect, k) {
            if cx.writable("Protect") {
                cx.push(Popup::Protect(Box::new(popups::protect::State::new(
                    cx.data,
                    cx.region(),
                    cx.now,
                ))));
            }
        } else if keys.is(Action::BackupNow, k) {
            if let Some(i) = self.table.selected(cx.data) {
                if let Some(why) = popups::backup_now::refusal(i, cx, false) {
                    cx.notice = Some((crate::engine::NoticeLevel::Warning, why));
                } else if cx.writable("Back up now") {
                    cx.push(Popup::BackupNow(popups::backup_now::State::new(
                        i.clone(),
                        cx.now,
                    )));
                }
            }
        } else if keys.is(Action::Open, k) {
            self.table.open_selected(cx);
        }
    }
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let s = &app.protected;
    let t = &app.theme;
    let w = area.width;
    // Columns by width: every column from 150 on; the name carries the cloud service below.
    let mut cols: Vec<(usize, Column)> = Vec::new();
    let wide = w >= 150;
    let medium = w >= 110;
    cols.push((0, Column::new(COLUMNS[0], Constraint::Fill(1))));
    if wide {
        cols.push((1, Column::new(COLUMNS[1], Constraint::Length(14))));
    }
    if medium {
        cols.push((2, Column::new(COLUMNS[2], Constraint::Length(14))));
    }
    cols.push((
        3,
        Column::new(COLUMNS[3], Constraint::Length(if wide { 34 } else { 22 })),
    ));
    cols.push((4, Column::new(COLUMNS[4], Constraint::Length(16))));
    if medium {
        cols.push((
            5,
            Column::new(COLUMNS[5], Constraint::Length(if wide { 21 } else { 11 })),
        ));
    }
    cols.push((6, Column::new(COLUMNS[6], Constraint::Length(6))));
    if medium {
        cols.push((7, Column::new(COLUMNS[7], Constraint::Length(16))));
    }
    // The name keeps room for "cloud-service/name": the optional columns go first.
    fit_columns(&mut cols, w, if wide { 16 } else { 24 }, &[7, 5, 2, 1]);
    let columns: Vec<Column> = cols.iter().map(|c| c.1).collect();
    let total = app.data.items.iter().filter(|i| is_listed(i)).count();
    let title = list_title(
        "Protected Items",
        s.table.order.len(),
        total,
        &s.table.filter,
        s.table.sort,
        &COLUMNS,
    );
    let empty = if !app.data.loaded {
        "Loading…".to_string()
    } else if total == 0 {
        format!(
            "No protected items yet: press {} to protect registered VMs",
            app.keys.label(Action::Protect)
        )
    } else {
        "No item matches the filter".to_string()
    };
    let data = &app.data;
    let running_backup: std::collections::HashSet<&str> = app
        .running
        .values()
        .filter(|j| j.operation == JobOperation::Backup)
        .filter_map(|j| j.item_id.as_deref())
        .collect();
    render_table(
        f,
        area,
        panel(title, t),
        &columns,
        &s.table.nav,
        s.table.order.len(),
        true,
        t,
        &empty,
        |n, _| {
            let i = &data.items[s.table.order[n]];
            let cells = cols
                .iter()
                .map(|(c, _)| match c {
                    0 => cell(
                        if wide {
                            i.name.clone()
                        } else {
                            i.qualified_name()
                        },
                        Default::default(),
                    ),
                    1 => cell(i.cloud_service.clone(), Default::default()),
                    2 => cell(
                        i.policy.clone().unwrap_or_else(|| "—".into()),
                        Default::default(),
                    ),
                    3 => {
                        let label = if wide {
                            i.protection_state.label().to_string()
                        } else {
                            match i.protection_state {
                                ProtectionState::IrPending => "Pending initial backup".to_string(),
                                s => s.label().to_string(),
                            }
                        };
                        cell(label, t.protection_state(i.protection_state))
                    }
                    4 => {
                        if running_backup.contains(i.id.as_str()) {
                            cell("backing up…", t.running())
                        } else {
                            cell(
                                i.last_backup_time
                                    .map(fmt::time)
                                    .unwrap_or_else(|| "—".into()),
                                Default::default(),
                            )
                        }
                    }
                    5 => match i.last_backup_status {
                        Some(st) => cell(st.to_string(), t.job_status(st)),
                        None => cell("—", t.muted()),
                    },
                    6 => cell(
                        format!("{:>6}", data.point_counts.get(&i.id).copied().unwrap_or(0)),
                        Default::default(),
                    ),
                    _ => cell(
                        data.next_backup
                            .get(&i.id)
                            .map(|t| fmt::time(*t))
                            .unwrap_or_else(|| "—".into()),
                        Default::default(),
                    ),
                })
                .collect::<Vec<_>>();
            cells
        },
    );
}
