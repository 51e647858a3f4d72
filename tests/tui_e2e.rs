//! The real `vmvault` console in a pseudo-terminal, driven by keys and read from the screen:
//! discover → register → protect with a new policy → back up now → the job completes →
//! dashboard counts → restore (bit-identical to the simulated disk at the point's time).
//! Waits poll the screen with generous timeouts (CI machines are small and busy).

mod common;
mod tui_support;

use common::*;
use tui_support::*;

fn console(env: &Env, cols: u16, rows: u16, extra_env: &[(&str, &str)]) -> Console {
    let config = env.config.to_str().expect("utf8 path").to_string();
    let data = env.data.to_str().expect("utf8 path").to_string();
    Console::spawn(
        &["--config", &config, "--data-dir", &data],
        extra_env,
        cols,
        rows,
    )
}

/// A line of the screen that contains every one of `parts`.
fn has_line(screen: &str, parts: &[&str]) -> bool {
    screen.lines().any(|l| parts.iter().all(|p| l.contains(p)))
}

#[test]
fn portal_flow_in_a_real_terminal() {
    let env = Env::new();
    let mut c = console(&env, 120, 40, &[]);
    c.wait_for("1 Dashboard", TIMEOUT);
    c.wait_for("Opened vault test-we", TIMEOUT);

    // Discover.
    c.send("2");
    c.wait_for("Workload type", TIMEOUT);
    c.send("d");
    c.wait_for("Discovery complete", TIMEOUT);
    c.wait_until("app01 listed", TIMEOUT, |s| {
        has_line(s, &["app01", "sales", "Not registered"])
    });

    // Register app01 (filter, select, Enter).
    c.send("r");
    c.wait_for("Register items", TIMEOUT);
    c.send("/app01");
    c.wait_for("filter \"app01", TIMEOUT);
    c.enter();
    c.send(" ");
    c.wait_until("app01 selected", TIMEOUT, |s| {
        has_line(s, &["[x]", "app01"])
    });
    c.enter();
    c.wait_until("app01 registered", TIMEOUT, |s| {
        has_line(s, &["app01", "sales", "Registered"])
            && !has_line(s, &["app01", "sales", "Not registered"])
    });

    // Protect with a new policy.
    c.send("3");
    c.wait_for("Protected Items", TIMEOUT);
    c.send("p");
    c.wait_for("Registered VMs not protected yet", TIMEOUT);
    c.enter();
    c.wait_for("New policy…", TIMEOUT);
    c.down();
    c.send("\t");
    c.wait_for("New policy: schedule", TIMEOUT);
    c.send("Nightly");
    c.wait_until("the name typed", TIMEOUT, |s| {
        has_line(s, &["Policy name", "Nightly"])
    });
    c.enter();
    c.wait_for("Retention: which backups are kept", TIMEOUT);
    c.wait_for("Retention preview", TIMEOUT);
    c.enter();
    c.wait_for("What will happen", TIMEOUT);
    c.wait_for("Policy Nightly is created", TIMEOUT);
    c.enter();
    c.wait_until("app01 pending its initial backup", TIMEOUT, |s| {
        has_line(s, &["sales/app01", "Nightly", "Pending initial backup"])
    });

    // Back up now; the job completes.
    c.send("b");
    c.wait_for("Retain backup until", TIMEOUT);
    c.enter();
    c.wait_until("the backup completed", TIMEOUT, |s| {
        has_line(s, &["sales/app01", "Nightly", "Protected", "Completed"])
    });

    // Jobs: the backup is listed as Completed.
    c.send("4");
    c.wait_until("the backup job listed", TIMEOUT, |s| {
        has_line(s, &["Backup", "sales/app01", "Completed"])
    });

    // Dashboard counts.
    c.send("1");
    c.wait_until("1 protected item", TIMEOUT, |s| {
        has_line(s, &["Protected       1"])
    });
    let s = c.wait_until("1 registered item", TIMEOUT, |s| {
        has_line(s, &["Registered      1"])
    });
    assert!(has_line(&s, &["Need attention  0"]), "{s}");

    // Restore the point into a folder of our own.
    let target = env.path("restored");
    c.send("3");
    c.wait_for("Protected Items (1)", TIMEOUT);
    c.enter();
    c.wait_for("Recovery points (1)", TIMEOUT);
    c.send("R");
    c.wait_for("Target folder", TIMEOUT);
    // No folder is suggested: the target is typed. Its free space is shown.
    c.wait_for("none yet: type where to restore", TIMEOUT);
    c.send(target.to_str().expect("utf8"));
    c.wait_for("restored/app01-disk0.raw", TIMEOUT);
    c.wait_until("the target's free space", TIMEOUT, |s| {
        has_line(s, &["Free space", "on the file system of"])
    });
    // Enter asks first; y starts.
    c.enter();
    c.wait_for("as raw?", TIMEOUT);
    c.send("y");
    c.wait_for("Restore complete", TIMEOUT);

    // The restored disks equal the simulated disks at the point's time.
    let points = env.json(&["points", "sales/app01"]);
    let point = points[0]["id"].as_str().expect("point id").to_string();
    let time = env.point_time("sales/app01", &point);
    let items = env.json(&["items"]);
    let app01 = items
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["name"] == "app01")
        .expect("app01")
        .clone();
    for d in app01["disks"].as_array().expect("disks") {
        let n = d["index"].as_u64().expect("index");
        let export = env.path(&format!("export-{n}.raw"));
        env.ok(&[
            "sim",
            "export-disk",
            "sales/app01",
            "--disk",
            &n.to_string(),
            "--at",
            &time,
            "--to",
            export.to_str().expect("utf8"),
        ]);
        assert_files_equal(&target.join(format!("app01-disk{n}.raw")), &export);
    }

    // Quit: nothing runs, so no question.
    c.send("q");
    assert_eq!(c.wait_exit(TIMEOUT), 0);
}

#[test]
fn any_size_no_color_and_quit_asks_while_jobs_run() {
    let env = Env::with_source("read_throughput_mib_s = 1");
    env.protect(&["sales/web01"]);
    let mut c = console(&env, 80, 24, &[("NO_COLOR", "1")]);
    c.wait_for("1 Dashboard", TIMEOUT);
    c.wait_for("Protected       1", TIMEOUT);
    // NO_COLOR: not one coloured cell.
    c.with_screen(|s| {
        for row in 0..24 {
            for col in 0..80 {
                let cell = s.cell(row, col).expect("cell");
                assert_eq!(
                    cell.fgcolor(),
                    vt100::Color::Default,
                    "coloured text at {row},{col}"
                );
                assert_eq!(
                    cell.bgcolor(),
                    vt100::Color::Default,
                    "coloured background at {row},{col}"
                );
            }
        }
    });
    // Tiny: says so; back to normal.
    c.resize(30, 8);
    c.wait_for("terminal too small", TIMEOUT);
    c.resize(80, 24);
    c.wait_for("1 Dashboard", TIMEOUT);

    // A slow backup runs; quitting asks, and the job ends Cancelled.
    c.send("3");
    c.wait_for("sales/web01", TIMEOUT);
    c.send("b");
    c.wait_for("Retain backup until", TIMEOUT);
    c.enter();
    c.wait_for("1 running", TIMEOUT);
    c.send("4");
    c.wait_until("a progress bar", TIMEOUT, |s| {
        has_line(s, &["Backup", "sales/web01", "%"])
    });
    c.send("q");
    c.wait_for("Quitting cancels them", TIMEOUT);
    c.send("y");
    assert_eq!(c.wait_exit(TIMEOUT), 0);
    let jobs = env.json(&["jobs", "--operation", "Backup"]);
    let statuses: Vec<&str> = jobs
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| j["status"].as_str().unwrap_or(""))
        .collect();
    assert!(statuses.contains(&"Cancelled"), "{statuses:?}");
}

#[test]
fn an_esc_typed_just_before_a_key_is_esc_then_that_key() {
    let env = Env::new();
    let mut c = console(&env, 100, 30, &[]);
    c.wait_for("Opened vault test-we", TIMEOUT);
    c.send("2");
    c.wait_for("Workload type", TIMEOUT);
    c.send("r");
    c.wait_for("Register items", TIMEOUT);
    // One write: the terminal delivers ESC and "4" together, which reads as Alt+4.
    c.send("\x1b4");
    c.wait_until(
        "Register items closed and the Jobs tab shown",
        TIMEOUT,
        |s| !s.contains("Register items") && s.contains("f Status:"),
    );
    c.send("q");
    assert_eq!(c.wait_exit(TIMEOUT), 0);
}

#[test]
fn a_passphrase_added_in_the_keys_popup_opens_the_vault() {
    const SECRET: &str = "tui secret 1";
    let env = Env::new();
    let mut c = console(&env, 120, 40, &[]);
    c.wait_for("1 Dashboard", TIMEOUT);
    // A new vault says once where its key is and what losing it means.
    c.wait_for("Opened vault test-we, new and encrypted", TIMEOUT);
    c.send("K");
    c.wait_for("Keys · test-we", TIMEOUT);
    c.wait_until("the key-file slot listed", TIMEOUT, |s| {
        has_line(s, &["key file", "the key file"])
    });
    c.wait_for("Losing every key", TIMEOUT);
    c.send("a");
    c.wait_for("New passphrase:", TIMEOUT);
    c.send(SECRET);
    c.send("\t");
    c.send(SECRET);
    c.wait_until("both fields typed", TIMEOUT, |s| {
        s.lines()
            .filter(|l| l.contains(&"•".repeat(SECRET.len())))
            .count()
            == 2
    });
    assert!(!c.screen().contains(SECRET), "{}", c.screen());
    c.enter();
    let screen = c.wait_until("the passphrase slot listed", TIMEOUT, |s| {
        has_line(s, &["passphrase", "a passphrase"]) && s.contains("Add passphrase")
    });
    assert!(!screen.contains(SECRET), "{screen}");
    c.esc();
    c.send("q");
    assert_eq!(c.wait_exit(TIMEOUT), 0);

    // The slot is in the vault: with the key file moved away, the passphrase opens it.
    let list = env.json(&["key", "list"]);
    let slots = list["slots"].as_array().expect("slots");
    assert!(
        slots
            .iter()
            .any(|s| s["kind"] == "passphrase" && s["label"] == "passphrase"),
        "{list:#}"
    );
    let key_file = list["key_file"].as_str().expect("key file");
    std::fs::rename(key_file, env.path("away.key")).expect("move the key file");
    let pw = env.path("pw.txt");
    std::fs::write(&pw, format!("{SECRET}\n")).expect("write");
    env.fails_with(1, &["discover"]);
    env.ok(&["--passphrase-file", s(&pw), "discover"]);
}
