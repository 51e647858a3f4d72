//! Registered Items: every VM discovery found, with its registration status; `d`
//! discovers, `r` opens Register items.

use super::{list_title, registration_label, ItemTable, SortValue};
use crate::model::*;
use crate::tui::app::{App, Command, Cx};
use crate::tui::data::Data;
use crate::tui::keys::Action;
use crate::tui::popups::{self, Popup};
use crate::tui::widgets::{panel, render_table, table::cell, table::fit_columns, Column};
use crossterm::event::KeyEvent;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

pub const ACTIONS: &[Action] = &[
    Action::Discover,
    Action::Register,
    Action::Workload,
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

const COLUMNS: [&str; 6] = [
    "Name",
    "Cloud service",
    "Region",
    "OS",
    "Power state",
    "Status",
];

#[derive(Debug, Default)]
pub struct State {
    pub table: ItemTable,
}

fn text(i: &Item) -> String {
    format!(
        "{} {} {} {} {}",
        i.name,
        i.cloud_service,
        i.region,
        i.os,
        registration_label(i)
    )
}

fn key(i: &Item, c: usize) -> SortValue {
    match c {
        0 => SortValue::Text(i.name.to_lowercase()),
        1 => SortValue::Text(i.cloud_service.to_lowercase()),
        2 => SortValue::Text(i.region.clone()),
        3 => SortValue::Text(i.os.to_string()),
        4 => SortValue::Text(i.power_state.to_string()),
        _ => SortValue::Text(registration_label(i).to_string()),
    }
}

impl State {
    pub fn refresh(&mut self, data: &Data) {
        self.table.rebuild(data, |_| true, text, key);
    }

    pub fn capturing_text(&self) -> bool {
        self.table.filter.typing
    }

    pub fn footer(&self) -> Vec<Action> {
        if self.table.filter.typing {
            return vec![Action::Open, Action::Back];
        }
        vec![
            Action::Discover,
            Action::Register,
            Action::Open,
            Action::Filter,
            Action::Sort,
        ]
    }

    pub fn handle_key(&mut self, k: &KeyEvent, cx: &mut Cx) {
        if self.table.handle(k, cx.keys, COLUMNS.len(), cx.data) {
            self.refresh(cx.data);
            return;
        }
        let keys = cx.keys;
        if keys.is(Action::Discover, k) {
            if cx.writable("Discover") {
                if let Some(j) = cx
                    .running
                    .values()
                    .find(|j| j.operation == JobOperation::Discover)
                {
                    cx.notice = Some((
                        crate::engine::NoticeLevel::Info,
                        format!(
                            "Discovery is running already (job {})",
                            crate::tui::app::short_id(&j.id)
                        ),
                    ));
                } else {
                    cx.run(Command::Discover);
                }
            }
        } else if keys.is(Action::Register, k) {
            if cx.writable("Register") {
                cx.push(Popup::Register(popups::register::State::new(
                    cx.data,
                    cx.region(),
                )));
            }
        } else if keys.is(Action::Workload, k) {
            cx.notice = Some((
                crate::engine::NoticeLevel::Info,
                "Workload type: Virtual machine (the only workload this vault backs up)".into(),
            ));
        } else if keys.is(Action::Open, k) {
            self.table.open_selected(cx);
        }
    }
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let s = &app.registered;
    let t = &app.theme;
    let [top, body] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    let items = &app.data.items;
    let registered = items
        .iter()
        .filter(|i| i.registration_state == RegistrationState::Registered)
        .count();
    let region = app.vault.as_ref().map(|v| v.region.as_str()).unwrap_or("");
    // As many as the Register popup offers.
    let unregistered_here = items
        .iter()
        .filter(|i| popups::register::can_register(i, region))
        .count();
    let line = Line::from(vec![
        Span::raw(" Workload type: "),
        Span::styled("‹ Virtual machine ›", t.accent()),
        Span::styled(
            format!("   {} VMs discovered · {registered} registered · {unregistered_here} ready to register in {region}", items.len()),
            t.muted(),
        ),
    ]);
    f.render_widget(Paragraph::new(line), top);

    let wide = area.width >= 100;
    let mut cols: Vec<(usize, Column)> = if wide {
        vec![
            (0, Column::new(COLUMNS[0], Constraint::Fill(2))),
            (1, Column::new(COLUMNS[1], Constraint::Fill(1))),
            (2, Column::new(COLUMNS[2], Constraint::Length(14))),
            (3, Column::new(COLUMNS[3], Constraint::Length(8))),
            (4, Column::new(COLUMNS[4], Constraint::Length(11))),
            (5, Column::new(COLUMNS[5], Constraint::Length(19))),
        ]
    } else {
        vec![
            (0, Column::new(COLUMNS[0], Constraint::Fill(1))),
            (1, Column::new(COLUMNS[1], Constraint::Length(13))),
            (2, Column::new(COLUMNS[2], Constraint::Length(13))),
            (3, Column::new(COLUMNS[3], Constraint::Length(7))),
            (4, Column::new(COLUMNS[4], Constraint::Length(11))),
            (5, Column::new(COLUMNS[5], Constraint::Length(19))),
        ]
    };
    // Narrow: region and OS go first, then power state and cloud service; never the name.
    fit_columns(&mut cols, area.width, 10, &[2, 3, 4, 1]);
    let kept: Vec<usize> = cols.iter().map(|c| c.0).collect();
    let cols: Vec<Column> = cols.into_iter().map(|c| c.1).collect();
    let title = list_title(
        "Registered Items",
        s.table.order.len(),
        items.len(),
        &s.table.filter,
        s.table.sort,
        &COLUMNS,
    );
    let empty = if !app.data.loaded {
        "Loading…".to_string()
    } else if items.is_empty() {
        format!(
            "No virtual machines yet: press {} to discover them",
            app.keys.label(Action::Discover)
        )
    } else {
        "No item matches the filter".to_string()
    };
    let data = &app.data;
    render_table(
        f,
        body,
        panel(title, t),
        &cols,
        &s.table.nav,
        s.table.order.len(),
        true,
        t,
        &empty,
        |n, _| {
            let i = &data.items[s.table.order[n]];
            let status_style = match (i.not_found, i.registration_state) {
                (true, _) => t.warning(),
                (_, RegistrationState::Registered) => t.ok(),
                (_, RegistrationState::Registering) => t.running(),
                (_, RegistrationState::RegistrationFailed) => t.error(),
                _ => t.muted(),
            };
            let other_region = !i.region.eq_ignore_ascii_case(region);
            let mut all = vec![
                cell(i.name.clone(), Default::default()),
                cell(i.cloud_service.clone(), Default::default()),
                cell(
                    i.region.clone(),
                    if other_region {
                        t.muted()
                    } else {
                        Default::default()
                    },
                ),
                cell(i.os.to_string(), Default::default()),
                cell(
                    i.power_state.to_string(),
                    if i.power_state == PowerState::Running {
                        Default::default()
                    } else {
                        t.muted()
                    },
                ),
                cell(
                    // An unregistered VM of another region cannot be registered here:
                    // say so in words (colour may be off), as `vmvault items` does.
                    if other_region && i.registration_state == RegistrationState::NotRegistered {
                        "Other region"
                    } else {
                        registration_label(i)
                    },
                    status_style,
                ),
            ];
            let mut n = 0;
            all.retain(|_| {
                n += 1;
                kept.contains(&(n - 1))
            });
            all
        },
    );
}
