//! A fixed, hand-made console state for snapshot and style tests: a vault in westeurope
//! with items in every state, jobs of every status (one running with live progress), three
//! policies and a dashboard — all at fixed times, so every render is the same.

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc, Weekday};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use std::collections::HashMap;
use std::sync::Arc;
use vmvault::engine::{Event, JobCounts, JobProgress, StorageSummary, Summary};
use vmvault::model::*;
use vmvault::policy::*;
use vmvault::tui::app::{App, Msg, VaultChoice, VaultInfo};
use vmvault::tui::data::{hour_buckets, Data, JobWindow, JobsQuery, PolicyInfo, Upcoming};
use vmvault::tui::keys::KeyMap;
use vmvault::tui::theme::Theme;

pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap()
}

fn at(h: i64, m: i64) -> DateTime<Utc> {
    // Hours relative to now (negative: before).
    now() + Duration::hours(h) + Duration::minutes(m)
}

fn disk(i: u32, name: &str, gib: u64) -> DiskInfo {
    DiskInfo {
        index: i,
        name: name.into(),
        capacity: gib << 30,
    }
}

#[allow(clippy::too_many_arguments)]
fn item(
    cs: &str,
    name: &str,
    region: &str,
    os: Os,
    power: PowerState,
    reg: RegistrationState,
    prot: ProtectionState,
    policy: Option<&str>,
) -> Item {
    Item {
        id: format!("sim:/{cs}/{name}"),
        name: name.into(),
        cloud_service: cs.into(),
        region: region.into(),
        os,
        size: "Standard_D2s_v3".into(),
        power_state: power,
        disks: vec![
            disk(0, &format!("{name}-os"), 64),
            disk(1, &format!("{name}-data"), 128),
        ],
        registration_state: reg,
        protection_state: prot,
        policy: policy.map(str::to_string),
        last_backup_time: None,
        last_backup_status: None,
        not_found: false,
        discovered_at: at(-48, 0),
        purge_at: None,
        last_scheduled_run: None,
        last_error: None,
    }
}

pub fn items() -> Vec<Item> {
    use ProtectionState as P;
    use RegistrationState as R;
    let we = "westeurope";
    let mut web = item(
        "sales",
        "web01",
        we,
        Os::Linux,
        PowerState::Running,
        R::Registered,
        P::Protected,
        Some("DefaultPolicy"),
    );
    web.last_backup_time = Some(at(-15, 0));
    web.last_backup_status = Some(JobStatus::Completed);
    let hr_web = item(
        "hr",
        "web01",
        we,
        Os::Windows,
        PowerState::Running,
        R::Registered,
        P::IrPending,
        Some("Gold"),
    );
    let mut sql = item(
        "sales",
        "sql01",
        we,
        Os::Windows,
        PowerState::Running,
        R::Registered,
        P::ProtectionError,
        Some("Gold"),
    );
    sql.last_backup_time = Some(at(-12, -30));
    sql.last_backup_status = Some(JobStatus::Failed);
    sql.last_error = Some(
        ErrorDetails::new("UserErrorVmNotFound", "The VM was not found", "sales/sql01 was not found at the source at the last discovery")
            .recommend("Run `vmvault discover`; if the VM was deleted, stop protection (its recovery points are kept)."),
    );
    let app = item(
        "sales",
        "app01",
        we,
        Os::Linux,
        PowerState::Running,
        R::Registered,
        P::NotProtected,
        None,
    );
    let dc = item(
        "shared-infra",
        "dc01",
        we,
        Os::Windows,
        PowerState::Running,
        R::Registering,
        P::NotProtected,
        None,
    );
    let mut etl = item(
        "analytics",
        "etl01",
        we,
        Os::Linux,
        PowerState::Running,
        R::RegistrationFailed,
        P::NotProtected,
        None,
    );
    etl.last_error = Some(ErrorDetails::new(
        "UserErrorGuestAgentStatusUnavailable",
        "The guest agent did not answer",
        "etl01 did not answer",
    ));
    let jump = item(
        "shared-infra",
        "jump01",
        we,
        Os::Linux,
        PowerState::Stopped,
        R::NotRegistered,
        P::NotProtected,
        None,
    );
    let mut payroll = item(
        "hr",
        "payroll01",
        we,
        Os::Windows,
        PowerState::Deallocated,
        R::Registered,
        P::ProtectionStopped,
        None,
    );
    payroll.last_backup_time = Some(at(-24 * 9, 0));
    payroll.last_backup_status = Some(JobStatus::Completed);
    let mut old = item(
        "sales",
        "old01",
        we,
        Os::Linux,
        PowerState::Stopped,
        R::Registered,
        P::SoftDeleted,
        None,
    );
    old.not_found = true;
    old.purge_at = Some(at(24 * 10, 0));
    let shop = item(
        "retail-us",
        "shop01",
        "eastus",
        Os::Linux,
        PowerState::Running,
        R::NotRegistered,
        P::NotProtected,
        None,
    );
    let files = item(
        "apac-ops",
        "files01",
        "southeastasia",
        Os::Windows,
        PowerState::Running,
        R::NotRegistered,
        P::NotProtected,
        None,
    );
    let mut v = vec![
        web, hr_web, sql, app, dc, etl, jump, payroll, old, shop, files,
    ];
    v.sort_by_key(|a| (a.name.clone(), a.cloud_service.clone()));
    v
}

pub fn gold() -> Policy {
    Policy {
        name: "Gold".into(),
        time_zone: "Europe/Berlin".parse().unwrap(),
        schedule: Schedule {
            frequency: Frequency::Daily,
            time: NaiveTime::from_hms_opt(22, 30, 0).unwrap(),
            days: vec![],
        },
        retention: Retention {
            daily: Some(DailyRule { days: 30 }),
            weekly: Some(WeeklyRule {
                weeks: 104,
                days_of_week: vec![Weekday::Sun],
            }),
            monthly: Some(MonthlyRule {
                months: 120,
                on: DaySelector::Weekdays {
                    weeks_of_month: vec![WeekOfMonth::Last],
                    days_of_week: vec![Weekday::Sun],
                },
            }),
            yearly: Some(YearlyRule {
                years: 99,
                months_of_year: vec![chrono::Month::January],
                on: DaySelector::Weekdays {
                    weeks_of_month: vec![WeekOfMonth::First],
                    days_of_week: vec![Weekday::Sun],
                },
            }),
        },
    }
}

pub fn silver() -> Policy {
    Policy {
        name: "Silver-weekly".into(),
        time_zone: chrono_tz::Tz::UTC,
        schedule: Schedule {
            frequency: Frequency::Weekly,
            time: NaiveTime::from_hms_opt(2, 0, 0).unwrap(),
            days: vec![Weekday::Sat],
        },
        retention: Retention {
            weekly: Some(WeeklyRule {
                weeks: 12,
                days_of_week: vec![Weekday::Sat],
            }),
            ..Default::default()
        },
    }
}

fn task(
    name: &str,
    status: TaskStatus,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    done: u64,
    total: u64,
) -> JobTask {
    JobTask {
        name: name.into(),
        status,
        start_time: start,
        end_time: end,
        bytes_done: done,
        bytes_total: total,
    }
}

#[allow(clippy::too_many_arguments)]
fn job(
    n: u32,
    op: JobOperation,
    item: &str,
    status: JobStatus,
    start: DateTime<Utc>,
    end: Option<DateTime<Utc>>,
    done: u64,
    total: u64,
) -> Job {
    Job {
        id: format!("{n:08x}-4a4b-4c4d-8e8f-{n:012x}"),
        operation: op,
        item_id: (!item.starts_with("test")).then(|| format!("sim:/{item}")),
        item: item.into(),
        status,
        start_time: start,
        end_time: end,
        bytes_done: done,
        bytes_total: total,
        is_user_triggered: true,
        tasks: vec![],
        error: None,
        details: Default::default(),
    }
}

pub const GIB: u64 = 1 << 30;

/// The running backup (with tasks, as the job details show it).
pub fn running_backup() -> Job {
    let mut j = job(
        1,
        JobOperation::Backup,
        "sales/web01",
        JobStatus::InProgress,
        at(0, -2),
        None,
        3 * GIB / 2,
        4 * GIB,
    );
    j.tasks = vec![
        task(
            "Take snapshot",
            TaskStatus::Completed,
            Some(at(0, -2)),
            Some(at(0, -2) + Duration::seconds(2)),
            0,
            0,
        ),
        task(
            "Transfer data to vault",
            TaskStatus::InProgress,
            Some(at(0, -2) + Duration::seconds(2)),
            None,
            0,
            0,
        ),
    ];
    j
}

/// The failed backup (with tasks and error details).
pub fn failed_backup() -> Job {
    let mut j = job(
        4,
        JobOperation::Backup,
        "sales/sql01",
        JobStatus::Failed,
        at(-12, -30),
        Some(at(-12, -29)),
        0,
        0,
    );
    j.is_user_triggered = false;
    j.tasks = vec![
        task(
            "Take snapshot",
            TaskStatus::Failed,
            Some(at(-12, -30)),
            Some(at(-12, -29)),
            0,
            0,
        ),
        task(
            "Transfer data to vault",
            TaskStatus::Cancelled,
            None,
            None,
            0,
            0,
        ),
    ];
    j.error = Some(
        ErrorDetails::new("UserErrorVmNotFound", "The VM was not found", "sales/sql01 was not found at the source at the last discovery")
            .recommend("Run `vmvault discover`; if the VM was deleted, stop protection (its recovery points are kept)."),
    );
    j
}

pub fn jobs() -> Vec<Job> {
    use JobOperation as O;
    use JobStatus as S;
    let mut discover = job(
        2,
        O::Discover,
        "test-we",
        S::Completed,
        at(0, -10),
        Some(at(0, -10) + Duration::seconds(3)),
        0,
        0,
    );
    discover.details.insert("found".into(), 13.into());
    vec![
        running_backup(),
        job(
            3,
            O::ConfigureBackup,
            "hr/web01",
            S::Completed,
            at(0, -5),
            Some(at(0, -5)),
            0,
            0,
        ),
        job(
            5,
            O::Register,
            "shared-infra/dc01",
            S::InProgress,
            at(0, -4),
            None,
            0,
            0,
        ),
        discover,
        job(
            6,
            O::Register,
            "analytics/etl01",
            S::Failed,
            at(0, -9),
            Some(at(0, -9) + Duration::seconds(2)),
            0,
            0,
        ),
        job(
            7,
            O::Restore,
            "sales/web01",
            S::Completed,
            at(-3, 0),
            Some(at(-3, 0) + Duration::seconds(95)),
            21 * GIB / 10,
            21 * GIB / 10,
        ),
        job(
            8,
            O::Backup,
            "sales/web01",
            S::CompletedWithWarnings,
            at(-15, 0),
            Some(at(-15, 2)),
            5 * GIB / 2,
            5 * GIB / 2,
        ),
        job(
            9,
            O::Backup,
            "hr/payroll01",
            S::Cancelled,
            at(-20, 0),
            Some(at(-20, 1)),
            GIB,
            3 * GIB,
        ),
        failed_backup(),
    ]
}

pub fn points() -> Vec<RecoveryPoint> {
    (0..7)
        .map(|d| {
            let time = Utc.with_ymd_and_hms(2026, 11, 27, 19, 0, 0).unwrap() - Duration::days(d);
            RecoveryPoint {
                id: format!("p{d:07}-0000-4000-8000-000000000000"),
                item_id: "sim:/sales/web01".into(),
                time,
                scheduled_time: time,
                expiry: if d == 3 {
                    None
                } else {
                    Some(time + Duration::days(30))
                },
                kind: if d == 2 {
                    PointKind::OnDemand
                } else {
                    PointKind::Scheduled
                },
                consistency: if d == 1 {
                    Consistency::CrashConsistent
                } else {
                    Consistency::FileSystemConsistent
                },
                logical_bytes: 5 * GIB / 2 + d as u64 * 1_000_000,
                stored_bytes: 300 << 20,
                disks: vec![disk(0, "web01-os", 64), disk(1, "web01-data", 128)],
                cbt_token: None,
                job_id: None,
            }
        })
        .collect()
}

pub fn data() -> Data {
    let items = items();
    let mut counts = HashMap::new();
    counts.insert("sim:/sales/web01".to_string(), 7u64);
    counts.insert("sim:/sales/sql01".to_string(), 12);
    counts.insert("sim:/hr/payroll01".to_string(), 3);
    counts.insert("sim:/sales/old01".to_string(), 2);
    let mut next = HashMap::new();
    next.insert(
        "sim:/sales/web01".to_string(),
        Utc.with_ymd_and_hms(2026, 11, 28, 19, 0, 0).unwrap(),
    );
    next.insert(
        "sim:/hr/web01".to_string(),
        Utc.with_ymd_and_hms(2026, 11, 28, 21, 30, 0).unwrap(),
    );
    next.insert(
        "sim:/sales/sql01".to_string(),
        Utc.with_ymd_and_hms(2026, 11, 28, 21, 30, 0).unwrap(),
    );
    let upcoming = vec![
        Upcoming {
            item: "sales/web01".into(),
            policy: "DefaultPolicy".into(),
            time: next["sim:/sales/web01"],
        },
        Upcoming {
            item: "hr/web01".into(),
            policy: "Gold".into(),
            time: next["sim:/hr/web01"],
        },
        Upcoming {
            item: "sales/sql01".into(),
            policy: "Gold".into(),
            time: next["sim:/sales/sql01"],
        },
    ];
    let policies = vec![
        PolicyInfo {
            policy: Policy::default_policy(),
            builtin: true,
            used_by: 1,
        },
        PolicyInfo {
            policy: gold(),
            builtin: false,
            used_by: 2,
        },
        PolicyInfo {
            policy: silver(),
            builtin: false,
            used_by: 0,
        },
    ];
    let jobs = jobs();
    let per_hour_counts: Vec<(DateTime<Utc>, u64)> = (0..24)
        .map(|h| {
            (
                at(-h, 0) - Duration::minutes(0),
                [0, 3, 1, 0, 2, 5, 1, 0, 0, 4, 2, 1][(h % 12) as usize],
            )
        })
        .collect();
    let per_hour = hour_buckets(
        now(),
        &per_hour_counts
            .iter()
            .map(|(t, n)| (vmvault::tui::data::hour_start(*t), *n))
            .collect::<Vec<_>>(),
    );
    let summary = Summary {
        protected: 3,
        registered: 6,
        needs_attention: 2,
        jobs_24h: JobCounts {
            completed: 5,
            failed: 2,
            in_progress: 2,
        },
        storage: StorageSummary {
            protected_bytes: 7 * GIB,
            points_logical_bytes: 60 * GIB,
            unique_bytes: 9 * GIB,
            stored_bytes: 4 * GIB,
            chunks: 9216,
            recovery_points: 24,
            dedup_ratio: 60.0 / 9.0,
            compression_ratio: 9.0 / 4.0,
        },
        time: now(),
    };
    let active: Vec<Job> = jobs
        .iter()
        .filter(|j| j.status.is_active())
        .cloned()
        .collect();
    Data {
        now: now(),
        loaded: true,
        items: Arc::new(items),
        point_counts: Arc::new(counts),
        next_backup: Arc::new(next),
        upcoming: Arc::new(upcoming),
        policies: Arc::new(policies),
        summary: Some(Arc::new(summary)),
        jobs: Arc::new(JobWindow {
            query: JobsQuery::default(),
            total: jobs.len() as u64,
            rows: jobs.clone(),
        }),
        jobs_per_hour: Arc::new(per_hour),
        recent_failures: Arc::new(vec![failed_backup()]),
        active_jobs: Arc::new(active),
        generation: 1,
        previous_policy: Arc::new(HashMap::from([(
            "sim:/hr/payroll01".to_string(),
            "Gold".to_string(),
        )])),
    }
}

pub fn vault() -> VaultInfo {
    VaultInfo {
        name: "vault-westeurope".into(),
        region: "westeurope".into(),
        source_kind: "simulated".into(),
        source_description: "simulated subscription \"Contoso (simulated)\"".into(),
        simulated: true,
        read_only: None,
        free: false,
        unencrypted_v1: false,
        new_key_file: None,
    }
}

pub fn vaults() -> Vec<VaultChoice> {
    ["westeurope", "eastus", "southeastasia"]
        .iter()
        .map(|r| VaultChoice {
            name: format!("vault-{r}"),
            region: r.to_string(),
            source: "simulated".into(),
        })
        .collect()
}

/// The fixture app at `w`×`h`, with `theme`.
pub fn app_with(w: u16, h: u16, theme: Theme) -> App {
    let mut app = App::new(Some(vault()), vaults(), KeyMap::default(), theme, false);
    app.cwd = "/home/admin".into();
    app.update(Msg::Resize(w, h));
    app.update(Msg::Data(Box::new(Ok(data()))));
    app.update(Msg::Tick(now()));
    app.update(Msg::Engine(Box::new(Event::JobProgress(JobProgress {
        id: running_backup().id,
        bytes_done: 3 * GIB / 2,
        bytes_total: 4 * GIB,
        rate: 85.0 * 1024.0 * 1024.0,
        task: Some("Transfer data to vault".into()),
    }))));
    app.spinner = 3;
    app
}

pub fn app(w: u16, h: u16) -> App {
    app_with(w, h, Theme::default())
}

/// The fixture console with the Resume protection dialog open on hr/payroll01 (protection
/// stopped, no recovery points).
pub fn resume_dialog(w: u16, h: u16) -> App {
    let mut a = app(w, h);
    a.update(key('3'));
    a.update(code(KeyCode::Down));
    a.update(code(KeyCode::Enter));
    a.update(Msg::PointsLoaded {
        item_id: "sim:/hr/payroll01".into(),
        result: Ok(vec![]),
    });
    a.update(key('u'));
    a
}

pub fn key(c: char) -> Msg {
    Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
}

pub fn code(c: KeyCode) -> Msg {
    Msg::Key(KeyEvent::new(c, KeyModifiers::NONE))
}

/// Types each character of `s`.
pub fn typed(app: &mut App, s: &str) {
    for c in s.chars() {
        app.update(key(c));
    }
}

/// The keys that move the policy wizard on top of `app` (at its schedule step, on its
/// first row) to the time row, clear it and type `time`.
pub fn retype_schedule_time(app: &App, time: &str) -> Vec<Msg> {
    use vmvault::tui::popups::policy_form::{Part, Row};
    let Some(vmvault::tui::popups::Popup::PolicyWizard(w)) = app.popups.last() else {
        panic!("no policy wizard open")
    };
    let row = w
        .form
        .rows(Part::Schedule)
        .iter()
        .position(|r| matches!(r, Row::Time))
        .expect("a time row");
    let mut keys = vec![code(KeyCode::Down); row];
    keys.extend(vec![code(KeyCode::Backspace); 8]);
    keys.extend(time.chars().map(key));
    keys
}

/// Draws the app into a `w`×`h` test terminal.
pub fn render(app: &App, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| vmvault::tui::view::view(app, f)).unwrap();
    t
}

/// The text of a rendered terminal, line by line.
pub fn text(t: &Terminal<TestBackend>) -> String {
    let buf = t.backend().buffer();
    let mut s = String::new();
    for y in 0..buf.area.height {
        for x in 0..buf.area.width {
            s.push_str(buf[(x, y)].symbol());
        }
        s.push('\n');
    }
    s
}

/// The keys of the fixture vault: its key-file slot (which opened it) and a passphrase slot.
pub fn keys_overview() -> vmvault::engine::KeysOverview {
    use vmvault::engine::{KdfInfo, KeySlotInfo, KeysOverview};
    use vmvault::vault::keys::SlotKind;
    KeysOverview {
        vault: "vault-westeurope".into(),
        format: 2,
        encrypted: true,
        slots: vec![
            KeySlotInfo {
                id: "1e76760a5030b7e3".into(),
                kind: SlotKind::Keyfile,
                label: "key file".into(),
                created: at(-72, 0),
                kdf: None,
                opened_this: true,
                opened_by_key_file: true,
            },
            KeySlotInfo {
                id: "6dedea7c7edf3f29".into(),
                kind: SlotKind::Passphrase,
                label: "admin (sealed envelope)".into(),
                created: at(-2, 0),
                kdf: Some(KdfInfo {
                    m_kib: 65536,
                    t: 3,
                    p: 1,
                }),
                opened_this: false,
                opened_by_key_file: false,
            },
        ],
        key_file: Some(
            "/home/admin/.config/vmvault/keys/340a6405-3916-4e28-8fca-0e6eeff34124.key".into(),
        ),
        key_file_exists: true,
        opened_with: Some("key file slot 1e76760a5030b7e3".into()),
        unreadable: vec![],
    }
}
