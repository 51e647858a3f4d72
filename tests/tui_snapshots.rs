//! Snapshots of every view, popup and wizard step of the console at 80×24 and 120×40,
//! drawn from the fixed state of `tui_support::fixture` (fixed times: renders never change
//! unless the console does). Review changes with `cargo insta review` or by reading the
//! `.snap.new` files; accept with `INSTA_UPDATE=always cargo test --test tui_snapshots`.

mod tui_support;

use crossterm::event::KeyCode;
use tui_support::fixture::*;
use vmvault::tui::app::{App, Msg};

const SIZES: [(u16, u16); 2] = [(80, 24), (120, 40)];

/// Snapshots the app built by `build` at both sizes.
fn shot(name: &str, build: impl Fn(u16, u16) -> App) {
    for (w, h) in SIZES {
        let app = build(w, h);
        let t = render(&app, w, h);
        insta::assert_snapshot!(format!("{name}_{w}x{h}"), t.backend());
    }
}

fn on(keys: &[Msg]) -> impl Fn(u16, u16) -> App + '_ {
    move |w, h| {
        let mut a = app(w, h);
        for k in keys {
            a.update(k.clone());
        }
        a
    }
}

#[test]
fn tabs() {
    shot("dashboard", on(&[]));
    shot("registered_items", on(&[key('2')]));
    shot("protected_items", on(&[key('3')]));
    shot("jobs", on(&[key('4')]));
    shot("policies", on(&[key('5')]));
}

#[test]
fn tab_variants() {
    // Dashboard with "Failed" selected.
    shot("dashboard_failed_selected", on(&[code(KeyCode::Right)]));
    // Registered items sorted by status, then filtered while typing.
    shot(
        "registered_items_sorted",
        on(&[
            key('2'),
            key('s'),
            key('s'),
            key('s'),
            key('s'),
            key('s'),
            key('s'),
        ]),
    );
    shot(
        "registered_items_filter",
        on(&[key('2'), key('/'), key('w'), key('e'), key('b')]),
    );
    shot(
        "protected_items_filter_no_match",
        on(&[key('3'), key('/'), key('z'), key('z'), code(KeyCode::Enter)]),
    );
    // Jobs filtered: Failed, Backup.
    shot(
        "jobs_filtered",
        on(&[key('4'), key('f'), key('f'), key('o')]),
    );
    shot(
        "policies_gold_selected",
        on(&[key('5'), code(KeyCode::Down)]),
    );
}

#[test]
fn empty_and_special_states() {
    shot("loading", |w, h| {
        let mut a = App::new(
            Some(vault()),
            vaults(),
            Default::default(),
            Default::default(),
            false,
        );
        a.now = now();
        a.update(Msg::Resize(w, h));
        a
    });
    shot("read_only", |w, h| {
        let mut a = app(w, h);
        let mut v = vault();
        v.read_only = Some("in use by process 4242 (vmvault run)".into());
        a.vault = Some(v);
        a.update(key('2'));
        a.update(key('d'));
        a
    });
    shot("no_vault_locked", |w, h| {
        let mut a = App::new(
            None,
            vaults(),
            Default::default(),
            Default::default(),
            false,
        );
        a.now = now();
        a.update(Msg::Resize(w, h));
        a.update(Msg::VaultFailed {
            name: "vault-westeurope".into(),
            message: "vault /home/admin/.local/share/vmvault/vaults/vault-westeurope is in use by process 4242 (vmvault run); wait for it to finish or stop it, then try again".into(),
            locked: true,
        });
        a
    });
    for (w, h) in [(59, 24), (80, 14), (20, 5)] {
        let a = app(w, h);
        let t = render(&a, w, h);
        insta::assert_snapshot!(format!("too_small_{w}x{h}"), t.backend());
    }
}

#[test]
fn popups() {
    shot("help_dashboard", on(&[key('?')]));
    shot(
        "help_jobs_search",
        on(&[key('4'), key('?'), key('c'), key('a'), key('n')]),
    );
    shot(
        "register_items",
        on(&[key('2'), key('r'), key(' '), code(KeyCode::Down), key(' ')]),
    );
    shot(
        "register_items_filter",
        on(&[key('2'), key('r'), key('/'), key('w'), key('e'), key('b')]),
    );
    shot(
        "backup_now",
        on(&[
            key('3'),
            code(KeyCode::Down),
            code(KeyCode::Down),
            code(KeyCode::Down),
            key('b'),
        ]),
    );
    shot(
        "backup_now_bad_date",
        on(&[
            key('3'),
            code(KeyCode::Down),
            code(KeyCode::Down),
            code(KeyCode::Down),
            key('b'),
            code(KeyCode::Backspace),
            code(KeyCode::Backspace),
            key('x'),
        ]),
    );
    shot("vaults", on(&[key('v')]));
    shot("quit_with_running_jobs", on(&[key('q')]));
    shot("cancel_job_confirm", on(&[key('4'), key('c')]));
    shot("message_refused", |w, h| {
        let mut a = app(w, h);
        a.update(Msg::Done(Box::new(vmvault::tui::app::CommandDone {
            label: "Register",
            subject: "retail-us/shop01".into(),
            operation: Some(vmvault::model::JobOperation::Register),
            result: Err("cannot register retail-us/shop01: the VM is in region eastus, but vault vault-westeurope is in region westeurope. A VM can only be backed up into a vault in its own region; use vault vault-eastus, which is in eastus: `vmvault --vault vault-eastus register retail-us/shop01`".into()),
            note: None,
        })));
        a
    });
}

/// The Keys popup (`K`) with the fixture vault's keys loaded, then `more` keys.
fn keys_popup(more: &[Msg]) -> impl Fn(u16, u16) -> App + '_ {
    move |w, h| {
        let mut a = app(w, h);
        a.update(key('K'));
        a.update(Msg::KeysLoaded(Box::new(Ok(keys_overview()))));
        for m in more {
            a.update(m.clone());
        }
        a
    }
}

#[test]
fn keys_popup_views() {
    shot("keys", keys_popup(&[]));
    shot("keys_loading", on(&[key('K')]));
    shot(
        "keys_add_passphrase",
        keys_popup(&[
            key('a'),
            key('h'),
            key('u'),
            key('n'),
            key('t'),
            key('e'),
            key('r'),
            key('2'),
            code(KeyCode::Tab),
            key('h'),
            key('u'),
            key('n'),
        ]),
    );
    shot(
        "keys_add_passphrase_differ",
        keys_popup(&[
            key('a'),
            key('o'),
            key('n'),
            key('e'),
            code(KeyCode::Tab),
            key('t'),
            key('w'),
            key('o'),
            code(KeyCode::Enter),
        ]),
    );
    shot(
        "keys_remove_confirm",
        keys_popup(&[code(KeyCode::Down), key('x')]),
    );
    shot("keys_unencrypted", |w, h| {
        let mut a = app(w, h);
        a.update(key('K'));
        let mut o = keys_overview();
        o.encrypted = false;
        o.format = 1;
        o.slots.clear();
        o.key_file = None;
        o.opened_with = None;
        a.update(Msg::KeysLoaded(Box::new(Ok(o))));
        a
    });
    shot("keys_help", keys_popup(&[key('?')]));
    shot("keys_stray_file", |w, h| {
        let mut a = app(w, h);
        a.update(key('K'));
        let mut o = keys_overview();
        o.unreadable = vec!["key slot /srv/vaults/vault-westeurope/keys/notes.txt is damaged or not a key slot: not a key slot".into()];
        a.update(Msg::KeysLoaded(Box::new(Ok(o))));
        a
    });
    // Any size, no panic.
    for (w, h) in [(1, 1), (10, 3), (60, 15), (61, 16)] {
        for more in [&[][..], &[key('a'), key('x')], &[key('x')]] {
            render(&keys_popup(more)(w, h), w, h);
        }
    }
}

#[test]
fn the_keys_popup_never_shows_a_passphrase_and_asks_before_removing() {
    for (w, h) in SIZES {
        let mut a = keys_popup(&[key('a')])(w, h);
        for c in "hunter2".chars() {
            a.update(key(c));
        }
        a.update(code(KeyCode::Tab));
        for c in "hunter2".chars() {
            a.update(key(c));
        }
        let screen = text(&render(&a, w, h));
        assert!(!screen.contains("hunter2"), "{screen}");
        assert!(screen.contains("•••••••"), "{screen}");
        assert!(!format!("{:?}", a.popups.len()).is_empty());
        // Enter sends one command with the passphrase (never printed by Debug).
        let effects = a.update(code(KeyCode::Enter));
        let shown = format!("{effects:?}");
        assert!(shown.contains("AddPassphrase"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        // Removing asks first; Enter answers no.
        let mut a = keys_popup(&[code(KeyCode::Down), key('x')])(w, h);
        assert!(a.update(code(KeyCode::Enter)).is_empty());
        assert_eq!(a.popups.len(), 1, "back to the Keys popup");
        a.update(key('x'));
        let effects = format!("{:?}", a.update(key('y')));
        assert!(
            effects.contains("RemoveKeySlot(\"6dedea7c7edf3f29\")"),
            "{effects}"
        );
        assert_eq!(a.popups.len(), 1, "the Keys popup stays");
    }
}

/// The item details of sales/web01 (Protected Items, last row) with its points loaded.
fn item_open(w: u16, h: u16) -> App {
    let mut a = app(w, h);
    a.update(key('3'));
    // Protected items in name order: old01, payroll01, sql01, web01 (hr), web01 (sales).
    a.update(code(KeyCode::End));
    a.update(code(KeyCode::Enter));
    a.update(Msg::PointsLoaded {
        item_id: "sim:/sales/web01".into(),
        result: Ok(points()),
    });
    a
}

#[test]
fn item_and_its_actions() {
    shot("item_details", item_open);
    shot("item_details_error", |w, h| {
        let mut a = app(w, h);
        a.update(key('3'));
        a.update(code(KeyCode::Down));
        a.update(code(KeyCode::Down));
        a.update(code(KeyCode::Enter));
        a.update(Msg::PointsLoaded {
            item_id: "sim:/sales/sql01".into(),
            result: Ok(vec![]),
        });
        a
    });
    shot("item_details_soft_deleted", |w, h| {
        let mut a = app(w, h);
        a.update(key('3'));
        a.update(code(KeyCode::Enter));
        a.update(Msg::PointsLoaded {
            item_id: "sim:/sales/old01".into(),
            result: Ok(points()),
        });
        a
    });
    shot("restore", |w, h| {
        let mut a = item_open(w, h);
        a.update(code(KeyCode::Down));
        a.update(key('R'));
        a
    });
    shot("restore_qcow2", |w, h| {
        let mut a = item_open(w, h);
        a.update(key('R'));
        typed(&mut a, "/srv/restore");
        a.update(code(KeyCode::Down));
        a.update(code(KeyCode::Right));
        a
    });
    shot("restore_empty_target_refused", |w, h| {
        let mut a = item_open(w, h);
        a.update(key('R'));
        a.update(code(KeyCode::Enter));
        a
    });
    shot("restore_confirm_short_of_space", |w, h| {
        let mut a = item_open(w, h);
        a.update(key('R'));
        typed(&mut a, "/srv/restore");
        // The target's file system has 100 GiB free: the data fits, the full images not.
        a.update(Msg::SpaceProbed {
            dir: "/srv/restore".into(),
            space: Ok(("/srv".into(), 100 * GIB)),
        });
        a.update(code(KeyCode::Enter));
        a
    });
    shot("stop_protection", |w, h| {
        let mut a = item_open(w, h);
        a.update(key('s'));
        a
    });
    shot("stop_protection_confirm_delete", |w, h| {
        let mut a = item_open(w, h);
        a.update(key('s'));
        a.update(code(KeyCode::Down));
        a.update(code(KeyCode::Enter));
        a
    });
    shot("resume_protection", resume_dialog);
}

#[test]
fn job_details() {
    shot("job_running", |w, h| {
        let mut a = app(w, h);
        a.update(key('4'));
        a.update(code(KeyCode::Enter));
        a.update(Msg::JobLoaded(Box::new(Ok(running_backup()))));
        a
    });
    shot("job_completed_details", |w, h| {
        let mut a = app(w, h);
        a.update(key('4'));
        a.update(code(KeyCode::Enter));
        let mut j = running_backup();
        j.status = vmvault::model::JobStatus::CompletedWithWarnings;
        j.end_time = Some(now());
        j.bytes_done = j.bytes_total;
        for (k, v) in [
            ("bytes_read", serde_json::json!(365551616u64)),
            ("logical_bytes", serde_json::json!(4u64 << 30)),
            ("new_chunks", serde_json::json!(87)),
            (
                "warnings",
                serde_json::json!([
                    "VM agent: not responding",
                    "2 disk(s) read crash-consistent"
                ]),
            ),
        ] {
            j.details.insert(k.into(), v);
        }
        a.update(Msg::JobLoaded(Box::new(Ok(j))));
        a
    });
    shot("job_failed", |w, h| {
        let mut a = app(w, h);
        a.update(key('4'));
        a.update(code(KeyCode::End));
        a.update(code(KeyCode::Enter));
        a.update(Msg::JobLoaded(Box::new(Ok(failed_backup()))));
        a
    });
}

/// The protect wizard opened on Protected Items with sales/app01 selected.
fn wizard(w: u16, h: u16) -> App {
    let mut a = app(w, h);
    a.update(key('3'));
    a.update(key('p'));
    a
}

/// Step 1 → 2, choose "New policy…" (after the fixture's three policies), into its form.
fn new_policy(a: &mut App) {
    a.update(code(KeyCode::Enter));
    for _ in 0..3 {
        a.update(code(KeyCode::Down));
    }
    a.update(code(KeyCode::Tab));
}

#[test]
fn protect_wizard_steps() {
    shot("protect_1_select_items", |w, h| {
        let mut a = wizard(w, h);
        a.update(key(' '));
        a
    });
    shot("protect_1_nothing_to_select", |w, h| {
        let mut a = wizard(w, h);
        a.update(key(' '));
        a.update(key('/'));
        typed(&mut a, "zz");
        a.update(code(KeyCode::Enter));
        a.update(key(' '));
        a.update(code(KeyCode::Enter));
        a
    });
    shot("protect_2_existing_policy", |w, h| {
        let mut a = wizard(w, h);
        a.update(code(KeyCode::Enter));
        a.update(code(KeyCode::Down));
        a
    });
    shot("protect_3_existing_policy_read_only", |w, h| {
        let mut a = wizard(w, h);
        a.update(code(KeyCode::Enter));
        a.update(code(KeyCode::Down));
        a.update(code(KeyCode::Enter));
        a
    });
    shot("protect_4_review_existing", |w, h| {
        let mut a = wizard(w, h);
        for k in [
            code(KeyCode::Enter),
            code(KeyCode::Enter),
            code(KeyCode::Enter),
        ] {
            a.update(k);
        }
        a
    });
    shot("protect_2_new_policy_empty", |w, h| {
        let mut a = wizard(w, h);
        new_policy(&mut a);
        a
    });
    shot("protect_2_new_policy_weekly", |w, h| {
        let mut a = wizard(w, h);
        new_policy(&mut a);
        typed(&mut a, "Weekly-Sat");
        a.update(code(KeyCode::Down));
        a.update(key(' '));
        a.update(code(KeyCode::Down));
        a.update(key(' ')); // Sunday off
        for _ in 0..6 {
            a.update(code(KeyCode::Right));
        }
        a.update(key(' ')); // Saturday on
        a.update(code(KeyCode::Down));
        a.update(code(KeyCode::Down));
        a.update(Msg::Key(crossterm::event::KeyEvent::new(
            KeyCode::Char('u'),
            crossterm::event::KeyModifiers::CONTROL,
        )));
        typed(&mut a, "europe/be");
        a
    });
    shot("protect_3_new_policy_problems", |w, h| {
        let mut a = wizard(w, h);
        new_policy(&mut a);
        typed(&mut a, "Gold2");
        a.update(code(KeyCode::Enter));
        // Daily rule: count 0 — out of range.
        a.update(code(KeyCode::Backspace));
        a.update(code(KeyCode::Backspace));
        a.update(key('0'));
        a
    });
    shot("protect_3_new_policy_all_rules", |w, h| {
        let mut a = wizard(w, h);
        new_policy(&mut a);
        typed(&mut a, "Gold2");
        a.update(code(KeyCode::Enter));
        a.update(code(KeyCode::Down));
        a.update(key(' ')); // weekly on
        a.update(code(KeyCode::Down));
        a.update(code(KeyCode::Down));
        a.update(key(' ')); // monthly on
        a.update(code(KeyCode::Down));
        a.update(key(' ')); // by day of month
        a.update(code(KeyCode::Down));
        a.update(code(KeyCode::Down));
        a.update(key(' ')); // yearly on
        a
    });
    shot("protect_4_review_new", |w, h| {
        let mut a = wizard(w, h);
        new_policy(&mut a);
        typed(&mut a, "Gold2");
        a.update(code(KeyCode::Enter));
        a.update(code(KeyCode::Enter));
        a
    });
}

#[test]
fn policy_wizard_steps() {
    shot("create_policy_1_schedule", |w, h| {
        let mut a = app(w, h);
        a.update(key('5'));
        a.update(key('n'));
        typed(&mut a, "Gold");
        a
    });
    shot("create_policy_2_retention", |w, h| {
        let mut a = app(w, h);
        a.update(key('5'));
        a.update(key('n'));
        typed(&mut a, "Bronze");
        a.update(code(KeyCode::Enter));
        a.update(code(KeyCode::Down));
        a.update(key(' '));
        a
    });
    shot("create_policy_3_review", |w, h| {
        let mut a = app(w, h);
        a.update(key('5'));
        a.update(key('n'));
        typed(&mut a, "Bronze");
        a.update(code(KeyCode::Enter));
        a.update(code(KeyCode::Enter));
        a
    });
    shot("edit_policy_1_schedule", |w, h| {
        let mut a = app(w, h);
        a.update(key('5'));
        a.update(key('e'));
        a
    });
    shot("edit_policy_3_review", |w, h| {
        let mut a = app(w, h);
        a.update(key('5'));
        a.update(key('e'));
        a.update(code(KeyCode::Enter));
        a.update(code(KeyCode::Down));
        a.update(key(' ')); // weekly rule on
        a.update(code(KeyCode::Enter));
        a
    });
    shot("delete_policy_confirm", |w, h| {
        let mut a = app(w, h);
        a.update(key('5'));
        a.update(code(KeyCode::End));
        a.update(key('x'));
        a
    });
}

#[test]
fn notifications() {
    use vmvault::engine::{Event, Notice, NoticeLevel};
    // A discovery running for 6 s: the line counts.
    shot("notice_discovering", |w, h| {
        let mut a = app(w, h);
        let mut job = running_backup();
        job.id = "d15c0000-0000-4000-8000-000000000000".into();
        job.operation = vmvault::model::JobOperation::Discover;
        job.start_time = now() - chrono::Duration::seconds(6);
        a.update(Msg::Engine(Box::new(Event::JobUpdated(Box::new(
            job.clone(),
        )))));
        a.update(Msg::Engine(Box::new(Event::Notice(Notice {
            level: NoticeLevel::Info,
            text: "Discovering virtual machines…".into(),
            job_id: Some(job.id.clone()),
        }))));
        a.update(Msg::Tick(now()));
        a
    });
    // Register answered: two jobs, J views them.
    shot("notice_register_created", |w, h| {
        let mut a = app(w, h);
        a.update(key('2'));
        a.update(Msg::Done(Box::new(vmvault::tui::app::CommandDone {
            label: "Register",
            subject: "2 VMs".into(),
            operation: Some(vmvault::model::JobOperation::Register),
            result: Ok(vec!["a".into(), "b".into()]),
            note: None,
        })));
        a
    });
}
