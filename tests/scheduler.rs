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

fn times(v: &Value, key: &str) -> Vec<chrono::DateTime<chrono::Utc>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| {
            chrono::DateTime::parse_from_rfc3339(x[key].as_str().unwrap())
                .unwrap()
                .with_timezone(&chrono::Utc)
        })
        .collect()
}

/// A `sim advance` killed (SIGKILL) at any moment leaves the simulated clock at or after
/// every point and job it committed, so the next advance goes on from there: no scheduled
/// instant runs twice, and the points left at the end are the ones `policy preview`
/// predicts.
#[test]
fn killed_sim_advance_leaves_the_clock_ahead_of_its_work_and_resumes_from_there() {
    use chrono::Duration as D;
    let env = Env::new();
    env.ok(&["discover"]);
    env.ok(&["register", "jump01"]); // a stopped VM: its backups are quick
                                     // Start just after midnight UTC, so that whole days are advanced (DefaultPolicy: daily
                                     // at 19:00 UTC, each point kept 30 days).
    let now = sim_now(&env);
    let start = (now.date_naive() + D::days(1))
        .and_hms_opt(0, 1, 0)
        .unwrap()
        .and_utc();
    let to_start = (start - now).num_seconds() + 1;
    env.ok(&["sim", "advance", &format!("{to_start}s"), "--offline"]);
    env.ok(&["protect", "jump01", "--policy", "DefaultPolicy"]);
    let from = start.date_naive();
    let days: i64 = 120;
    let end = (from + D::days(days))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        - D::minutes(1);

    let kills = [4, 20, 45];
    for started in kills {
        let mut child = env
            .std_cmd()
            .args(["sim", "advance", "400d"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_until(120, "scheduled backups to run", || {
            backups(&env).len() >= started
        });
        child.kill().unwrap(); // SIGKILL: no chance to save anything on the way out
        child.wait().unwrap();

        let clock = sim_now(&env);
        let newest_point = times(&env.json(&["points", "jump01"]), "time")
            .into_iter()
            .max()
            .unwrap();
        let newest_job = times(&env.json(&["jobs"]), "start_time")
            .into_iter()
            .max()
            .unwrap();
        assert!(
            clock >= newest_point && clock >= newest_job,
            "after a kill the clock ({clock}) is behind committed work (point {newest_point}, job {newest_job})"
        );
        // The job list shows the newest job first, nothing from the simulated future.
        let first = env.json(&["jobs", "--limit", "1"]);
        assert_eq!(times(&first, "start_time"), vec![newest_job]);
    }
    assert!(
        sim_now(&env) < end - D::days(31),
        "killed too late to check the rest"
    );

    // The rest of the way in one go.
    let by = (end - sim_now(&env)).num_seconds();
    let report = env.json(&["sim", "advance", &format!("{by}s")]);
    assert_eq!(report["interrupted"], false);

    // Each scheduled instant ran at most once (a backup interrupted by a kill is not
    // repeated), and at most the kills cost an instant.
    let jobs = backups(&env);
    let days_run: std::collections::BTreeSet<chrono::NaiveDate> =
        times(&Value::Array(jobs.clone()), "start_time")
            .iter()
            .map(|t| t.date_naive())
            .collect();
    assert_eq!(days_run.len(), jobs.len(), "an instant ran twice");
    assert!(
        jobs.len() as i64 >= days - kills.len() as i64 && jobs.len() as i64 <= days,
        "{} backups over {days} days",
        jobs.len()
    );

    let preview = env.json(&[
        "policy",
        "preview",
        "DefaultPolicy",
        "--from",
        &from.to_string(),
        "--days",
        &days.to_string(),
    ]);
    let expected = times(&preview["points"], "time");
    let mut actual = times(&env.json(&["points", "jump01"]), "scheduled_time");
    actual.sort();
    assert_eq!(actual, expected);
}

/// Ctrl-C stops `sim advance` after the step it is in: exit 130, the report says where the
/// clock stopped, and no job is left running.
#[test]
fn ctrl_c_stops_sim_advance_after_the_current_step() {
    stop_sim_advance(libc::SIGINT, 130);
}

/// SIGTERM (a service manager's stop) does the same, with the exit of a cancel (3).
#[test]
fn sigterm_stops_sim_advance_with_the_cancel_exit() {
    stop_sim_advance(libc::SIGTERM, 3);
}

fn stop_sim_advance(signal: i32, code: i32) {
    let env = Env::new();
    env.protect(&["jump01"]);
    let child = env
        .std_cmd()
        .args(["sim", "advance", "400d", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(120, "scheduled backups to run", || backups(&env).len() >= 3);
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["interrupted"], true, "{report:#}");
    let stopped = chrono::DateTime::parse_from_rfc3339(report["to"].as_str().unwrap()).unwrap();
    assert!(sim_now(&env) >= stopped);
    assert!(sim_now(&env) < stopped + chrono::Duration::days(1));
    assert!(env
        .json(&["jobs", "--status", "InProgress,Cancelling"])
        .as_array()
        .unwrap()
        .is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Interrupted"));
}

/// `sim advance` commits a round's points together and runs garbage collection in the
/// first round with a prune more than a simulated week after the last one, counted in
/// scheduled instants: every point and job is the same whatever the machine's speed.
#[test]
fn sim_advance_collects_garbage_every_eighth_day_whatever_the_speed() {
    use chrono::Duration as D;
    let env = Env::new();
    env.ok(&["discover"]);
    env.ok(&["register", "jump01", "app01"]);
    env.ok(&["protect", "jump01", "app01", "--policy", "DefaultPolicy"]);
    let report = env.json(&["sim", "advance", "70d"]);
    assert_eq!(report["backups"], 140);
    assert_eq!(report["backups_failed"], 0);
    // Points kept 30 days: the first prune is on day 31, then one a day.
    let gc: Vec<chrono::NaiveDate> = times(
        &env.json(&["jobs", "--operation", "GarbageCollect"]),
        "start_time",
    )
    .into_iter()
    .map(|t| t.date_naive())
    .rev()
    .collect();
    let prunes = times(&env.json(&["jobs", "--operation", "Prune"]), "start_time");
    let first_prune = prunes.iter().min().unwrap().date_naive();
    assert_eq!(gc[0], first_prune, "{gc:?}");
    let end = sim_now(&env).date_naive();
    for pair in gc.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap == D::days(8) || pair[1] == end,
            "garbage collections on {gc:?} (prunes from {first_prune}, end {end})"
        );
    }
    assert_eq!(report["gc_runs"], gc.len());
    assert_eq!(report["gc_failed"], 0);
    // Every point committed, one per VM and day, with its scheduled instant.
    for vm in ["jump01", "app01"] {
        let points = env.json(&["points", vm]);
        let points = points.as_array().unwrap();
        assert_eq!(points.len(), 30, "{vm}");
        let mut days: Vec<_> = times(&Value::Array(points.clone()), "scheduled_time");
        days.sort();
        days.dedup();
        assert_eq!(days.len(), 30, "{vm}");
    }
}

/// A garbage collection that `sim advance` runs and that is refused (here the store holds a
/// point the catalog does not know) is said to have failed, with its job: nothing is freed
/// until someone looks, and the summary must not read as if it ran.
#[test]
fn sim_advance_says_when_its_garbage_collection_is_refused() {
    let env = Env::new();
    env.protect(&["app01"]);
    env.backup("app01");
    let stray = env
        .vault_dir("test-we")
        .join("points")
        .join("unknown-point");
    std::fs::create_dir(&stray).unwrap();
    std::fs::write(stray.join("manifest"), b"not ours").unwrap();
    let out = env.run(&["sim", "advance", "32d"]);
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("garbage collection(s) failed or were refused")
            && stderr.contains("vmvault job "),
        "{stderr}"
    );
    std::fs::remove_dir_all(&stray).unwrap();
    let report = env.json(&["sim", "advance", "9d"]);
    assert_eq!(report["gc_failed"], 0, "{report:#}");
    assert!(report["gc_runs"].as_u64().unwrap() >= 1, "{report:#}");
}
