//! Scale benchmark of the console: 10,000 VMs (the simulator's `generate_vms`), 1,000 of
//! them protected, and 100,000 jobs seeded straight into the catalog (one transaction).
//!
//! Measures what the user feels:
//! - loader refreshes (the background rebuild of the snapshot after an event: everything,
//!   jobs only, items only; a filtered query over all 100,000 jobs);
//! - applying a snapshot on the UI task (the views re-sort and re-filter 10,000 items);
//! - frame time of every tab (render to a 200×50 and an 80×24 test terminal);
//! - key-to-frame latency (handle a key, draw the frame) for moving, paging, filtering and
//!   sorting 10,000 items and the jobs window;
//! - CPU used by the real console (in a pseudo-terminal) while idle for 10 s.
//!
//! Run: `cargo bench --bench tui` (release build). `VMVAULT_BENCH_DIR` sets where the
//! vault is made (default: the system temp folder).

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use std::path::Path;
use std::time::{Duration, Instant};
use vmvault::app::Setup;
use vmvault::engine::{Engine, OpenMode};
use vmvault::model::*;
use vmvault::tui::app::{App, Msg, VaultInfo};
use vmvault::tui::data::{self, Data, JobsQuery, Stale, StatusFilter, TimeRange};
use vmvault::tui::keys::KeyMap;
use vmvault::tui::theme::Theme;
use vmvault::vault::catalog::Catalog;

const VMS: usize = 10_000;
const PROTECTED: usize = 1_000;
const JOBS: usize = 100_000;

/// Timings of repeated runs: median, p99 (or max), mean.
struct Stats(Vec<Duration>);

impl Stats {
    fn of(n: usize, mut f: impl FnMut()) -> Stats {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            f();
            v.push(t.elapsed());
        }
        v.sort();
        Stats(v)
    }
    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1000.0
    }
    fn line(&self, what: &str) {
        let n = self.0.len();
        let median = self.0[n / 2];
        let p99 = self.0[((n * 99) / 100).min(n - 1)];
        let mean = self.0.iter().sum::<Duration>() / n as u32;
        println!(
            "  {what:<58} median {:>8.2} ms   p99 {:>8.2} ms   mean {:>8.2} ms   (n={n})",
            Self::ms(median),
            Self::ms(p99),
            Self::ms(mean)
        );
    }
}

fn key(c: KeyCode) -> Msg {
    Msg::Key(KeyEvent::new(c, KeyModifiers::NONE))
}

fn main() {
    let base = std::env::var_os("VMVAULT_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("vmvault-tui-bench")
        .tempdir_in(&base)
        .expect("temp dir");
    let config = dir.path().join("config.toml");
    let data_dir = dir.path().join("data");
    std::fs::write(
        &config,
        format!(
            "[engine]\nmax_concurrent_jobs = 2\n\n[[vault]]\nname = \"bench\"\nregion = \"westeurope\"\n\
             source = {{ kind = \"simulated\", generate_vms = {VMS}, discovery_latency_ms = 0, registration_latency_ms = 0, snapshot_latency_ms = 0 }}\n"
        ),
    )
    .expect("write config");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "vmvault console benchmark: {VMS} VMs, {PROTECTED} protected, {JOBS} jobs (folder {})",
        dir.path().display()
    );

    // 1. The vault: discover, register and protect (real jobs through the engine).
    let t = Instant::now();
    rt.block_on(async {
        let setup = Setup::load(Some(&config), Some(&data_dir), None).expect("setup");
        let engine = setup.open(OpenMode::Exclusive).expect("open");
        let id = engine.discover().expect("discover");
        engine.wait_job(&id).await.expect("discovery");
        let here: Vec<Item> = engine
            .items()
            .unwrap()
            .into_iter()
            .filter(|i| i.region == "westeurope")
            .take(PROTECTED)
            .collect();
        for batch in here.chunks(100) {
            for id in engine.register(batch).expect("register") {
                engine.wait_job(&id).await.expect("register job");
            }
            for id in engine.protect(batch, "DefaultPolicy").expect("protect") {
                engine.wait_job(&id).await.expect("protect job");
            }
        }
        engine.shutdown(Duration::from_secs(10)).await;
    });
    println!(
        "setup: discovered {VMS} VMs, registered and protected {PROTECTED} in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // 2. 100,000 jobs over the last 30 days, straight into the catalog.
    let t = Instant::now();
    seed_jobs(&data_dir.join("vaults/bench/catalog.db"));
    println!(
        "setup: seeded {JOBS} jobs (with tasks) in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    rt.block_on(async {
        let setup = Setup::load(Some(&config), Some(&data_dir), None).expect("setup");
        let engine = setup.open(OpenMode::Exclusive).expect("open");
        measure(&engine);
        engine.shutdown(Duration::from_secs(10)).await;
    });
    drop(rt);
    idle_cpu(&config, &data_dir);
}

fn seed_jobs(catalog: &Path) {
    let cat = Catalog::open(catalog).expect("catalog");
    let items = cat.items().expect("items");
    let now = chrono::Utc::now();
    let ops = [
        JobOperation::Backup,
        JobOperation::Backup,
        JobOperation::Backup,
        JobOperation::Restore,
        JobOperation::Register,
        JobOperation::ConfigureBackup,
        JobOperation::Prune,
    ];
    cat.transaction(|tx| {
        for n in 0..JOBS {
            let item = &items[n % items.len()];
            let op = ops[n % ops.len()];
            let start =
                now - chrono::Duration::seconds(((n as i64) * 30 * 86_400) / JOBS as i64 + 60);
            let status = match n % 40 {
                0 | 1 => JobStatus::Failed,
                2 => JobStatus::Cancelled,
                3 => JobStatus::CompletedWithWarnings,
                _ => JobStatus::Completed,
            };
            let task = |name: &str| JobTask {
                name: name.into(),
                status: TaskStatus::Completed,
                start_time: Some(start),
                end_time: Some(start + chrono::Duration::seconds(30)),
                bytes_done: 1 << 30,
                bytes_total: 1 << 30,
            };
            let job = Job {
                id: uuid::Uuid::new_v4().to_string(),
                operation: op,
                item_id: Some(item.id.clone()),
                item: item.qualified_name(),
                status,
                start_time: start,
                end_time: Some(start + chrono::Duration::seconds(60)),
                bytes_done: 1 << 30,
                bytes_total: 1 << 30,
                is_user_triggered: n % 3 == 0,
                tasks: if op == JobOperation::Backup {
                    vec![task("Take snapshot"), task("Transfer data to vault")]
                } else {
                    vec![task("Run")]
                },
                error: (status == JobStatus::Failed).then(|| {
                    ErrorDetails::new("UserErrorSnapshotFailed", "The snapshot failed", "bench")
                }),
                details: Default::default(),
            };
            Catalog::save_job_tx(tx, &job)?;
        }
        Ok(())
    })
    .expect("seed jobs");
}

fn measure(engine: &Engine) {
    let q = JobsQuery::default();
    println!("\nloader (background thread; what an engine event costs before the UI sees it):");
    let mut full = Data::default();
    Stats::of(5, || {
        full = data::load(engine, &Data::default(), Stale::ALL, &q).expect("load")
    })
    .line("full snapshot (items, jobs window, policies, summary)");
    Stats::of(10, || {
        data::load(
            engine,
            &full,
            Stale {
                jobs: true,
                summary: true,
                ..Default::default()
            },
            &q,
        )
        .expect("load");
    })
    .line("after a job event (jobs window + summary)");
    Stats::of(5, || {
        data::load(
            engine,
            &full,
            Stale {
                items: true,
                summary: true,
                policies: true,
                ..Default::default()
            },
            &q,
        )
        .expect("load");
    })
    .line("after an items event (10k items + counts + summary)");
    let failed_all = JobsQuery {
        status: StatusFilter::Failed,
        range: TimeRange::All,
        ..Default::default()
    };
    Stats::of(10, || {
        data::load(engine, &full, Stale::default(), &failed_all).expect("load");
    })
    .line("Jobs filter: Failed, all time (window + count of 100k)");
    let text = JobsQuery {
        item_text: "vm-0042".into(),
        range: TimeRange::All,
        ..Default::default()
    };
    Stats::of(10, || {
        data::load(engine, &full, Stale::default(), &text).expect("load");
    })
    .line("Jobs filter: item text, all time");
    println!(
        "  snapshot: {} items, jobs window {} of {} (last 24 h), {} policies",
        full.items.len(),
        full.jobs.rows.len(),
        full.jobs.total,
        full.policies.len()
    );

    let info = VaultInfo {
        name: engine.vault_name().into(),
        region: engine.region().into(),
        source_kind: engine.source_kind().into(),
        source_description: engine.source_description(),
        simulated: true,
        read_only: None,
        free: false,
        unencrypted_v1: false,
        new_key_file: None,
    };
    let mut app = App::new(
        Some(info),
        vec![],
        KeyMap::default(),
        Theme::default(),
        false,
    );
    println!("\nUI task (update + view; no I/O):");
    let mut fresh = full.clone();
    Stats::of(20, || {
        fresh.generation += 1;
        app.update(Msg::Data(Box::new(Ok(fresh.clone()))));
    })
    .line("apply a snapshot (re-filter/sort 10k items in 2 tabs)");
    for (w, h) in [(200u16, 50u16), (80, 24)] {
        let mut term = Terminal::new(TestBackend::new(w, h)).expect("terminal");
        app.update(Msg::Resize(w, h));
        for (tab, name) in [
            ('1', "Dashboard"),
            ('2', "Registered Items (10k)"),
            ('3', "Protected Items (1k)"),
            ('4', "Jobs (window of 100k)"),
            ('5', "Policies"),
        ] {
            app.update(Msg::Key(KeyEvent::new(
                KeyCode::Char(tab),
                KeyModifiers::NONE,
            )));
            Stats::of(200, || {
                term.draw(|f| vmvault::tui::view::view(&app, f))
                    .expect("draw");
            })
            .line(&format!("frame {w}×{h}: {name}"));
        }
    }
    let mut term = Terminal::new(TestBackend::new(200, 50)).expect("terminal");
    app.update(Msg::Resize(200, 50));
    let mut frame = |app: &mut App, m: Msg| {
        app.update(m);
        term.draw(|f| vmvault::tui::view::view(app, f))
            .expect("draw");
    };
    println!("\nkey to frame (update + draw at 200×50):");
    frame(
        &mut app,
        Msg::Key(KeyEvent::new(KeyCode::Char('2'), KeyModifiers::NONE)),
    );
    Stats::of(500, || frame(&mut app, key(KeyCode::Down))).line("Registered Items: ↓");
    Stats::of(100, || frame(&mut app, key(KeyCode::PageDown))).line("Registered Items: PgDn");
    Stats::of(20, || {
        frame(
            &mut app,
            Msg::Key(KeyEvent::new(KeyCode::Char('s'), KeyModifiers::NONE)),
        );
    })
    .line("Registered Items: s (sort 10k by the next column)");
    frame(
        &mut app,
        Msg::Key(KeyEvent::new(KeyCode::Char('/'), KeyModifiers::NONE)),
    );
    let mut typed = 0;
    Stats::of(20, || {
        let c = if typed % 2 == 0 { '1' } else { '\u{8}' };
        typed += 1;
        if c == '\u{8}' {
            frame(&mut app, key(KeyCode::Backspace));
        } else {
            frame(
                &mut app,
                Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)),
            );
        }
    })
    .line("Registered Items: type in the filter (10k items)");
    frame(&mut app, key(KeyCode::Esc));
    frame(
        &mut app,
        Msg::Key(KeyEvent::new(KeyCode::Char('4'), KeyModifiers::NONE)),
    );
    Stats::of(400, || frame(&mut app, key(KeyCode::Down))).line("Jobs: ↓");
    Stats::of(50, || frame(&mut app, key(KeyCode::PageDown))).line("Jobs: PgDn");
    frame(
        &mut app,
        Msg::Key(KeyEvent::new(KeyCode::Char('2'), KeyModifiers::NONE)),
    );
    Stats::of(20, || frame(&mut app, key(KeyCode::Enter)))
        .line("Registered Items: Enter (open an item's details)");
}

/// CPU time the real console uses while idle (nothing running) for 10 s, from /proc.
fn idle_cpu(config: &Path, data_dir: &Path) {
    use portable_pty::{native_pty_system, CommandBuilder, PtySize};
    use std::io::Read;
    let pty = native_pty_system();
    let pair = pty
        .openpty(PtySize {
            rows: 50,
            cols: 200,
            pixel_width: 0,
            pixel_height: 0,
        })
        .expect("pty");
    let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_vmvault"));
    cmd.args([
        "--config",
        config.to_str().unwrap_or(""),
        "--data-dir",
        data_dir.to_str().unwrap_or(""),
    ]);
    cmd.env("TERM", "xterm-256color");
    let mut child = pair.slave.spawn_command(cmd).expect("spawn");
    drop(pair.slave);
    let mut reader = pair.master.try_clone_reader().expect("reader");
    let mut writer = pair.master.take_writer().expect("writer");
    let parser = std::sync::Arc::new(std::sync::Mutex::new(vt100::Parser::new(50, 200, 0)));
    let p = parser.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            p.lock().map(|mut p| p.process(&buf[..n])).ok();
        }
    });
    let started = Instant::now();
    let pid = child.process_id().unwrap_or(0);
    loop {
        let s = parser
            .lock()
            .map(|p| p.screen().contents())
            .unwrap_or_default();
        if s.contains(&format!("Protected       {PROTECTED}")) {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            println!("\nidle CPU: the console did not show its data within 120 s:\n{s}");
            let _ = child.kill();
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let first = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let cpu = |pid: u32| -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|x| x.1)
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the ')'.
        (ticks(11) + ticks(12)) / 100.0
    };
    let c0 = cpu(pid);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    let used = cpu(pid) - c0;
    let secs = t0.elapsed().as_secs_f64();
    println!("\nreal console ({VMS} VMs, {JOBS} jobs, 200×50 pty):");
    println!(
        "  start to first full screen of data                           {:>8.2} s",
        first.as_secs_f64()
    );
    println!("  CPU while idle                                               {:>8.2} % of one core ({used:.2} s in {secs:.1} s)", used / secs * 100.0);
    let _ = std::io::Write::write_all(&mut writer, b"q");
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
}
