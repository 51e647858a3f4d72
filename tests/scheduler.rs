//! The scheduler of `vmvault run`: scheduled backups at the policy's time, one catch-up
//! after downtime, clean stop on SIGTERM with running jobs recorded as cancelled.

mod common;
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

fn sim_now(env: &Env) -> chrono::DateTime<chrono::Utc> {
    let s = env.ok(&["sim", "now"]);
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .unwrap()
        .with_timezone(&chrono::Utc)
}

fn backups(env: &Env) -> Vec<Value> {
    env.json(&["jobs", "--operation", "Backup"])
        .as_array()
        .unwrap()
        .clone()
}

fn stop(child: &mut std::process::Child) -> std::process::ExitStatus {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    child.wait().unwrap()
}

#[test]
fn one_catch_up_after_downtime_and_sigterm_cancels_it_cleanly() {
    let env = Env::with_source("read_throughput_mib_s = 2");
    env.protect(&["app01"]);
    // Three scheduled instants pass while no vmvault runs.
    env.ok(&["sim", "advance", "3d", "--offline"]);
    assert!(backups(&env).is_empty());

    let mut run = env
        .std_cmd()
        .arg("run")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(60, "the catch-up backup to run", || {
        backups(&env)
            .iter()
            .any(|j| j["status"] == "InProgress" && j["bytes_done"].as_u64().unwrap_or(0) > 0)
    });
    let jobs = backups(&env);
    assert_eq!(
        jobs.len(),
        1,
        "one catch-up, not one per missed day: {jobs:#?}"
    );
    assert_eq!(jobs[0]["is_user_triggered"], false);

    let status = stop(&mut run);
    assert_eq!(
        status.code(),
        Some(0),
        "vmvault run stops cleanly on SIGTERM"
    );
    let jobs = backups(&env);
    assert_eq!(jobs[0]["status"], "Cancelled", "{:#}", jobs[0]);
    assert!(jobs[0]["end_time"].is_string());
    assert!(
        env.json(&["points", "app01"])
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing half-written is committed"
    );
    // Nothing is left InProgress for the next start to call interrupted.
    assert!(env
        .json(&["jobs", "--status", "InProgress"])
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn scheduled_backup_runs_at_the_policy_time() {
    use chrono::Timelike;
    let env = Env::new();
    env.protect(&["app01"]);
    // DefaultPolicy runs daily at 19:00 UTC: move the simulated clock to a few seconds
    // before the next 19:00 (offline: nothing runs in between).
    let now = sim_now(&env);
    let mut next = now.date_naive().and_hms_opt(19, 0, 0).unwrap().and_utc();
    if next <= now + chrono::Duration::seconds(30) {
        next += chrono::Duration::days(1);
    }
    let by = (next - now).num_seconds() - 4;
    env.ok(&["sim", "advance", &format!("{by}s"), "--offline"]);

    let mut run = env
        .std_cmd()
        .arg("run")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(90, "the scheduled backup to complete", || {
        backups(&env).iter().any(|j| j["status"] == "Completed")
    });
    assert_eq!(stop(&mut run).code(), Some(0));
    let points = env.json(&["points", "app01"]);
    let p = &points[0];
    assert_eq!(p["kind"], "scheduled");
    let scheduled =
        chrono::DateTime::parse_from_rfc3339(p["scheduled_time"].as_str().unwrap()).unwrap();
    assert_eq!(
        (scheduled.hour(), scheduled.minute(), scheduled.second()),
        (19, 0, 0)
    );
    let items = env.json(&["items"]);
    let app = items
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "app01")
        .unwrap();
    assert_eq!(
        app["protection_state"], "Protected",
        "the first scheduled backup is the initial backup"
    );
}
