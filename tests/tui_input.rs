//! Input handling without an engine: the mouse (off by default; clicks on tabs and rows,
//! the wheel), the searchable help, what J opens, and keys that must not act while typing.

mod tui_support;

use crossterm::event::{KeyCode, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use tui_support::fixture::*;
use vmvault::tui::app::{App, Effect, Msg, Tab};
use vmvault::tui::popups::Popup;

fn mouse(kind: MouseEventKind, column: u16, row: u16) -> Msg {
    Msg::Mouse(MouseEvent {
        kind,
        column,
        row,
        modifiers: KeyModifiers::NONE,
    })
}

fn click(column: u16, row: u16) -> Msg {
    mouse(MouseEventKind::Down(MouseButton::Left), column, row)
}

/// Draws (so the layout is known to the mouse handling) and returns the text.
fn draw(a: &App) -> String {
    text(&render(a, 120, 40))
}

fn position(screen: &str, text: &str) -> (u16, u16) {
    for (y, line) in screen.lines().enumerate() {
        if let Some(b) = line.find(text) {
            return (line[..b].chars().count() as u16, y as u16);
        }
    }
    panic!("{text:?} not on screen:\n{screen}");
}

#[test]
fn mouse_is_off_by_default() {
    let mut a = app(120, 40);
    let s = draw(&a);
    let (x, y) = position(&s, "4 Jobs");
    a.update(click(x + 1, y));
    assert_eq!(a.tab, Tab::Dashboard);
}

#[test]
fn mouse_clicks_tabs_and_rows_and_scrolls() {
    let mut a = app(120, 40);
    a.mouse = true;
    let s = draw(&a);
    let (x, y) = position(&s, "2 Registered Items");
    a.update(click(x + 2, y));
    assert_eq!(a.tab, Tab::Registered);
    let s = draw(&a);
    // Click a row: it is selected; a second click opens it.
    let (x, y) = position(&s, "jump01");
    a.update(click(x, y));
    assert_eq!(a.registered.table.selected(&a.data).unwrap().name, "jump01");
    assert!(a.popups.is_empty());
    let effects = a.update(click(x, y));
    assert!(matches!(a.popups.last(), Some(Popup::Item(i)) if i.item.name == "jump01"));
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::LoadPoints(id) if id.ends_with("jump01"))));
    a.update(code(KeyCode::Esc));
    // The wheel moves the selection.
    let before = a.registered.table.nav.selected;
    a.update(mouse(MouseEventKind::ScrollDown, 10, 10));
    assert_eq!(a.registered.table.nav.selected, before + 3);
    a.update(mouse(MouseEventKind::ScrollUp, 10, 10));
    assert_eq!(a.registered.table.nav.selected, before);
    // Dashboard: clicking the Failed count opens Jobs filtered to failures.
    a.update(key('1'));
    let s = draw(&a);
    let (x, y) = position(&s, "Failed");
    let effects = a.update(click(x, y));
    assert_eq!(a.tab, Tab::Jobs);
    assert!(effects.iter().any(
        |e| matches!(e, Effect::Jobs(q) if q.status == vmvault::tui::data::StatusFilter::Failed)
    ));
}

#[test]
fn help_lists_this_views_keys_and_searches() {
    let mut a = app(120, 40);
    a.update(key('4'));
    a.update(key('?'));
    let Some(Popup::Help(h)) = a.popups.last() else {
        panic!("help not open")
    };
    assert!(h
        .entries
        .iter()
        .any(|(k, d)| k == "c" && d.contains("Cancel")));
    assert!(
        !h.entries.iter().any(|(_, d)| d.contains("Register items")),
        "the Jobs help lists Registered Items keys"
    );
    for c in "time".chars() {
        a.update(key(c));
    }
    let Some(Popup::Help(h)) = a.popups.last() else {
        panic!("help closed while typing")
    };
    let m = h.matching();
    assert!(
        !m.is_empty() && m.iter().all(|(_, d)| d.to_lowercase().contains("time")),
        "{m:?}"
    );
    // Typing did not switch tabs or quit; Esc clears the search, a second Esc closes.
    a.update(code(KeyCode::Esc));
    assert!(matches!(a.popups.last(), Some(Popup::Help(_))));
    a.update(code(KeyCode::Esc));
    assert!(a.popups.is_empty());
    assert_eq!(a.tab, Tab::Jobs);
}

#[test]
fn typing_in_a_filter_does_not_trigger_actions() {
    let mut a = app(120, 40);
    a.update(key('2'));
    a.update(key('/'));
    let effects: Vec<Effect> = "dq1r".chars().flat_map(|c| a.update(key(c))).collect();
    assert!(effects.is_empty(), "{effects:?}");
    assert!(!a.should_quit);
    assert_eq!(a.tab, Tab::Registered);
    assert_eq!(a.registered.table.filter.value(), "dq1r");
    assert!(a.popups.is_empty());
}

#[test]
fn view_jobs_opens_what_the_notification_is_about() {
    let mut a = app(120, 40);
    a.update(Msg::Done(Box::new(vmvault::tui::app::CommandDone {
        label: "Register",
        subject: "2 VMs".into(),
        operation: Some(vmvault::model::JobOperation::Register),
        result: Ok(vec!["a".into(), "b".into()]),
        note: None,
    })));
    assert!(a.notice.as_ref().unwrap().text.contains("press J to view"));
    let effects = a.update(key('J'));
    assert_eq!(a.tab, Tab::Jobs);
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Jobs(q) if q.job_ids == ["a", "b"])),
        "J shows the notification's jobs, not every job of the operation: {effects:?}"
    );
    // The filter says so where the eye is, and gives way when the user comes back.
    let s = text(&render(&a, 120, 40));
    assert!(s.contains("Jobs of the notification (2)"), "{s}");
    assert!(
        s.contains("filtered: the 2 job(s) of the notification"),
        "{s}"
    );
    a.update(key('1'));
    let effects = a.update(key('4'));
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Jobs(q) if !q.is_filtered())),
        "{effects:?}"
    );
    assert!(!text(&render(&a, 120, 40)).contains("filtered"));
    // One job: its details.
    a.update(Msg::Done(Box::new(vmvault::tui::app::CommandDone {
        label: "Back up now",
        subject: "sales/web01".into(),
        operation: Some(vmvault::model::JobOperation::Backup),
        result: Ok(vec![running_backup().id]),
        note: None,
    })));
    let effects = a.update(key('J'));
    assert!(matches!(a.popups.last(), Some(Popup::Job(_))));
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::LoadJob(id) if *id == running_backup().id)));
}

#[test]
fn refused_commands_explain_and_tiny_terminals_do_not_panic() {
    let mut a = app(120, 40);
    a.update(Msg::Done(Box::new(vmvault::tui::app::CommandDone {
        label: "Protect",
        subject: "sales/app01".into(),
        operation: None,
        result: Err("cannot protect sales/app01: it is not registered".into()),
        note: None,
    })));
    assert!(
        matches!(a.popups.last(), Some(Popup::Message(m)) if m.text.contains("not registered"))
    );
    // Every view and popup at every small size: no panic.
    for (w, h) in [(1, 1), (10, 3), (59, 14), (60, 15), (61, 16), (80, 24)] {
        for k in ['1', '2', '3', '4', '5'] {
            let mut b = app(w, h);
            b.update(key(k));
            render(&b, w, h);
            for p in ['?', 'r', 'p', 'v', 'n', 'K'] {
                let mut c = app(w, h);
                c.update(key(k));
                c.update(key(p));
                render(&c, w, h);
            }
        }
    }
}

#[test]
fn filter_typing_ends_the_same_way_in_every_list() {
    // Jobs: ↓ ends typing (and moves), as in the item tables.
    let mut a = app(120, 40);
    a.update(key('4'));
    a.update(key('/'));
    a.update(key('w'));
    assert!(a.jobs.filter.typing);
    a.update(code(KeyCode::Down));
    assert!(!a.jobs.filter.typing);
    assert_eq!(a.jobs.filter.value(), "w", "the text stays");
    // Item tables: the same.
    a.update(key('2'));
    a.update(key('/'));
    a.update(key('w'));
    a.update(code(KeyCode::Down));
    assert!(!a.registered.table.filter.typing);
    assert_eq!(a.registered.table.filter.value(), "w");
    // Esc while typing clears.
    a.update(key('/'));
    a.update(code(KeyCode::Esc));
    assert_eq!(a.registered.table.filter.value(), "");
}

#[test]
fn help_works_inside_popups_with_the_popups_keys() {
    // Item details: ? lists its keys (restore, back up now…), not the tab's.
    let mut a = app(120, 40);
    a.update(key('3'));
    a.update(code(KeyCode::Enter));
    a.update(key('?'));
    let Some(Popup::Help(h)) = a.popups.last() else {
        panic!("? did nothing in the item details")
    };
    assert_eq!(h.view, "Item details");
    assert!(h
        .entries
        .iter()
        .any(|(k, d)| k == "R" && d.contains("Restore")));
    assert!(!h.entries.iter().any(|(_, d)| d.contains("Discover")));
    // ? closes it, back to the details.
    a.update(key('?'));
    assert!(matches!(a.popups.last(), Some(Popup::Item(_))));

    // A question: y and n are listed.
    let mut a = app(120, 40);
    a.update(key('q'));
    a.update(key('?'));
    let Some(Popup::Help(h)) = a.popups.last() else {
        panic!("? did nothing in a question")
    };
    assert!(h.entries.iter().any(|(k, _)| k == "y"), "{:?}", h.entries);

    // While typing, ? is a character; F1 still helps.
    let mut a = app(120, 40);
    a.update(key('2'));
    a.update(key('r'));
    a.update(key('/'));
    a.update(key('?'));
    let Some(Popup::Register(r)) = a.popups.last() else {
        panic!("? left the filter")
    };
    assert_eq!(r.picker.filter.value(), "?");
    a.update(code(KeyCode::F(1)));
    assert!(matches!(a.popups.last(), Some(Popup::Help(h)) if h.view == "Register items"));
}

#[test]
fn a_drill_down_filter_gives_way_when_the_user_comes_back_and_their_own_stays() {
    use vmvault::tui::data::StatusFilter;
    let mut a = app(120, 40);
    // The user's own filter on the Jobs tab.
    a.update(key('4'));
    a.update(key('o')); // operation: Backup
    let own = a.jobs.query.clone();
    assert!(own.operation.is_some());
    // Dashboard: Enter on "Failed" (→ from Completed) opens Jobs filtered to failures.
    a.update(key('1'));
    a.update(code(KeyCode::Right));
    let effects = a.update(code(KeyCode::Enter));
    assert_eq!(a.tab, Tab::Jobs);
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::Jobs(q) if q.status == StatusFilter::Failed)));
    let s = draw(&a);
    assert!(s.contains("filtered: status Failed"), "{s}");
    // Away and back by hand: the user's own filter again, not the drill-down's.
    a.update(key('2'));
    let effects = a.update(key('4'));
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::Jobs(q) if *q == own)));
    assert_eq!(a.jobs.query, own);
    // Their own filter is theirs: it stays when they come back.
    a.update(key('2'));
    let effects = a.update(key('4'));
    assert!(effects.is_empty(), "{effects:?}");
    assert_eq!(a.jobs.query, own);
}
