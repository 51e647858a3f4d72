//! Drawing: `view(&App, &mut Frame)` lays out the header, the tabs, the current tab, the
//! notification line and the footer, then the popups on top. It only reads the state (no
//! I/O, no engine calls); below a minimum size it says so instead of drawing.

use super::app::{App, Tab};
use super::keys::Action;
use super::popups::Popup;
use super::tabs;
use super::widgets::text::fit_line;
use super::widgets::{key_hints, SPINNER};
use crate::engine::NoticeLevel;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

/// Below this the console does not draw its views.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 15;

pub fn view(app: &App, f: &mut Frame) {
    let area = f.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        too_small(app, f, area);
        return;
    }
    let [header, tabs_a, body, notice, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(app, f, header);
    draw_tabs(app, f, tabs_a);
    match app.tab {
        Tab::Dashboard => tabs::dashboard::draw(f, body, app),
        Tab::Registered => tabs::registered::draw(f, body, app),
        Tab::Protected => tabs::protected::draw(f, body, app),
        Tab::Jobs => tabs::jobs::draw(f, body, app),
        Tab::Policies => tabs::policies::draw(f, body, app),
    }
    draw_notice(app, f, notice);
    draw_footer(app, f, footer);
    for p in &app.popups {
        p.draw(
            f,
            Rect {
                height: area.height.saturating_sub(1),
                ..area
            },
            app,
        );
    }
}

fn too_small(app: &App, f: &mut Frame, area: Rect) {
    let t = &app.theme;
    let lines = vec![
        Line::from(Span::styled(
            "terminal too small",
            t.warning().add_modifier(Modifier::BOLD),
        )),
        Line::from(format!(
            "{}×{}; vmvault needs {MIN_WIDTH}×{MIN_HEIGHT}",
            area.width, area.height
        )),
        Line::from(format!("{} quits", app.keys.label(Action::Quit))),
    ];
    let h = (lines.len() as u16).min(area.height);
    let y = area.y + area.height.saturating_sub(h) / 2;
    f.render_widget(
        Paragraph::new(lines).centered(),
        Rect {
            y,
            height: h,
            ..area
        },
    );
}

fn draw_header(app: &App, f: &mut Frame, area: Rect) {
    let t = &app.theme;
    // Narrow terminals get a shorter header: no badge, "2 running", "(sim)".
    let narrow = area.width < 110;
    let mut right = Vec::new();
    if app.busy() {
        let n = app.running.len();
        right.push(Span::styled(
            format!("{} ", SPINNER[app.spinner % SPINNER.len()]),
            t.running(),
        ));
        let words = match (n, narrow) {
            (n, true) => format!("{n} running"),
            (1, false) => "1 job running".to_string(),
            (n, false) => format!("{n} jobs running"),
        };
        right.push(Span::styled(words, t.running()));
        right.push(Span::styled(" │ ", t.muted()));
    }
    if let Some(e) = &app.load_error {
        right.push(Span::styled(
            format!("⚠ {} ", super::app::first_line(e)),
            t.error(),
        ));
    }
    let simulated = app.vault.as_ref().is_some_and(|v| v.simulated);
    right.push(Span::raw(format!(
        "{} UTC",
        app.now.format("%Y-%m-%d %H:%M")
    )));
    if simulated {
        right.push(Span::styled(
            if narrow { " (sim)" } else { " (simulated)" },
            t.muted(),
        ));
    }
    right.push(Span::raw(" "));
    let right_w: usize = right.iter().map(|s| s.width()).sum();
    let [l, r] =
        Layout::horizontal([Constraint::Min(0), Constraint::Length(right_w as u16)]).areas(area);

    // Left: the vault's facts, the least important dropped first when they do not fit.
    let mut left = if narrow {
        vec![Span::raw(" ")]
    } else {
        vec![
            Span::styled(" vmvault ", t.title().add_modifier(Modifier::REVERSED)),
            Span::raw(" "),
        ]
    };
    match &app.vault {
        Some(v) => {
            let mut parts: Vec<(u8, Span)> = vec![
                (0, Span::styled(v.name.clone(), t.title())),
                (2, Span::raw(v.region.clone())),
                (3, Span::raw(v.source_kind.clone())),
            ];
            if v.unencrypted_v1 {
                parts.push((2, Span::styled("format v1, unencrypted", t.warning())));
            }
            if v.read_only.is_some() {
                let badge = if v.free {
                    format!(
                        "READ-ONLY · free: {} takes over",
                        app.keys.label(Action::TakeOver)
                    )
                } else {
                    "READ-ONLY".to_string()
                };
                parts.push((
                    1,
                    Span::styled(badge, t.warning().add_modifier(Modifier::BOLD)),
                ));
            }
            let fixed: usize = left.iter().map(|s| s.width()).sum();
            let width = |p: &[(u8, Span)]| fixed + p.iter().map(|x| x.1.width() + 3).sum::<usize>();
            while width(&parts) > l.width as usize && parts.len() > 1 {
                let worst = parts
                    .iter()
                    .enumerate()
                    .max_by_key(|(_, p)| p.0)
                    .map(|(i, _)| i)
                    .unwrap_or(0);
                parts.remove(worst);
            }
            for (i, (_, span)) in parts.into_iter().enumerate() {
                if i > 0 {
                    left.push(Span::styled(" │ ", t.muted()));
                }
                left.push(span);
            }
        }
        None => left.push(Span::styled("no vault open", t.warning())),
    }
    f.render_widget(Paragraph::new(Line::from(left)), l);
    f.render_widget(Paragraph::new(Line::from(right)), r);
}

fn draw_tabs(app: &App, f: &mut Frame, area: Rect) {
    let t = &app.theme;
    let mut spans = vec![Span::raw(" ")];
    let mut x = area.x + 1;
    let mut hit = Vec::new();
    // Full titles when they fit, else shorter ones, so that every tab stays visible.
    let width_of = |title: fn(Tab) -> &'static str| -> usize {
        1 + Tab::ALL
            .iter()
            .map(|t| title(*t).chars().count() + 5)
            .sum::<usize>()
    };
    let title: fn(Tab) -> &'static str = if width_of(Tab::title) <= area.width as usize {
        Tab::title
    } else if width_of(Tab::short_title) <= area.width as usize {
        Tab::short_title
    } else {
        Tab::tiny_title
    };
    for (i, tab) in Tab::ALL.iter().enumerate() {
        let text = format!(" {} {} ", i + 1, title(*tab));
        let w = text.chars().count() as u16;
        let style = if *tab == app.tab {
            t.selected().add_modifier(Modifier::BOLD)
        } else {
            t.muted()
        };
        hit.push((
            Rect {
                x,
                y: area.y,
                width: w,
                height: 1,
            },
            *tab,
        ));
        spans.push(Span::styled(text, style));
        spans.push(Span::raw(" "));
        x += w + 1;
    }
    *app.tab_areas.borrow_mut() = hit;
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_notice(app: &App, f: &mut Frame, area: Rect) {
    let t = &app.theme;
    let Some(n) = &app.notice else {
        return;
    };
    let style = match n.level {
        NoticeLevel::Info => t.accent(),
        NoticeLevel::Warning => t.warning(),
        NoticeLevel::Error => t.error(),
    };
    let icon = match n.level {
        NoticeLevel::Info => "ℹ",
        NoticeLevel::Warning => "⚠",
        NoticeLevel::Error => "✗",
    };
    let mut text = n.text.clone();
    if let Some(since) = n.since {
        let secs = (app.now - since).num_seconds().max(0);
        text.push_str(&format!(" {}", crate::fmt::duration_secs(secs as f64)));
    }
    let line = Line::from(vec![
        Span::styled(format!(" {icon} "), style),
        Span::styled(text, style),
    ]);
    f.render_widget(Paragraph::new(fit_line(line, area.width as usize)), area);
}

fn draw_footer(app: &App, f: &mut Frame, area: Rect) {
    let t = &app.theme;
    let mut hints: Vec<(String, &str)> = Vec::new();
    if app.popups.last().is_some_and(Popup::asks) {
        // A question answers to y and n, not to the actions of a view.
        hints.extend(
            crate::tui::popups::confirm::HINTS
                .iter()
                .map(|(k, v)| (k.to_string(), *v)),
        );
    }
    for a in app.footer_actions() {
        let label = match a {
            Action::Up | Action::Down => "↑↓".to_string(),
            Action::Left | Action::Right => "←→".to_string(),
            _ => app.keys.label(a),
        };
        if !hints.iter().any(|(k, _)| *k == label) {
            hints.push((label, a.short()));
        }
    }
    // Too long for the width: drop the view's last hints, never Help and Quit (the way
    // out and the way to every other key).
    let keep = [app.keys.label(Action::Help), app.keys.label(Action::Quit)];
    let width = |h: &[(String, &str)]| -> usize {
        1 + h
            .iter()
            .map(|(k, l)| k.chars().count() + 1 + l.chars().count() + 2)
            .sum::<usize>()
    };
    while width(&hints) > area.width as usize + 2 {
        match hints.iter().rposition(|(k, _)| !keep.contains(k)) {
            Some(i) => {
                hints.remove(i);
            }
            None => break,
        }
    }
    let mut line = key_hints(&hints, t);
    line.spans.insert(0, Span::raw(" "));
    f.render_widget(
        Paragraph::new(line).style(t.muted().remove_modifier(Modifier::BOLD)),
        area,
    );
}
