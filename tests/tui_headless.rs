//! The console driven through `update` (no terminal) against a real engine on the
//! simulator: every check reads the engine's state, not the screen.

mod common;
mod tui_support;

use common::*;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::time::Duration;
use tui_support::fixture::{code, key};
use vmvault::app::Setup;
use vmvault::engine::OpenMode;
use vmvault::model::*;
use vmvault::tui::app::{App, Tab};
use vmvault::tui::popups::Popup;
use vmvault::tui::session::Session;

const WAIT: Duration = Duration::from_secs(120);

async fn session(env: &Env) -> Session {
    let setup = Setup::load(Some(&env.config), Some(&env.data), None).expect("setup");
    let mut s = Session::start(setup).await;
    s.handle(vmvault::tui::app::Msg::Resize(120, 40));
    assert!(s.run_until(WAIT, |a| a.data.loaded).await, "no data loaded");
    s
}

/// Selects the policy named `name` in the Policies tab.
fn select_policy(s: &mut Session, name: &str) {
    let pos = s
        .app
        .data
        .policies
        .iter()
        .position(|p| p.policy.name == name)
        .unwrap_or_else(|| panic!("policy {name} not listed"));
    s.app.policies.nav.selected = pos;
}

fn press(s: &mut Session, keys: &str) {
    for c in keys.chars() {
        s.handle(key(c));
    }
}

fn item<'a>(items: &'a [Item], qualified: &str) -> &'a Item {
    items
        .iter()
        .find(|i| i.qualified_name() == qualified)
        .unwrap_or_else(|| panic!("{qualified} not in {items:#?}"))
}

fn engine_item(s: &Session, qualified: &str) -> Item {
    item(&s.engine().unwrap().items().unwrap(), qualified).clone()
}

fn notice(a: &App) -> String {
    a.notice
        .as_ref()
        .map(|n| n.text.clone())
        .unwrap_or_default()
}

/// The console's screen at `w`×`h`.
fn screen(s: &Session, w: u16, h: u16) -> String {
    tui_support::fixture::text(&tui_support::fixture::render(&s.app, w, h))
}

#[track_caller]
fn assert_notice(s: &Session, part: &str) {
    let n = notice(&s.app);
    assert!(n.contains(part), "{part:?} not in the notice: {n}");
}

/// Waits for `pred` on the engine's items (polling through the session's messages).
async fn until_item(s: &mut Session, qualified: &str, what: &str, pred: impl Fn(&Item) -> bool) {
    let q = qualified.to_string();
    let ok = s
        .run_until(WAIT, |a| {
            a.data
                .items
                .iter()
                .any(|i| i.qualified_name() == q && pred(i))
        })
        .await;
    assert!(
        ok,
        "{qualified}: {what} never happened; engine has {:#?}; notice: {}",
        engine_item(s, qualified),
        notice(&s.app)
    );
    assert!(
        pred(&engine_item(s, qualified)),
        "the snapshot and the engine disagree about {qualified}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_flow_through_update() {
    let env = Env::new();
    let mut s = session(&env).await;

    // Discover from Registered Items.
    press(&mut s, "2d");
    assert!(
        s.run_until(WAIT, |a| notice(a).starts_with("Discovery complete"))
            .await,
        "{}",
        notice(&s.app)
    );
    assert!(s.engine().unwrap().items().unwrap().len() >= 12);
    assert!(s.run_until(WAIT, |a| a.data.items.len() >= 12).await);

    // Register items: only this region's unregistered VMs are offered; filter, select.
    press(&mut s, "r");
    {
        let Some(Popup::Register(r)) = s.app.popups.last() else {
            panic!("register popup not open")
        };
        assert!(r.picker.candidates.iter().all(|i| i.region == "westeurope"));
        assert!(r
            .picker
            .candidates
            .iter()
            .any(|i| i.qualified_name() == "hr/web01"));
        assert!(!r.picker.candidates.iter().any(|i| i.region == "eastus"));
    }
    press(&mut s, "/app01");
    s.handle(code(KeyCode::Enter));
    press(&mut s, " ");
    s.handle(code(KeyCode::Enter));
    assert!(s.app.popups.is_empty());
    until_item(&mut s, "sales/app01", "registration", |i| {
        i.registration_state == RegistrationState::Registered
    })
    .await;
    assert!(notice(&s.app).contains("Register"), "{}", notice(&s.app));
    assert_eq!(
        engine_item(&s, "sales/web01").registration_state,
        RegistrationState::NotRegistered
    );

    // Protect with a NEW policy through the wizard.
    press(&mut s, "3p");
    s.handle(code(KeyCode::Enter)); // app01, the only candidate
    s.handle(code(KeyCode::Down)); // past DefaultPolicy: New policy…
    s.handle(code(KeyCode::Tab));
    press(&mut s, "Nightly");
    s.handle(code(KeyCode::Down)); // frequency
    s.handle(code(KeyCode::Down)); // time
    s.handle(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL).into_msg());
    press(&mut s, "02:30");
    s.handle(code(KeyCode::Enter)); // → retention
                                    // Keep 14 days instead of 30.
    s.handle(code(KeyCode::Backspace));
    s.handle(code(KeyCode::Backspace));
    press(&mut s, "14");
    s.handle(code(KeyCode::Enter)); // → review
    s.handle(code(KeyCode::Enter)); // protect
    assert!(s.app.popups.is_empty(), "wizard still open");
    until_item(&mut s, "sales/app01", "protection", |i| {
        i.protection_state == ProtectionState::IrPending
    })
    .await;
    let p = s
        .engine()
        .unwrap()
        .policy("Nightly")
        .expect("policy created");
    assert_eq!(p.retention.daily.as_ref().map(|d| d.days), Some(14));
    assert_eq!(p.schedule.time.format("%H:%M").to_string(), "02:30");
    assert_eq!(
        engine_item(&s, "sales/app01").policy.as_deref(),
        Some("Nightly")
    );

    // Back up now (default retain-until: 30 days).
    s.app.protected.table.nav.selected = 0;
    press(&mut s, "b");
    assert!(matches!(s.app.popups.last(), Some(Popup::BackupNow(_))));
    s.handle(code(KeyCode::Enter));
    until_item(&mut s, "sales/app01", "the initial backup", |i| {
        i.protection_state == ProtectionState::Protected
    })
    .await;
    let points = s
        .engine()
        .unwrap()
        .points(&engine_item(&s, "sales/app01").id)
        .unwrap();
    assert_eq!(points.len(), 1);
    let days = (points[0].expiry.unwrap() - points[0].time).num_days();
    assert!(
        (29..=30).contains(&days),
        "on-demand point kept {days} days"
    );

    // Jobs tab lists the backup as Completed; Enter shows its tasks.
    press(&mut s, "4");
    assert!(
        s.run_until(WAIT, |a| a.data.jobs.rows.iter().any(|j| j.operation
            == JobOperation::Backup
            && j.status == JobStatus::Completed))
            .await
    );
    let pos = s
        .app
        .jobs
        .order
        .iter()
        .position(|n| s.app.data.jobs.rows[*n].operation == JobOperation::Backup)
        .unwrap();
    s.app.jobs.nav.selected = pos;
    s.handle(code(KeyCode::Enter));
    assert!(
        s.run_until(WAIT, |a| matches!(a.popups.last(), Some(Popup::Job(j)) if j.job.as_ref().is_some_and(|j| j.tasks.len() == 2)))
            .await
    );
    s.handle(code(KeyCode::Esc));

    // Dashboard: counts, and Enter on "Completed" opens Jobs filtered to it.
    press(&mut s, "1");
    assert!(
        s.run_until(WAIT, |a| a
            .data
            .summary
            .as_ref()
            .is_some_and(|x| x.protected == 1))
            .await
    );
    let sum = s.app.data.summary.clone().unwrap();
    // The loader derives counts and next backups itself: they agree with the engine's.
    let engine_sum = s.engine().unwrap().summary().unwrap();
    assert_eq!(
        (
            sum.protected,
            sum.registered,
            sum.needs_attention,
            sum.jobs_24h
        ),
        (
            engine_sum.protected,
            engine_sum.registered,
            engine_sum.needs_attention,
            engine_sum.jobs_24h
        )
    );
    assert_eq!(
        sum.storage.recovery_points,
        engine_sum.storage.recovery_points
    );
    let upcoming = s.engine().unwrap().upcoming_backups().unwrap();
    assert_eq!(upcoming.len(), s.app.data.next_backup.len());
    for (i, t) in &upcoming {
        assert_eq!(
            s.app.data.next_backup.get(&i.id),
            Some(t),
            "next backup of {}",
            i.qualified_name()
        );
    }
    assert_eq!(sum.registered, 1);
    assert!(sum.jobs_24h.completed >= 4, "{sum:?}");
    assert_eq!(sum.jobs_24h.failed, 0);
    s.handle(code(KeyCode::Enter));
    assert_eq!(s.app.tab, Tab::Jobs);
    assert!(
        s.run_until(WAIT, |a| a.data.jobs.query.status
            == vmvault::tui::data::StatusFilter::Completed)
            .await
    );
    assert!(s.app.data.jobs.rows.iter().all(|j| matches!(
        j.status,
        JobStatus::Completed | JobStatus::CompletedWithWarnings
    )));
    assert_eq!(s.app.data.jobs.total, sum.jobs_24h.completed);

    // Restore the point from the item's details.
    press(&mut s, "3");
    s.app.protected.table.nav.selected = 0;
    s.handle(code(KeyCode::Enter));
    assert!(s.run_until(WAIT, |a| matches!(a.popups.last(), Some(Popup::Item(i)) if i.points.as_ref().is_some_and(|p| p.len() == 1))).await);
    press(&mut s, "R");
    let target = env.path("restored");
    {
        let Some(Popup::Restore(r)) = s.app.popups.last_mut() else {
            panic!("restore popup not open")
        };
        r.folder.set(target.display().to_string());
    }
    s.handle(code(KeyCode::Enter)); // asks
    press(&mut s, "y");
    let restore_done = s
        .run_until(WAIT, |a| {
            a.data
                .jobs
                .rows
                .iter()
                .any(|j| j.operation == JobOperation::Restore && !j.status.is_active())
        })
        .await;
    assert!(restore_done);
    let job = s
        .app
        .data
        .jobs
        .rows
        .iter()
        .find(|j| j.operation == JobOperation::Restore)
        .unwrap()
        .clone();
    assert_eq!(job.status, JobStatus::Completed, "{job:#?}");
    assert!(target.join("app01-disk0.raw").exists());

    // Stop protection (retain data), confirmed; then resume: its previous policy (Nightly)
    // is chosen first; pick DefaultPolicy instead.
    s.handle(code(KeyCode::Enter));
    assert!(matches!(s.app.popups.last(), Some(Popup::Item(_))));
    press(&mut s, "s");
    s.handle(code(KeyCode::Enter));
    assert!(matches!(s.app.popups.last(), Some(Popup::Confirm(_))));
    press(&mut s, "y");
    until_item(&mut s, "sales/app01", "stop protection", |i| {
        i.protection_state == ProtectionState::ProtectionStopped
    })
    .await;
    s.handle(code(KeyCode::Enter));
    assert!(s.run_until(WAIT, |a| matches!(a.popups.last(), Some(Popup::Item(i)) if i.item.protection_state == ProtectionState::ProtectionStopped)).await);
    press(&mut s, "u");
    let Some(Popup::Resume(r)) = s.app.popups.last() else {
        panic!("u did not open the resume dialog")
    };
    assert_eq!(r.policies[r.selected].0, "Nightly");
    let default = r
        .policies
        .iter()
        .position(|(n, _)| n == "DefaultPolicy")
        .expect("DefaultPolicy listed");
    let moves = r.selected.abs_diff(default);
    let step = if default < r.selected {
        KeyCode::Up
    } else {
        KeyCode::Down
    };
    for _ in 0..moves {
        s.handle(code(step));
    }
    s.handle(code(KeyCode::Enter));
    until_item(&mut s, "sales/app01", "resume", |i| {
        i.protection_state == ProtectionState::Protected
    })
    .await;
    assert_eq!(
        engine_item(&s, "sales/app01").policy.as_deref(),
        Some("DefaultPolicy")
    );

    // Policies: Nightly is unused now and can be deleted; DefaultPolicy cannot.
    s.handle(code(KeyCode::Esc));
    press(&mut s, "5");
    assert!(
        s.run_until(WAIT, |a| a
            .data
            .policies
            .iter()
            .any(|p| p.policy.name == "Nightly" && p.used_by == 0))
            .await
    );
    press(&mut s, "x");
    assert!(notice(&s.app).contains("built in"), "{}", notice(&s.app));
    select_policy(&mut s, "Nightly");
    press(&mut s, "x");
    press(&mut s, "y");
    assert!(
        s.run_until(WAIT, |a| !a
            .data
            .policies
            .iter()
            .any(|p| p.policy.name == "Nightly"))
            .await
    );
    assert!(s.engine().unwrap().policy("Nightly").is_err());

    // Create a policy from the Policies tab.
    press(&mut s, "n");
    press(&mut s, "Weekly-Sun");
    s.handle(code(KeyCode::Down));
    s.handle(code(KeyCode::Right)); // weekly
    s.handle(code(KeyCode::Enter)); // schedule fine (Sunday)
                                    // Retention: the weekly rule came on with the weekly schedule, on its Sunday.
    let Some(Popup::PolicyWizard(w)) = s.app.popups.last() else {
        panic!("wizard closed")
    };
    assert_eq!(w.step, 1);
    assert!(w.problems().is_empty(), "{:?}", w.problems());
    // Without it the schedule keeps nothing: live problems keep Enter from moving on.
    press(&mut s, " "); // weekly off
    s.handle(code(KeyCode::Enter));
    let Some(Popup::PolicyWizard(w)) = s.app.popups.last() else {
        panic!("wizard closed")
    };
    assert_eq!(w.step, 1);
    assert!(
        w.problems().iter().any(|p| p.contains("weekly")),
        "{:?}",
        w.problems()
    );
    press(&mut s, " "); // weekly on
    s.handle(code(KeyCode::Enter));
    s.handle(code(KeyCode::Enter));
    assert!(
        s.run_until(WAIT, |a| a
            .data
            .policies
            .iter()
            .any(|p| p.policy.name == "Weekly-Sun"))
            .await
    );

    // Edit it: a new backup time, saved in the vault.
    select_policy(&mut s, "Weekly-Sun");
    press(&mut s, "e");
    for k in tui_support::fixture::retype_schedule_time(&s.app, "05:15") {
        s.handle(k);
    }
    s.handle(code(KeyCode::Enter));
    s.handle(code(KeyCode::Enter));
    s.handle(code(KeyCode::Enter));
    assert!(
        s.run_until(WAIT, |a| a.data.policies.iter().any(|p| p.policy.name
            == "Weekly-Sun"
            && p.policy.schedule.time.format("%H:%M").to_string() == "05:15"))
            .await
    );
    let saved = s.engine().unwrap().policy("Weekly-Sun").unwrap();
    assert_eq!(saved.schedule.time.format("%H:%M").to_string(), "05:15");
    assert_eq!(
        saved.schedule.days.len(),
        1,
        "the rest unchanged: {saved:?}"
    );

    // Quit with nothing running: no question.
    press(&mut s, "q");
    assert!(s.app.should_quit);
    s.close().await;
}

trait IntoMsg {
    fn into_msg(self) -> vmvault::tui::app::Msg;
}
impl IntoMsg for KeyEvent {
    fn into_msg(self) -> vmvault::tui::app::Msg {
        vmvault::tui::app::Msg::Key(self)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_quit_record_cancelled_jobs() {
    // Slow reads: a backup runs long enough to be cancelled.
    let env = Env::with_source("read_throughput_mib_s = 2");
    env.protect(&["sales/web01", "hr/web01"]);
    let mut s = session(&env).await;
    // Back up both from Protected Items.
    press(&mut s, "3");
    s.app.protected.table.nav.selected = 0;
    press(&mut s, "b");
    s.handle(code(KeyCode::Enter));
    s.app.protected.table.nav.selected = 1;
    press(&mut s, "b");
    s.handle(code(KeyCode::Enter));
    assert!(
        s.run_until(WAIT, |a| a
            .running
            .values()
            .filter(|j| j.operation == JobOperation::Backup)
            .count()
            == 2)
            .await
    );
    // Progress arrives from events.
    assert!(
        s.run_until(WAIT, |a| a.progress.values().any(|p| p.bytes_done > 0))
            .await
    );

    // Cancel the first from the Jobs tab.
    press(&mut s, "4");
    assert!(
        s.run_until(WAIT, |a| a
            .data
            .jobs
            .rows
            .iter()
            .filter(|j| j.status == JobStatus::InProgress)
            .count()
            == 2)
            .await
    );
    let pos = s
        .app
        .jobs
        .order
        .iter()
        .position(|n| s.app.data.jobs.rows[*n].status == JobStatus::InProgress)
        .unwrap();
    s.app.jobs.nav.selected = pos;
    let id = s.app.data.jobs.rows[s.app.jobs.order[pos]].id.clone();
    // c asks first; Enter answers no, y cancels.
    press(&mut s, "c");
    assert!(matches!(s.app.popups.last(), Some(Popup::Confirm(_))));
    s.handle(code(KeyCode::Enter));
    assert!(s.app.popups.is_empty());
    assert!(s.app.running.contains_key(&id));
    press(&mut s, "cy");
    assert!(s.run_until(WAIT, |a| !a.running.contains_key(&id)).await);
    assert_eq!(
        s.engine().unwrap().job(&id).unwrap().status,
        JobStatus::Cancelled
    );

    // Quit asks while the other runs; yes cancels it and records it.
    let other = s
        .app
        .running
        .keys()
        .next()
        .cloned()
        .expect("the other backup still runs");
    press(&mut s, "q");
    assert!(!s.app.should_quit);
    assert!(matches!(s.app.popups.last(), Some(Popup::Confirm(_))));
    press(&mut s, "y");
    assert!(s.app.should_quit);
    let engine = s.engine().unwrap().clone();
    s.close().await;
    assert_eq!(engine.job(&other).unwrap().status, JobStatus::Cancelled);
}

/// Discovered VMs in test-we, owned by this process (as another process would), and a
/// console started on it.
async fn console_beside_an_owner(env: &Env) -> (vmvault::engine::Engine, Session) {
    env.ok(&["discover"]);
    let setup = Setup::load(Some(&env.config), Some(&env.data), None).unwrap();
    let owner = setup.open(OpenMode::Exclusive).unwrap();
    let setup = Setup::load(Some(&env.config), Some(&env.data), None).unwrap();
    (owner, Session::start(setup).await)
}

/// Waits for "vault in use" (naming its owner) and opens the vault read-only from it.
async fn open_read_only(s: &mut Session) {
    assert!(
        s.run_until(WAIT, |a| matches!(a.popups.last(), Some(Popup::Locked(_))))
            .await
    );
    let Some(Popup::Locked(l)) = s.app.popups.last() else {
        panic!("no locked popup")
    };
    assert!(l.message.contains("in use by process"), "{}", l.message);
    s.handle(code(KeyCode::Enter));
    assert!(
        s.run_until(WAIT, |a| a.read_only() && a.data.loaded).await,
        "not opened read-only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_owned_elsewhere_opens_read_only_and_vaults_switch() {
    let env = Env::new();
    let (owner, mut s) = console_beside_an_owner(&env).await;
    // Drawn at once: the console says what it waits for instead of a blank screen.
    assert!(s.app.vault.is_none());
    assert!(s.app.popups.is_empty());
    assert!(
        notice(&s.app).starts_with("Opening vault test-we"),
        "{}",
        notice(&s.app)
    );
    let shown = screen(&s, 100, 30);
    assert!(shown.contains("Opening vault test-we"), "{shown}");
    // Keys meanwhile say why they do nothing yet.
    press(&mut s, "2d");
    assert_notice(&s, "still opening");
    assert!(
        s.run_until(WAIT, |a| !a.popups.is_empty()
            || notice(a).contains("waiting for it, in use by process"))
            .await
    );
    // Enter opens it read-only: data shows, actions are refused with a notice.
    open_read_only(&mut s).await;
    assert!(s.app.data.items.len() >= 12);
    press(&mut s, "2d");
    assert!(notice(&s.app).contains("Read-only"), "{}", notice(&s.app));
    let n = notice(&s.app);
    assert!(
        n.contains(" is in use by process ") && !n.contains("is is"),
        "{n}"
    );
    press(&mut s, "r");
    assert!(s.app.popups.is_empty());
    assert!(!owner
        .job_list(&Default::default())
        .unwrap()
        .iter()
        .any(|j| j.operation == JobOperation::Discover && j.status.is_active()));

    // Switch to the other vault (not owned elsewhere): owned, writable.
    press(&mut s, "v");
    let Some(Popup::Vaults(v)) = s.app.popups.last() else {
        panic!("no vault list")
    };
    let eus = v.choices.iter().position(|c| c.name == "test-eus").unwrap();
    for _ in 0..eus {
        s.handle(code(KeyCode::Down));
    }
    s.handle(code(KeyCode::Enter));
    assert!(
        s.run_until(WAIT, |a| a
            .vault
            .as_ref()
            .is_some_and(|v| v.name == "test-eus" && v.read_only.is_none()))
            .await
    );
    assert_eq!(s.engine().unwrap().region(), "eastus");
    s.close().await;
    drop(owner);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_bindings_and_theme_from_config_with_warnings() {
    let env = Env::new();
    let mut text = std::fs::read_to_string(&env.config).unwrap();
    text.push_str(
        "\n[tui.keys]\ndiscover = \"D\"\ndicsover = \"x\"\n\n[tui.theme]\nerror = \"magenta\"\n",
    );
    std::fs::write(&env.config, text).unwrap();
    let mut s = session(&env).await;
    assert!(notice(&s.app).contains("dicsover"), "{}", notice(&s.app));
    assert_eq!(s.app.theme.error, ratatui::style::Color::Magenta);
    press(&mut s, "2d");
    assert!(s.app.pending == 0, "d no longer discovers");
    press(&mut s, "D");
    assert!(s.run_until(WAIT, |a| a.data.items.len() >= 12).await);
    s.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_edit_counts_the_points_whose_expiry_changed() {
    use vmvault::tui::app::Command;
    use vmvault::tui::session::run_command;
    let env = Env::new();
    let daily = |days: u32| {
        format!(
            "name = \"Nightly\"\ntime_zone = \"UTC\"\n[schedule]\nfrequency = \"daily\"\ntime = \"22:30\"\n[retention.daily]\ndays = {days}\n"
        )
    };
    let file = env.path("nightly.toml");
    std::fs::write(&file, daily(30)).unwrap();
    env.ok(&["policy", "create", "--file", file.to_str().unwrap()]);
    env.ok(&["discover"]);
    env.ok(&["register", "jump01"]);
    env.ok(&["protect", "jump01", "--policy", "Nightly"]);
    // Three on-demand points: they keep their own retain-until whatever the policy says.
    for _ in 0..3 {
        env.backup("jump01");
    }
    let setup = Setup::load(Some(&env.config), Some(&env.data), None).unwrap();
    let engine = setup.open(OpenMode::Exclusive).unwrap();
    let mut p = engine.policy("Nightly").unwrap();
    p.retention.daily = Some(vmvault::policy::DailyRule { days: 7 });
    let done = tokio::task::spawn_blocking({
        let engine = engine.clone();
        let p = p.clone();
        move || run_command(&engine, Command::UpdatePolicy(Box::new(p)))
    })
    .await
    .unwrap();
    assert!(done.result.is_ok(), "{:?}", done.result);
    let note = done.note.unwrap_or_default();
    assert!(
        note.contains("no recovery point expires at another time"),
        "{note}"
    );
    let changes = engine.update_policy("Nightly", &p).unwrap();
    assert_eq!((changes.evaluated, changes.changed), (3, 0));
    // A scheduled point does follow the new rules.
    engine
        .sim_advance(
            chrono::Duration::days(1),
            vmvault::cancel::CancelToken::new(),
        )
        .await
        .unwrap();
    p.retention.daily = Some(vmvault::policy::DailyRule { days: 3 });
    let changes = engine.update_policy("Nightly", &p).unwrap();
    assert_eq!(changes.evaluated, 4, "{changes:?}");
    assert_eq!(changes.changed, 1, "{changes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_jobs_shows_exactly_the_notifications_jobs() {
    let env = Env::new();
    env.ok(&["discover"]);
    // Register jobs of another command, just before.
    env.ok(&["register", "sales/web01", "hr/web01"]);
    let mut s = session(&env).await;
    press(&mut s, "2r");
    let Some(Popup::Register(_)) = s.app.popups.last() else {
        panic!("register popup not open")
    };
    press(&mut s, "  ");
    s.handle(code(KeyCode::Enter));
    assert!(
        s.run_until(WAIT, |a| a
            .notice
            .as_ref()
            .is_some_and(|n| n.job_ids.len() == 2))
            .await,
        "{}",
        notice(&s.app)
    );
    let mut ids = s.app.notice.as_ref().unwrap().job_ids.clone();
    press(&mut s, "J");
    assert_eq!(s.app.tab, Tab::Jobs);
    assert!(
        s.run_until(WAIT, |a| a.data.jobs.query.job_ids.len() == 2)
            .await
    );
    let mut shown: Vec<String> = s.app.data.jobs.rows.iter().map(|j| j.id.clone()).collect();
    shown.sort();
    ids.sort();
    assert_eq!(shown, ids, "the Register jobs of the CLI are not shown");
    // Coming back to the tab on one's own: every job of the last 24 hours again.
    press(&mut s, "14");
    assert!(
        s.run_until(WAIT, |a| a.data.jobs.query.job_ids.is_empty()
            && a.data.jobs.rows.len() >= 5)
            .await
    );
    s.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_console_offers_to_take_over_when_the_owner_leaves() {
    let env = Env::new();
    let (owner, mut s) = console_beside_an_owner(&env).await;
    open_read_only(&mut s).await;
    // While the owner is there, T says why it cannot take over yet.
    press(&mut s, "T");
    assert_notice(&s, "once that process ends");
    assert!(s.app.read_only());

    // The owner leaves: the console notices and offers to take over.
    owner.shutdown(Duration::from_secs(10)).await;
    drop(owner);
    assert!(
        s.run_until(WAIT, |a| a.vault.as_ref().is_some_and(|v| v.free))
            .await,
        "the owner's exit went unnoticed: {}",
        notice(&s.app)
    );
    assert_notice(&s, "press T to take it over");
    let shown = screen(&s, 120, 40);
    assert!(shown.contains("free: T takes over"), "{shown}");
    press(&mut s, "T");
    assert!(
        s.run_until(WAIT, |a| a
            .vault
            .as_ref()
            .is_some_and(|v| v.read_only.is_none()))
            .await,
        "{}",
        notice(&s.app)
    );
    assert!(s.engine().unwrap().is_owner());
    // Actions work again.
    press(&mut s, "2d");
    assert!(
        s.run_until(WAIT, |a| notice(a).starts_with("Discovery complete"))
            .await,
        "{}",
        notice(&s.app)
    );
    s.close().await;
}
