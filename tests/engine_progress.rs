//! Progress of a Backup job through the engine: the total is known before the first byte
//! is read, so percent and time left only move forward, also for VMs with several disks.

use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use vmvault::cancel::CancelToken;
use vmvault::engine::{Engine, EngineOptions, OpenMode};
use vmvault::model::{Consistency, DiskInfo, Extent, JobStatus, Vm};
use vmvault::provider::sim::{SimProvider, SimSettings, Subscription};
use vmvault::provider::{
    Discovery, DiskReader, Provider, ProviderError, RegistrationReport, Snapshot,
};

/// Totals of the running jobs seen by the source at each read, through the engine.
#[derive(Default)]
struct Observer {
    engine: OnceLock<Engine>,
    totals: Mutex<Vec<u64>>,
}

impl Observer {
    fn look(&self) {
        if let Some(engine) = self.engine.get() {
            let mut totals = self.totals.lock().unwrap_or_else(|p| p.into_inner());
            totals.extend(engine.live_progress().values().map(|p| p.bytes_total));
        }
    }
}

/// The simulator, with every disk read reported to the observer.
struct Watched {
    inner: Arc<SimProvider>,
    observer: Arc<Observer>,
}

struct WatchedSnapshot {
    inner: Box<dyn Snapshot>,
    observer: Arc<Observer>,
}

struct WatchedReader {
    inner: Box<dyn DiskReader>,
    observer: Arc<Observer>,
}

impl Provider for Watched {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn discover(&self, cancel: &CancelToken) -> Result<Discovery, ProviderError> {
        self.inner.discover(cancel)
    }
    fn register(&self, vm: &Vm, cancel: &CancelToken) -> Result<RegistrationReport, ProviderError> {
        self.inner.register(vm, cancel)
    }
    fn snapshot(
        &self,
        vm: &Vm,
        at: DateTime<Utc>,
        since: Option<&str>,
        cancel: &CancelToken,
    ) -> Result<Box<dyn Snapshot>, ProviderError> {
        Ok(Box::new(WatchedSnapshot {
            inner: self.inner.snapshot(vm, at, since, cancel)?,
            observer: self.observer.clone(),
        }))
    }
}

impl Snapshot for WatchedSnapshot {
    fn consistency(&self) -> Consistency {
        self.inner.consistency()
    }
    fn cbt_token(&self) -> Option<String> {
        self.inner.cbt_token()
    }
    fn disks(&self) -> &[DiskInfo] {
        self.inner.disks()
    }
    fn open_disk(&self, index: u32) -> Result<Box<dyn DiskReader>, ProviderError> {
        Ok(Box::new(WatchedReader {
            inner: self.inner.open_disk(index)?,
            observer: self.observer.clone(),
        }))
    }
}

impl DiskReader for WatchedReader {
    fn capacity(&self) -> u64 {
        self.inner.capacity()
    }
    fn allocated_extents(&self) -> Result<Vec<Extent>, ProviderError> {
        self.inner.allocated_extents()
    }
    fn changed_extents(&self, since: &str) -> Result<Option<Vec<Extent>>, ProviderError> {
        self.inner.changed_extents(since)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ProviderError> {
        self.observer.look();
        self.inner.read_at(offset, buf)
    }
}

const SUBSCRIPTION: &str = r#"name = "two-disks"
seed = 7
origin = "2025-01-01"
[[vm]]
name = "db01"
cloud_service = "test"
region = "westeurope"
os = "Linux"
size = "Standard_B2s"
power_state = "Running"
disks = [
  { capacity_gib = 1, allocated_mib = 12, content = "files" },
  { capacity_gib = 1, allocated_mib = 20, content = "database" },
  { capacity_gib = 1, allocated_mib = 8, content = "files" },
]
"#;

fn wait_done(engine: &Engine, id: &str) -> vmvault::model::Job {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let job = engine.job(id).expect("job");
        if !matches!(job.status, JobStatus::InProgress | JobStatus::Cancelling) {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The simulator of `SUBSCRIPTION` without latencies, reads throttled to `mib_s` if given.
fn simulator(mib_s: Option<u64>) -> Arc<SimProvider> {
    let settings = SimSettings {
        discovery_latency_ms: Some(0),
        registration_latency_ms: Some(0),
        snapshot_latency_ms: Some(0),
        read_throughput_mib_s: mib_s,
        ..SimSettings::default()
    };
    let sub = Subscription::from_toml_str(SUBSCRIPTION, "two-disks.toml").expect("subscription");
    Arc::new(SimProvider::new(sub, &settings))
}

/// A new vault in `dir` on `provider` (the simulator `sim`, or a wrapper of it).
fn open_vault(dir: &std::path::Path, provider: Arc<dyn Provider>, sim: Arc<SimProvider>) -> Engine {
    Engine::open(
        EngineOptions {
            vault_name: "vault".into(),
            region: "westeurope".into(),
            dir: dir.join("vault"),
            provider,
            simulator: Some(sim),
            chunk_size: 64 * 1024,
            compression_level: 1,
            read_limit_mib_s: 0,
            gc_grace: chrono::Duration::minutes(0),
            max_concurrent_jobs: 4,
            threads: 2,
            other_vaults: vec![],
            new_layout: vmvault::vault::folder::Layout::V2 { encrypted: true },
            storage: None,
            keys: vmvault::vault::unlock::KeySource {
                key_file: Some(dir.join("vault.key")),
                key_dir: None,
                ..Default::default()
            },
        },
        OpenMode::Exclusive,
    )
    .expect("open")
}

/// Discovers, registers and protects db01; returns it.
fn protected_db01(engine: &Engine) -> vmvault::model::Item {
    let discover = engine.discover().expect("discover");
    wait_done(engine, &discover);
    let item = engine.resolve_item("test/db01").expect("item");
    assert_eq!(item.disks.len(), 3);
    for id in engine
        .register(std::slice::from_ref(&item))
        .expect("register")
    {
        assert_eq!(wait_done(engine, &id).status, JobStatus::Completed);
    }
    let item = engine.resolve_item("test/db01").expect("item");
    for id in engine
        .protect(std::slice::from_ref(&item), "DefaultPolicy")
        .expect("protect")
    {
        wait_done(engine, &id);
    }
    engine.resolve_item("test/db01").expect("item")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_total_is_known_before_reading_and_never_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = simulator(None);
    let observer = Arc::new(Observer::default());
    let provider = Arc::new(Watched {
        inner: sim.clone(),
        observer: observer.clone(),
    });
    let engine = open_vault(dir.path(), provider, sim);
    let item = protected_db01(&engine);

    // Only the backup runs from here: every total the source sees is this job's.
    let _ = observer.engine.set(engine.clone());
    let id = engine.backup_now(&item, None).expect("backup now");
    let job = wait_done(&engine, &id);
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    assert!(job.bytes_total > 0);
    assert_eq!(job.bytes_done, job.bytes_total);

    let totals = observer.totals.lock().unwrap_or_else(|p| p.into_inner());
    assert!(
        !totals.is_empty(),
        "the source saw no read of a running job"
    );
    assert!(
        totals.iter().all(|t| *t == job.bytes_total),
        "the total changed during the backup: seen {:?}, final {}",
        totals.iter().collect::<std::collections::BTreeSet<_>>(),
        job.bytes_total
    );
}

/// `jobs --limit N` lists the newest N jobs and every running job besides: a long backup
/// never hides behind the short jobs that started after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_job_list_never_hides_a_running_job() {
    use vmvault::vault::catalog::JobFilter;
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = simulator(Some(1));
    let engine = open_vault(dir.path(), sim.clone(), sim);
    let item = protected_db01(&engine);
    let backup = engine.backup_now(&item, None).expect("backup now");
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(5));
        wait_done(&engine, &engine.discover().expect("discover"));
    }
    let listed = engine
        .jobs(&JobFilter {
            limit: Some(2),
            ..JobFilter::default()
        })
        .expect("jobs");
    let ids: Vec<&str> = listed.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids.len(), 3, "the 2 newest and the running backup: {ids:?}");
    assert!(ids.contains(&backup.as_str()), "{ids:?}");
    assert!(
        listed
            .windows(2)
            .all(|w| w[0].start_time >= w[1].start_time),
        "newest first"
    );
    // A filter that selects no running status lists no extra job.
    let done = engine
        .jobs(&JobFilter {
            limit: Some(2),
            statuses: vec![JobStatus::Completed],
            ..JobFilter::default()
        })
        .expect("jobs");
    assert_eq!(done.len(), 2);
    engine.cancel_job(&backup).expect("cancel");
    assert_eq!(wait_done(&engine, &backup).status, JobStatus::Cancelled);
}
