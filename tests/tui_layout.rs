//! Narrow and wide layouts: numbers are never cut, every tab stays in the tab bar, and the
//! item's name is the last column to go.

mod tui_support;

use tui_support::fixture::*;

fn screen(tab: char, w: u16, h: u16) -> String {
    let mut a = app(w, h);
    a.update(key(tab));
    text(&render(&a, w, h))
}

fn line_with<'a>(s: &'a str, what: &str) -> &'a str {
    s.lines()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("{what:?} not on screen:\n{s}"))
}

#[test]
fn dashboard_numbers_are_whole_at_narrow_sizes() {
    for (w, h) in [(70, 20), (60, 15)] {
        let s = screen('1', w, h);
        // 11 VMs discovered; 7.00 GiB protected, 4.00 GiB stored.
        assert!(
            line_with(&s, "Discovered").contains(" 11│"),
            "{w}x{h}:\n{s}"
        );
        assert!(line_with(&s, "Need att").contains(" 2│"), "{w}x{h}:\n{s}");
        assert!(s.contains("7.00 GiB"), "{w}x{h}:\n{s}");
        assert!(s.contains("4.00 GiB"), "{w}x{h}:\n{s}");
        // Every tab is in the tab bar.
        let tabs = s.lines().nth(1).unwrap_or_default();
        for n in ["1 ", "2 ", "3 ", "4 Jobs", "5 Pol"] {
            assert!(tabs.contains(n), "{w}x{h}: {tabs}");
        }
    }
}

#[test]
fn registered_items_keep_the_name_when_narrow() {
    for w in [74, 70, 60] {
        let s = screen('2', w, 24);
        let header = line_with(&s, "Status");
        assert!(header.contains("│Name "), "{w}: {header}");
        assert!(s.contains("payroll01 "), "{w}:\n{s}");
        // Region and OS went first.
        assert!(!header.contains("Region"), "{w}: {header}");
    }
    let s = screen('2', 100, 24);
    assert!(line_with(&s, "Status").contains("Region"), "{s}");
}

#[test]
fn protected_items_give_the_name_room_at_every_width() {
    for w in [80, 100, 120, 140] {
        let s = screen('3', w, 24);
        let header = line_with(&s, "Protection state");
        let name = header.find("Name").unwrap_or(0);
        let next = header[name + 4..]
            .find(|c: char| c != ' ')
            .map(|n| n + name + 4)
            .unwrap_or(0);
        assert!(
            next - name >= 24,
            "{w}: name column {} wide: {header}",
            next - name
        );
        assert!(s.contains("hr/payroll01"), "{w}:\n{s}");
    }
}

#[test]
fn protected_items_show_every_column_when_wide() {
    let s = screen('3', 150, 24);
    let header = line_with(&s, "Protection state");
    for c in [
        "Name",
        "Cloud service",
        "Policy",
        "Last status",
        "Points",
        "Next backup",
    ] {
        assert!(header.contains(c), "{c}: {header}");
    }
}

#[test]
fn the_jobs_list_fits_rate_and_time_left_at_120_columns() {
    let s = screen('4', 120, 40);
    let row = line_with(&s, "InProgress");
    assert!(row.contains("38%"), "{row}");
    assert!(row.contains("MiB/s") && row.contains("left"), "{row}");
    assert!(line_with(&s, "Item").contains("Item"), "{s}");
}

#[test]
fn cut_text_ends_with_an_ellipsis() {
    use std::sync::Arc;
    use vmvault::tui::app::Msg;
    let mut a = app(80, 24);
    let mut d = data();
    let mut items = (*d.items).clone();
    items[0].name = "a-virtual-machine-with-a-name-far-too-long-for-its-column".into();
    d.items = Arc::new(items);
    d.generation += 1;
    a.update(Msg::Data(Box::new(Ok(d))));
    a.update(key('2'));
    let s = text(&render(&a, 80, 24));
    let row = line_with(&s, "a-virtual");
    assert!(row.contains("a-virtual…"), "{row}");
    // Labels too: the notification line.
    a.set_notice(
        vmvault::engine::NoticeLevel::Info,
        format!("Register: job created for {}", "x".repeat(100)),
    );
    let s = text(&render(&a, 80, 24));
    let notice = line_with(&s, "Register: job created");
    assert!(notice.trim_end().ends_with("x…"), "{notice}");
}

#[test]
fn a_form_scrolls_to_its_focused_field_at_60x15() {
    use crossterm::event::KeyCode;
    use vmvault::tui::popups::Popup;
    // Edit Gold (every retention rule): its retention form is taller than the screen.
    let mut a = app(60, 15);
    a.update(key('5'));
    a.update(code(KeyCode::Down));
    a.update(key('e'));
    a.update(code(KeyCode::Enter));
    let rows = match a.popups.last() {
        Some(Popup::PolicyWizard(w)) => w
            .form
            .rows(vmvault::tui::popups::policy_form::Part::Retention)
            .len(),
        _ => panic!("the policy wizard is not open"),
    };
    for n in 1..rows {
        a.update(code(KeyCode::Down));
        let s = text(&render(&a, 60, 15));
        assert!(
            s.lines().any(|l| l.contains("│▶ ")),
            "field {n} of {rows} is off screen:\n{s}"
        );
    }
    // The last one is the yearly rule's day.
    let s = text(&render(&a, 60, 15));
    assert!(line_with(&s, "▶").contains("day"), "{s}");
}
