//! What keys do (and refuse to do) in the fixture console, through `App::update`, without
//! an engine: confirmations of destructive actions, refusals with a reason, and what the
//! footer offers.

mod tui_support;

use crossterm::event::KeyCode;
use tui_support::fixture::*;
use vmvault::tui::app::{App, Command, Effect, Msg};
use vmvault::tui::popups::Popup;

fn runs(effects: &[Effect], pred: impl Fn(&Command) -> bool) -> bool {
    effects
        .iter()
        .any(|e| matches!(e, Effect::Run(c) if pred(c)))
}

fn is_confirm(a: &App) -> bool {
    matches!(a.popups.last(), Some(Popup::Confirm(_)))
}

/// The item details of sales/web01 (Protected Items, last row) with its points loaded.
fn web01_details() -> App {
    let mut a = app(120, 40);
    a.update(key('3'));
    a.update(code(KeyCode::End));
    a.update(code(KeyCode::Enter));
    a.update(Msg::PointsLoaded {
        item_id: "sim:/sales/web01".into(),
        result: Ok(points()),
    });
    a
}

fn delete_data_question() -> App {
    let mut a = web01_details();
    a.update(key('s'));
    a.update(code(KeyCode::Down));
    a.update(code(KeyCode::Enter));
    assert!(is_confirm(&a));
    a
}

#[test]
fn enter_never_confirms_a_destructive_question() {
    // Delete backup data: Enter answers no, and so do n and Esc.
    for no in [code(KeyCode::Enter), key('n'), code(KeyCode::Esc)] {
        let mut a = delete_data_question();
        let effects = a.update(no.clone());
        assert!(!is_confirm(&a), "{no:?} left the question open");
        assert!(
            !runs(&effects, |c| matches!(c, Command::StopProtection { .. })),
            "{no:?} deleted the data"
        );
    }
    let mut a = delete_data_question();
    let effects = a.update(key('y'));
    assert!(runs(&effects, |c| matches!(
        c,
        Command::StopProtection {
            delete_data: true,
            ..
        }
    )));

    // Quit with running jobs: Enter does not quit (it would cancel them).
    let mut a = app(120, 40);
    a.update(key('q'));
    assert!(is_confirm(&a));
    let effects = a.update(code(KeyCode::Enter));
    assert!(!a.should_quit && !effects.iter().any(|e| matches!(e, Effect::Quit)));
    a.update(key('q'));
    let effects = a.update(key('y'));
    assert!(effects.iter().any(|e| matches!(e, Effect::Quit)));
}

#[test]
fn a_question_footer_offers_yes_and_no_not_open() {
    let a = delete_data_question();
    let screen = text(&render(&a, 120, 40));
    let footer = screen.lines().last().unwrap_or_default();
    assert!(footer.contains("y Yes"), "{footer}");
    assert!(footer.contains("n/Esc No"), "{footer}");
    assert!(!footer.contains("Enter"), "{footer}");
}

#[test]
fn cancel_job_asks_first_and_finished_jobs_do_not_offer_it() {
    // Jobs tab: the first row is the running backup.
    let mut a = app(120, 40);
    a.update(key('4'));
    let effects = a.update(key('c'));
    assert!(!runs(&effects, |c| matches!(c, Command::CancelJob(_))));
    let Some(Popup::Confirm(q)) = a.popups.last() else {
        panic!("c did not ask: {:?}", a.popups.len())
    };
    assert!(
        q.lines[0].starts_with("Cancel the Backup of "),
        "{:?}",
        q.lines
    );
    let effects = a.update(code(KeyCode::Enter));
    assert!(a.popups.is_empty());
    assert!(!runs(&effects, |c| matches!(c, Command::CancelJob(_))));
    a.update(key('c'));
    let effects = a.update(key('y'));
    let id = running_backup().id;
    assert!(runs(
        &effects,
        |c| matches!(c, Command::CancelJob(j) if *j == id)
    ));

    // Job details of the running job: c asks, and yes goes back to the details.
    let mut a = app(120, 40);
    a.update(key('4'));
    a.update(code(KeyCode::Enter));
    a.update(Msg::JobLoaded(Box::new(Ok(running_backup()))));
    assert!(text(&render(&a, 120, 40)).contains("c Cancel job"));
    a.update(key('c'));
    assert!(is_confirm(&a));
    let effects = a.update(key('y'));
    assert!(runs(&effects, |c| matches!(c, Command::CancelJob(_))));
    assert!(matches!(a.popups.last(), Some(Popup::Job(_))));

    // Details of a failed job: no c in the footer or the popup's hints, and c asks nothing.
    let mut a = app(120, 40);
    a.update(key('4'));
    a.update(code(KeyCode::End));
    a.update(code(KeyCode::Enter));
    a.update(Msg::JobLoaded(Box::new(Ok(failed_backup()))));
    let screen = text(&render(&a, 120, 40));
    assert!(!screen.contains("Cancel job"), "{screen}");
    assert!(!screen.contains("cancel job"), "{screen}");
    a.update(key('c'));
    assert!(matches!(a.popups.last(), Some(Popup::Job(_))));

    // The Jobs tab's footer offers c on the running job only.
    let mut a = app(120, 40);
    a.update(key('4'));
    assert!(footer(&a).contains("Cancel"), "{}", footer(&a));
    a.update(code(KeyCode::End));
    assert!(!footer(&a).contains("Cancel"), "{}", footer(&a));
}

fn notice(a: &App) -> String {
    a.notice
        .as_ref()
        .map(|n| n.text.clone())
        .unwrap_or_default()
}

fn footer(a: &App) -> String {
    let screen = text(&render(a, 120, 40));
    screen.lines().last().unwrap_or_default().to_string()
}

#[test]
fn back_up_now_is_refused_at_once_with_the_key_to_press() {
    // Protected Items in name order: old01 (soft-deleted), payroll01 (stopped), …
    let mut a = app(120, 40);
    a.update(key('3'));
    assert!(!footer(&a).contains("Back up now"), "{}", footer(&a));
    a.update(key('b'));
    assert!(a.popups.is_empty());
    assert_eq!(
        notice(&a),
        "sales/old01: its backup data is soft-deleted — press Enter, then U to undelete, then u to resume"
    );
    a.update(code(KeyCode::Down));
    a.update(key('b'));
    assert!(a.popups.is_empty());
    assert_eq!(
        notice(&a),
        "hr/payroll01: protection is stopped — press Enter, then u to resume"
    );
    // In its details, u works directly.
    a.update(code(KeyCode::Enter));
    assert!(!footer(&a).contains("Back up now"), "{}", footer(&a));
    a.update(key('b'));
    assert!(matches!(a.popups.last(), Some(Popup::Item(_))));
    assert_eq!(
        notice(&a),
        "hr/payroll01: protection is stopped — press u to resume"
    );
    a.update(code(KeyCode::Esc));
    // sales/web01 (last) has a backup running already.
    a.update(code(KeyCode::End));
    a.update(key('b'));
    assert!(a.popups.is_empty());
    assert!(
        notice(&a).starts_with("sales/web01: a backup is already running (job 00000001)"),
        "{}",
        notice(&a)
    );
    // hr/web01 (protected, pending its initial backup) opens the dialog.
    a.update(code(KeyCode::Up));
    assert!(footer(&a).contains("b Back up now"), "{}", footer(&a));
    a.update(key('b'));
    assert!(matches!(a.popups.last(), Some(Popup::BackupNow(_))));
}

#[test]
fn soft_deleted_item_reads_as_future_purge_and_refuses_restore() {
    let mut a = app(120, 40);
    a.update(key('3'));
    a.update(code(KeyCode::Enter)); // sales/old01, soft-deleted
    a.update(Msg::PointsLoaded {
        item_id: "sim:/sales/old01".into(),
        result: Ok(points()),
    });
    let screen = text(&render(&a, 120, 40));
    assert!(
        screen.contains("Will be purged    2026-12-08 10:00 UTC · U undeletes it until then"),
        "{screen}"
    );
    assert!(!screen.contains("Purged at"), "{screen}");
    assert!(!footer(&a).contains("Restore"), "{}", footer(&a));
    a.update(key('R'));
    assert!(matches!(a.popups.last(), Some(Popup::Item(_))));
    assert_eq!(
        notice(&a),
        "sales/old01: its backup data is soft-deleted — press U to undelete it, then restore"
    );
}

#[test]
fn resume_chooses_the_previous_policy_first() {
    // hr/payroll01 (stopped) had Gold.
    let mut a = app(120, 40);
    a.update(key('3'));
    a.update(code(KeyCode::Down));
    a.update(code(KeyCode::Enter));
    a.update(key('u'));
    let Some(Popup::Resume(r)) = a.popups.last() else {
        panic!("u did not open the resume dialog")
    };
    assert_eq!(r.policies[r.selected].0, "Gold");
    let effects = a.update(code(KeyCode::Enter));
    assert!(runs(&effects, |c| matches!(
        c,
        Command::ResumeProtection { policy, .. } if policy == "Gold"
    )));
    // The intro is whole at 120 columns (it wraps instead of being cut).
    let a = resume_dialog(120, 40);
    let screen = text(&render(&a, 120, 40));
    assert!(screen.contains("points again."), "{screen}");
}

#[test]
fn policies_text_comes_before_the_chart_and_tables_keys_work() {
    let mut a = app(120, 40);
    a.update(key('5'));
    a.update(code(KeyCode::Down)); // Gold: every retention rule
    let s = text(&render(&a, 120, 40));
    assert!(s.contains("Used by 2 item(s)"), "{s}");
    let gold = gold();
    let desc = gold.describe();
    let last = desc.last().map(String::as_str).unwrap_or_default();
    let tail: String = last
        .chars()
        .rev()
        .take(12)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    assert!(
        s.contains(tail.trim()),
        "{tail:?} of {last:?} not shown:\n{s}"
    );

    a.update(key('G'));
    assert_eq!(a.policies.nav.selected, 2);
    a.update(key('g'));
    assert_eq!(a.policies.nav.selected, 0);
    a.update(code(KeyCode::End));
    assert_eq!(a.policies.nav.selected, 2);
    a.update(code(KeyCode::Home));
    assert_eq!(a.policies.nav.selected, 0);
    a.update(code(KeyCode::PageDown));
    assert_eq!(a.policies.nav.selected, 2);
    a.update(code(KeyCode::PageUp));
    assert_eq!(a.policies.nav.selected, 0);
}

#[test]
fn jobs_footer_offers_clear_filters_and_keeps_help_and_quit() {
    for w in [80, 120] {
        let mut a = app(w, 24);
        a.update(key('4'));
        let f = text(&render(&a, w, 24));
        let f = f.lines().last().unwrap_or_default().to_string();
        assert!(!f.contains("Clear filters"), "{w}: {f}");
        assert!(f.contains("? Help") && f.contains("q Quit"), "{w}: {f}");
        a.update(key('f'));
        let f = text(&render(&a, w, 24));
        let f = f.lines().last().unwrap_or_default().to_string();
        assert!(f.contains("X Clear filters"), "{w}: {f}");
        assert!(f.contains("? Help") && f.contains("q Quit"), "{w}: {f}");
        a.update(key('X'));
        assert!(!footer_at(&a, w).contains("Clear filters"));
    }
}

fn footer_at(a: &App, w: u16) -> String {
    let s = text(&render(a, w, 24));
    s.lines().last().unwrap_or_default().to_string()
}

#[test]
fn a_refused_restore_stays_in_its_form_with_the_reason_and_what_was_typed() {
    use vmvault::model::JobOperation;
    use vmvault::tui::app::CommandDone;
    let done = |result: Result<Vec<String>, String>| {
        Msg::Done(Box::new(CommandDone {
            label: "Restore",
            subject: "sales/web01".into(),
            operation: Some(JobOperation::Restore),
            result,
            note: None,
        }))
    };
    let mut a = web01_details();
    a.update(key('R'));
    let Some(Popup::Restore(form)) = a.popups.last() else {
        panic!("R did not open the restore form")
    };
    // No target is suggested (never the current folder), and none is refused in the form.
    assert_eq!(form.folder.value, "");
    for _ in 0..2 {
        let effects = a.update(code(KeyCode::Enter));
        assert!(!runs(&effects, |c| matches!(c, Command::Restore { .. })));
    }
    let screen = text(&render(&a, 120, 40));
    assert!(
        screen.contains("Type the folder to restore into"),
        "{screen}"
    );
    // A target: its free space is asked for once, off the UI task.
    let effects: Vec<Effect> = "/tmp/x".chars().flat_map(|c| a.update(key(c))).collect();
    let probes: Vec<_> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::ProbeSpace(d) => Some(d.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        probes.last().map(|d| d.to_string_lossy().into_owned()),
        Some("/tmp/x".into())
    );
    let folder = "/tmp/x".to_string();
    // Enter asks (what, how much, where); Enter again answers no; only y starts.
    let effects = a.update(code(KeyCode::Enter));
    assert!(!runs(&effects, |c| matches!(c, Command::Restore { .. })));
    let screen = text(&render(&a, 120, 40));
    assert!(
        screen.contains("Restore 2 disk(s) of sales/web01 (up to 192 GiB) into /tmp/x as raw?"),
        "{screen}"
    );
    let effects = a.update(code(KeyCode::Enter));
    assert!(!runs(&effects, |c| matches!(c, Command::Restore { .. })));
    assert!(matches!(a.popups.last(), Some(Popup::Restore(f)) if !f.confirming));
    a.update(code(KeyCode::Enter));
    let effects = a.update(key('y'));
    assert!(runs(
        &effects,
        |c| matches!(c, Command::Restore { dir, .. } if dir.to_string_lossy() == "/tmp/x")
    ));
    // Waiting for the engine: the form stays, a second Enter asks nothing more.
    assert!(matches!(a.popups.last(), Some(Popup::Restore(_))));
    assert!(text(&render(&a, 120, 40)).contains("Starting the restore…"));
    let effects = a.update(code(KeyCode::Enter));
    assert!(!runs(&effects, |c| matches!(c, Command::Restore { .. })));

    // Refused: the reason is in the form, the folder as typed; no extra message popup.
    let why = "/tmp/x/web01-disk0.raw exists already; restore never overwrites files";
    a.update(done(Err(why.into())));
    let Some(Popup::Restore(form)) = a.popups.last() else {
        panic!("the refusal closed the form")
    };
    assert_eq!(form.folder.value, folder);
    let screen = text(&render(&a, 120, 40));
    assert!(
        screen.contains("Refused: /tmp/x/web01-disk0.raw exists already"),
        "{screen}"
    );
    assert!(notice(&a).contains("refused"), "{}", notice(&a));

    // Editing the folder clears the reason; Enter and y ask again; a created job closes
    // the form and the item details beneath it.
    a.update(key('2'));
    assert!(!text(&render(&a, 120, 40)).contains("Refused:"));
    a.update(code(KeyCode::Enter));
    let effects = a.update(key('y'));
    assert!(runs(&effects, |c| matches!(
        c,
        Command::Restore { dir, .. } if dir.to_string_lossy().ends_with(&format!("{}2", folder.rsplit('/').next().unwrap_or_default()))
    )));
    a.update(done(Ok(vec!["0123456789abcdef".into()])));
    assert!(a.popups.is_empty());
    assert!(notice(&a).contains("job created"), "{}", notice(&a));
}

#[test]
fn edit_policy_changes_schedule_and_retention_but_not_the_name() {
    let mut a = app(120, 40);
    a.update(key('5'));
    assert!(footer(&a).contains("e Edit"), "{}", footer(&a));
    a.update(key('e'));
    let Some(Popup::PolicyWizard(w)) = a.popups.last() else {
        panic!("e did not open the policy wizard")
    };
    let name = w.form.name.value.clone();
    let screen = text(&render(&a, 120, 40));
    assert!(screen.contains(&format!("Edit policy {name}")), "{screen}");
    assert!(
        !screen.contains("Policy name"),
        "the name is not edited: {screen}"
    );

    // Unchanged, the review says so.
    a.update(code(KeyCode::Enter));
    a.update(code(KeyCode::Enter));
    assert!(text(&render(&a, 120, 40)).contains("Nothing changed."));

    // Back to the schedule: a new time, then save.
    a.update(code(KeyCode::Esc));
    a.update(code(KeyCode::Esc));
    for k in retype_schedule_time(&a, "03:30") {
        a.update(k);
    }
    a.update(code(KeyCode::Enter));
    a.update(code(KeyCode::Enter));
    let screen = text(&render(&a, 120, 40));
    assert!(screen.contains("saves it"), "{screen}");
    let effects = a.update(code(KeyCode::Enter));
    let updated = effects.iter().find_map(|e| match e {
        Effect::Run(Command::UpdatePolicy(p)) => Some(p.clone()),
        _ => None,
    });
    let p = updated.expect("Enter on the review saves the policy");
    assert_eq!(p.name, name);
    assert_eq!(p.schedule.time.format("%H:%M").to_string(), "03:30");
    assert!(a.popups.is_empty());
}

#[test]
fn job_details_that_failed_to_load_can_be_asked_again() {
    use crossterm::event::{KeyEvent, KeyModifiers};
    let mut a = app(120, 40);
    a.update(key('4'));
    let effects = a.update(code(KeyCode::Enter));
    let Some(Effect::LoadJob(id)) = effects
        .iter()
        .find(|e| matches!(e, Effect::LoadJob(_)))
        .cloned()
    else {
        panic!("the job popup asked for nothing: {effects:?}")
    };
    a.update(Msg::JobLoaded(Box::new(Err("catalog is busy".into()))));
    let screen = text(&render(&a, 120, 40));
    assert!(screen.contains("catalog is busy"), "{screen}");
    assert!(screen.contains("Press Ctrl-r to try again."), "{screen}");
    let ctrl_r = Msg::Key(KeyEvent::new(KeyCode::Char('r'), KeyModifiers::CONTROL));
    let effects = a.update(ctrl_r);
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::LoadJob(again) if *again == id)),
        "{effects:?}"
    );
    let job = jobs()
        .into_iter()
        .find(|j| j.id.starts_with(&id) || id.starts_with(&j.id))
        .expect("a fixture job");
    a.update(Msg::JobLoaded(Box::new(Ok(job))));
    let screen = text(&render(&a, 120, 40));
    assert!(
        !screen.contains("catalog is busy") && screen.contains("Operation"),
        "{screen}"
    );
}

#[test]
fn a_restore_answer_finds_its_form_under_another_commands_message() {
    use vmvault::model::JobOperation;
    use vmvault::tui::app::CommandDone;
    let mut a = web01_details();
    a.update(key('R'));
    typed(&mut a, "/tmp/x");
    a.update(code(KeyCode::Enter));
    a.update(key('y')); // the restore is asked for; the form waits
                        // Another command's refusal arrives first: its message goes on top of the form.
    a.update(Msg::Done(Box::new(CommandDone {
        label: "Back up now",
        subject: "sales/web01".into(),
        operation: Some(JobOperation::Backup),
        result: Err("a backup of sales/web01 is running".into()),
        note: None,
    })));
    assert!(matches!(a.popups.last(), Some(Popup::Message(_))));
    // The restore's job is created: its form (and the item details) close, the message stays.
    a.update(Msg::Done(Box::new(CommandDone {
        label: "Restore",
        subject: "sales/web01".into(),
        operation: Some(JobOperation::Restore),
        result: Ok(vec!["0123456789abcdef".into()]),
        note: None,
    })));
    assert_eq!(a.popups.len(), 1);
    assert!(matches!(a.popups.last(), Some(Popup::Message(_))));
    assert!(!a
        .popups
        .iter()
        .any(|p| matches!(p, Popup::Restore(_) | Popup::Item(_))));
}

/// The first row of the Jobs list (the running backup of the fixture).
fn first_job_row(a: &App) -> String {
    let s = text(&render(a, 120, 40));
    s.lines()
        .find(|l| l.contains("sales/web01") && l.contains("Backup"))
        .unwrap_or_default()
        .to_string()
}

fn percent(row: &str) -> Option<u32> {
    let end = row.find('%')?;
    row[..end].rsplit(' ').next()?.parse().ok()
}

#[test]
fn a_progress_bar_never_goes_back() {
    use vmvault::engine::{Event, JobProgress};
    use vmvault::model::JobStatus;
    let mut a = app(120, 40);
    a.update(key('4'));
    let id = running_backup().id;
    let progress = |done: u64| {
        Msg::Engine(Box::new(Event::JobProgress(JobProgress {
            id: id.clone(),
            bytes_done: done,
            bytes_total: 4 * GIB,
            rate: 85.0 * 1024.0 * 1024.0,
            task: None,
        })))
    };
    // The snapshot says 38 %; live progress 73 %.
    assert_eq!(percent(&first_job_row(&a)), Some(38));
    a.update(progress(4 * GIB * 73 / 100));
    assert_eq!(percent(&first_job_row(&a)), Some(73));
    // A late progress event or an older snapshot does not take it back.
    a.update(progress(4 * GIB / 2));
    assert_eq!(percent(&first_job_row(&a)), Some(73));
    a.update(Msg::Data(Box::new(Ok(data()))));
    assert_eq!(percent(&first_job_row(&a)), Some(73));
    // The job ends: its end shows at once, even while the last snapshot still lists it
    // running at 38 %, and a snapshot loaded before the end does not bring that back.
    let mut done = running_backup();
    done.status = JobStatus::Completed;
    done.end_time = Some(now());
    done.bytes_done = 4 * GIB;
    a.update(Msg::Engine(Box::new(Event::JobUpdated(Box::new(done)))));
    for _ in 0..2 {
        let row = first_job_row(&a);
        assert!(
            row.contains("Completed") && percent(&row).is_none(),
            "{row}"
        );
        a.update(Msg::Data(Box::new(Ok(data()))));
    }
    // Late progress of an ended job is ignored.
    a.update(progress(4 * GIB / 10));
    let row = first_job_row(&a);
    assert!(
        row.contains("Completed") && percent(&row).is_none(),
        "{row}"
    );
}

#[test]
fn back_up_now_refuses_a_date_beyond_99_years_in_its_form() {
    // hr/web01 (protected, pending its initial backup): the dialog opens.
    let mut a = app(120, 40);
    a.update(key('3'));
    a.update(code(KeyCode::End));
    a.update(code(KeyCode::Up));
    a.update(key('b'));
    assert!(matches!(a.popups.last(), Some(Popup::BackupNow(_))));
    let retype = |a: &mut App, date: &str| {
        for _ in 0..10 {
            a.update(code(KeyCode::Backspace));
        }
        typed(a, date);
    };
    retype(&mut a, "2126-12-01");
    let effects = a.update(code(KeyCode::Enter));
    assert!(!runs(&effects, |c| matches!(c, Command::BackupNow { .. })));
    let Some(Popup::BackupNow(form)) = a.popups.last() else {
        panic!("the form was thrown away")
    };
    assert_eq!(
        form.retain_until.value, "2126-12-01",
        "what was typed stays"
    );
    let screen = text(&render(&a, 120, 40));
    assert!(screen.contains("more than 99 years ahead"), "{screen}");
    // Corrected in place, it starts.
    retype(&mut a, "2124-12-01");
    let effects = a.update(code(KeyCode::Enter));
    assert!(runs(&effects, |c| matches!(c, Command::BackupNow { .. })));
}

#[test]
fn register_needs_a_ticked_vm_and_never_takes_the_highlighted_one() {
    let mut a = app(120, 40);
    a.update(key('2'));
    a.update(key('r'));
    assert!(matches!(a.popups.last(), Some(Popup::Register(_))));
    let effects = a.update(code(KeyCode::Enter));
    assert!(!runs(&effects, |c| matches!(c, Command::Register(_))));
    assert!(matches!(a.popups.last(), Some(Popup::Register(_))));
    let screen = text(&render(&a, 120, 40));
    assert!(screen.contains("No VM is ticked: Space ticks"), "{screen}");
    // Ticked, Enter registers exactly that one.
    let Some(Popup::Register(r)) = a.popups.last() else {
        panic!("closed")
    };
    let first = r
        .picker
        .current()
        .map(|i| i.name.clone())
        .unwrap_or_default();
    a.update(key(' '));
    assert!(!text(&render(&a, 120, 40)).contains("No VM is ticked"));
    let effects = a.update(code(KeyCode::Enter));
    assert!(runs(&effects, |c| matches!(
        c,
        Command::Register(items) if items.len() == 1 && items[0].name == first
    )));
}
