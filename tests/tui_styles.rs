//! Where colour carries meaning, check it: Failed is red, Completed green, a running job
//! blue, a protection error red, errors in the notification line red; NO_COLOR leaves no
//! colour at all; the theme from config recolours the roles.

mod tui_support;

use ratatui::backend::TestBackend;
use ratatui::style::{Color, Modifier};
use ratatui::Terminal;
use tui_support::fixture::*;
use vmvault::tui::app::Msg;
use vmvault::tui::theme::Theme;

/// The style of the first cell of the first occurrence of `text` on row `y`, or anywhere.
fn find(t: &Terminal<TestBackend>, text: &str, after: Option<&str>) -> (u16, u16) {
    let s = tui_support::fixture::text(t);
    let lines: Vec<&str> = s.lines().collect();
    for (y, line) in lines.iter().enumerate() {
        if after.is_some_and(|a| !line.contains(a)) {
            continue;
        }
        let from = after.and_then(|a| line.find(a)).unwrap_or(0);
        if let Some(byte) = line[from..].find(text) {
            let x = line[..from + byte].chars().count() as u16;
            return (x, y as u16);
        }
    }
    panic!("{text:?} not on screen:\n{s}");
}

fn fg(t: &Terminal<TestBackend>, at: (u16, u16)) -> Color {
    t.backend().buffer()[at].fg
}

#[test]
fn job_statuses_have_their_colours() {
    let mut a = app(120, 40);
    a.update(key('4'));
    let t = render(&a, 120, 40);
    assert_eq!(
        fg(&t, find(&t, "Failed", Some("analytics/etl01"))),
        Color::Red
    );
    assert!(
        t.backend().buffer()[find(&t, "Failed", Some("analytics/etl01"))]
            .modifier
            .contains(Modifier::BOLD)
    );
    assert_eq!(
        fg(&t, find(&t, "Completed", Some("hr/web01"))),
        Color::Green
    );
    assert_eq!(
        fg(&t, find(&t, "CompletedWithWarnings", None)),
        Color::Yellow
    );
    assert_eq!(
        fg(&t, find(&t, "Cancelled", Some("hr/payroll01"))),
        Color::DarkGray
    );
    assert_eq!(
        fg(&t, find(&t, "InProgress", Some("sales/web01"))),
        Color::Blue
    );
    // The failed job's error code, red as well.
    assert_eq!(fg(&t, find(&t, "UserErrorVmNotFound", None)), Color::Red);
    // The progress bar of the running backup.
    assert_eq!(fg(&t, find(&t, "█", Some("InProgress"))), Color::Blue);
}

#[test]
fn item_states_have_their_colours() {
    let mut a = app(120, 40);
    a.update(key('3'));
    let t = render(&a, 120, 40);
    assert_eq!(fg(&t, find(&t, "Protection error", None)), Color::Red);
    assert_eq!(
        fg(&t, find(&t, "Pending initial backup", None)),
        Color::Blue
    );
    assert_eq!(
        fg(&t, find(&t, "Protected", Some("DefaultPolicy"))),
        Color::Green
    );
    assert_eq!(fg(&t, find(&t, "Failed", Some("sql01"))), Color::Red);
    a.update(key('2'));
    let t = render(&a, 120, 40);
    assert_eq!(fg(&t, find(&t, "Registration failed", None)), Color::Red);
    assert_eq!(fg(&t, find(&t, "Not found", None)), Color::Yellow);
    assert_eq!(fg(&t, find(&t, "Registered", Some("app01"))), Color::Green);
}

#[test]
fn dashboard_counts_and_error_notices_are_coloured() {
    let mut a = app(120, 40);
    let t = render(&a, 120, 40);
    // "Failed" label of the 24-hour counts; its count above it is red.
    let (x, y) = find(&t, "Failed", Some("Completed"));
    let count = t.backend().buffer()[(x + 3, y - 1)].clone();
    assert_eq!(count.symbol(), "2");
    assert_eq!(count.fg, Color::Red);
    a.update(Msg::Engine(Box::new(vmvault::engine::Event::Notice(
        vmvault::engine::Notice {
            level: vmvault::engine::NoticeLevel::Error,
            text: "Backup of sales/sql01 failed: the VM was not found".into(),
            job_id: None,
        },
    ))));
    let t = render(&a, 120, 40);
    assert_eq!(
        fg(&t, find(&t, "Backup of sales/sql01 failed", None)),
        Color::Red
    );
    // The selected row has the selection background.
    a.update(key('2'));
    let t = render(&a, 120, 40);
    assert_eq!(
        t.backend().buffer()[find(&t, "app01", None)].bg,
        Color::Rgb(0x26, 0x4f, 0x78)
    );
}

#[test]
fn no_color_means_no_colour_anywhere() {
    for tab in ['1', '2', '3', '4', '5'] {
        let mut a = app_with(120, 40, Theme::no_color());
        a.update(key(tab));
        let t = render(&a, 120, 40);
        let buf = t.backend().buffer();
        for cell in buf.content() {
            assert!(
                matches!(cell.fg, Color::Reset),
                "tab {tab}: a coloured cell {cell:?}"
            );
            assert!(
                matches!(cell.bg, Color::Reset),
                "tab {tab}: a coloured background {cell:?}"
            );
        }
        // Selection stays visible without colour.
        if tab == '2' {
            assert!(buf[find(&t, "app01", None)]
                .modifier
                .contains(Modifier::REVERSED));
        }
    }
}

#[test]
fn theme_roles_from_config_recolour() {
    let mut o = std::collections::BTreeMap::new();
    o.insert("error".to_string(), "#ff00ff".to_string());
    o.insert("ok".to_string(), "lightgreen".to_string());
    let (theme, warnings) = Theme::from_config(&o, false);
    assert!(warnings.is_empty());
    let mut a = app_with(120, 40, theme);
    a.update(key('4'));
    let t = render(&a, 120, 40);
    assert_eq!(
        fg(&t, find(&t, "Failed", Some("analytics/etl01"))),
        Color::Rgb(0xff, 0, 0xff)
    );
    assert_eq!(
        fg(&t, find(&t, "Completed", Some("hr/web01"))),
        Color::LightGreen
    );
}
