//! A console session without a terminal: the [`App`], the engine of the open vault, its
//! loader and scheduler, and the performing of [`Effect`]s. `run` puts a terminal around
//! it; headless tests drive it directly (`handle` a message, `next` to wait for the next
//! one).
//!
//! Everything that touches the disk — engine commands, loading a job or an item's points,
//! opening a vault (which may wait for its lock), the free space of a restore target, the
//! lock of a vault shown read-only — runs on a blocking thread and answers with a message,
//! so the UI task only ever waits on channels and timers, and the console draws from its
//! first moment.

use super::app::{App, Command, CommandDone, Effect, Msg, VaultChoice, VaultInfo};
use super::data::{Data, LoadRequest, Loader, Stale};
use super::keys::KeyMap;
use super::theme::Theme;
use crate::app::{AppError, Setup};
use crate::cancel::CancelToken;
use crate::config::VaultConfig;
use crate::engine::{Engine, Event, OpenMode};
use chrono::{DateTime, Timelike, Utc};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// How long quitting (or switching vault) waits for cancelled jobs to be recorded.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);
/// A read-only console reloads this often (the owner's events do not reach it).
const READ_ONLY_POLL: Duration = Duration::from_secs(2);

/// Result of opening a vault in the background.
type Opened = (String, Result<Engine, AppError>);

pub struct Session {
    pub app: App,
    setup: Setup,
    engine: Option<Engine>,
    loader: Option<Loader>,
    data_tx: mpsc::Sender<Result<Data, String>>,
    data_rx: mpsc::Receiver<Result<Data, String>>,
    events: Option<broadcast::Receiver<Event>>,
    msg_tx: mpsc::UnboundedSender<Msg>,
    msg_rx: mpsc::UnboundedReceiver<Msg>,
    open_tx: mpsc::UnboundedSender<Opened>,
    open_rx: mpsc::UnboundedReceiver<Opened>,
    scheduler: Option<(CancelToken, tokio::task::JoinHandle<()>)>,
    /// A read-only console watches the vault's lock: its owner may leave.
    owner_watch: Option<tokio::task::JoinHandle<()>>,
    /// Config warnings to show once the console is up.
    pub warnings: Vec<String>,
}

/// Whether NO_COLOR asks for no colours (set and not empty, per no-color.org).
pub fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

impl Session {
    /// Builds the console for `setup` and starts opening its vault (owning it; when another
    /// process owns it, the console offers read-only). It returns at once: the console
    /// draws "Opening vault…" (or who it waits for) while the vault opens in the background
    /// (opening waits up to two seconds for the lock).
    pub async fn start(setup: Setup) -> Session {
        let (keys, mut warnings) = KeyMap::from_config(&setup.config.tui.keys);
        let (theme, w) = Theme::from_config(&setup.config.tui.theme, no_color());
        warnings.extend(w);
        let vaults = setup
            .config
            .vaults
            .iter()
            .map(|v| VaultChoice {
                name: v.name.clone(),
                region: v.region.clone(),
                source: v.source.kind().to_string(),
            })
            .collect();
        let app = App::new(None, vaults, keys, theme, setup.config.tui.mouse);
        let (data_tx, data_rx) = mpsc::channel(2);
        let (msg_tx, msg_rx) = mpsc::unbounded_channel();
        let (open_tx, open_rx) = mpsc::unbounded_channel();
        let mut s = Session {
            app,
            setup,
            engine: None,
            loader: None,
            data_tx,
            data_rx,
            events: None,
            msg_tx,
            msg_rx,
            open_tx,
            open_rx,
            scheduler: None,
            owner_watch: None,
            warnings,
        };
        let vault = s.setup.vault.clone();
        s.open(vault, false, None);
        if let Some(w) = s.warnings.first() {
            let more = if s.warnings.len() > 1 {
                format!(" (and {} more warning(s) in the log)", s.warnings.len() - 1)
            } else {
                String::new()
            };
            s.app.startup_warning = Some(format!("{w}{more}"));
            for w in &s.warnings {
                tracing::warn!("{w}");
            }
        }
        s
    }

    /// Opens `vault` in the background (after shutting `old` down): the answer arrives as
    /// the next open result. Meanwhile the console says so, and whom it waits for when
    /// another process holds the vault.
    fn open(&mut self, vault: VaultConfig, read_only: bool, old: Option<Engine>) {
        let name = vault.name.clone();
        self.app.update(Msg::Opening {
            name: name.clone(),
            holder: None,
        });
        let tx = self.open_tx.clone();
        let msgs = self.msg_tx.clone();
        let setup = SetupLite::from(&self.setup);
        let dir = self.setup.config.vault_dir(&vault, &self.setup.data_dir);
        tokio::spawn(async move {
            if let Some(old) = old {
                old.shutdown(SHUTDOWN_TIMEOUT).await;
                drop(old);
            }
            if !read_only {
                if let Some(holder) = holder_of(dir).await {
                    let _ = msgs.send(Msg::Opening {
                        name: name.clone(),
                        holder: Some(holder),
                    });
                }
            }
            let r = setup.open(&vault, read_only).await;
            let _ = tx.send((name, r));
        });
    }

    /// The engine of the open vault.
    pub fn engine(&self) -> Option<&Engine> {
        self.engine.as_ref()
    }

    /// A sender of messages (the terminal's input task uses it).
    pub fn sender(&self) -> mpsc::UnboundedSender<Msg> {
        self.msg_tx.clone()
    }

    /// Installs a freshly opened engine (or reports why it could not be opened).
    fn install(&mut self, name: String, result: Result<Engine, AppError>) -> Msg {
        let engine = match result {
            Ok(e) => e,
            Err(e) => {
                let dir = self
                    .setup
                    .config
                    .vault(&name)
                    .map(|v| self.setup.config.vault_dir(v, &self.setup.data_dir));
                let locked = e.busy
                    || dir
                        .as_deref()
                        .and_then(crate::vault::lock::VaultLock::owner)
                        .is_some();
                return Msg::VaultFailed {
                    name,
                    message: e.message,
                    locked,
                };
            }
        };
        let read_only_reason = (!engine.is_owner()).then(|| {
            let dir = engine.vault_dir().to_path_buf();
            // A phrase that reads after "vault X is …" and "read-only (…)".
            crate::vault::lock::VaultLock::owner(&dir)
                .and_then(|e| e.holder())
                .unwrap_or_else(|| "opened for reading".to_string())
        });
        let info = VaultInfo {
            name: engine.vault_name().to_string(),
            region: engine.region().to_string(),
            source_kind: engine.source_kind().to_string(),
            source_description: engine.source_description(),
            simulated: engine.is_simulated(),
            read_only: read_only_reason,
            free: false,
            unencrypted_v1: engine.format_version() == 1,
            new_key_file: engine.new_key_file().map(|p| p.to_path_buf()),
        };
        self.events = Some(engine.subscribe());
        let poll = (!engine.is_owner()).then_some(READ_ONLY_POLL);
        if !engine.is_owner() {
            self.owner_watch = Some(tokio::spawn(watch_owner(
                info.name.clone(),
                engine.vault_dir().to_path_buf(),
                info.read_only.clone(),
                self.msg_tx.clone(),
            )));
        }
        // A fresh channel: snapshots of the previous vault must not arrive after this.
        let (tx, rx) = mpsc::channel(2);
        self.data_tx = tx;
        self.data_rx = rx;
        self.loader = Some(Loader::start(engine.clone(), self.data_tx.clone(), poll));
        if engine.is_owner() {
            let stop = CancelToken::new();
            let e = engine.clone();
            let s = stop.clone();
            self.scheduler = Some((stop, tokio::spawn(async move { e.run_scheduler(s).await })));
        }
        self.app.now = engine.now();
        self.engine = Some(engine);
        Msg::VaultOpened(Box::new(info))
    }

    /// Handles a message and performs what it asks for.
    pub fn handle(&mut self, msg: Msg) {
        let effects = self.app.update(msg);
        for e in effects {
            self.perform(e);
        }
    }

    fn perform(&mut self, e: Effect) {
        match e {
            Effect::Run(cmd) => match self.engine.clone() {
                Some(engine) => {
                    let tx = self.msg_tx.clone();
                    tokio::task::spawn_blocking(move || {
                        let done = run_command(&engine, cmd);
                        let _ = tx.send(Msg::Done(Box::new(done)));
                    });
                }
                None => {
                    let done = CommandDone {
                        label: cmd.label(),
                        subject: cmd.subject(),
                        operation: cmd.operation(),
                        result: Err("no vault is open; press v to choose one".into()),
                        note: None,
                    };
                    let _ = self.msg_tx.send(Msg::Done(Box::new(done)));
                }
            },
            Effect::Jobs(q) => {
                if let Some(l) = &self.loader {
                    l.request(LoadRequest::Query(q));
                }
            }
            Effect::Reload => {
                if let Some(l) = &self.loader {
                    l.request(LoadRequest::Stale(Stale::ALL));
                }
            }
            Effect::LoadJob(id) => {
                if let Some(engine) = self.engine.clone() {
                    let tx = self.msg_tx.clone();
                    tokio::task::spawn_blocking(move || {
                        let r = engine.job(&id).map_err(|e| e.to_string());
                        let _ = tx.send(Msg::JobLoaded(Box::new(r)));
                    });
                }
            }
            Effect::LoadPoints(item_id) => {
                if let Some(engine) = self.engine.clone() {
                    let tx = self.msg_tx.clone();
                    tokio::task::spawn_blocking(move || {
                        let result = engine.points(&item_id).map_err(|e| e.to_string());
                        let _ = tx.send(Msg::PointsLoaded { item_id, result });
                    });
                }
            }
            Effect::LoadKeys => {
                if let Some(engine) = self.engine.clone() {
                    let tx = self.msg_tx.clone();
                    tokio::task::spawn_blocking(move || {
                        let r = engine.keys_overview().map_err(|e| e.to_string());
                        let _ = tx.send(Msg::KeysLoaded(Box::new(r)));
                    });
                }
            }
            Effect::ProbeSpace(dir) => {
                let tx = self.msg_tx.clone();
                tokio::task::spawn_blocking(move || {
                    let space = crate::fsx::free_space(&dir).map_err(|e| e.to_string());
                    let _ = tx.send(Msg::SpaceProbed { dir, space });
                });
            }
            Effect::OpenVault { name, read_only } => {
                let Some(vault) = self.setup.config.vault(&name).cloned() else {
                    let _ = self.msg_tx.send(Msg::VaultFailed {
                        name: name.clone(),
                        message: format!("no vault is named \"{name}\""),
                        locked: false,
                    });
                    return;
                };
                let old = self.close_engine();
                self.open(vault, read_only, old);
            }
            Effect::Quit => {}
        }
    }

    /// Stops the scheduler and loader of the open vault and hands its engine back.
    fn close_engine(&mut self) -> Option<Engine> {
        if let Some((stop, task)) = self.scheduler.take() {
            stop.cancel();
            task.abort();
        }
        if let Some(w) = self.owner_watch.take() {
            w.abort();
        }
        self.loader = None;
        self.events = None;
        self.engine.take()
    }

    /// Waits for the next message: data, an engine event, a command's answer, input, or a
    /// tick (steady while something runs, else at the next minute for the clock).
    pub async fn next(&mut self) -> Msg {
        loop {
            let now = self
                .engine
                .as_ref()
                .map(|e| e.now())
                .unwrap_or_else(Utc::now);
            let wait = self
                .app
                .tick_interval()
                .unwrap_or_else(|| until_next_minute(now));
            let events = &mut self.events;
            tokio::select! {
                biased;
                m = self.msg_rx.recv() => {
                    if let Some(m) = m { return m; }
                }
                d = self.data_rx.recv() => {
                    if let Some(d) = d { return Msg::Data(Box::new(d)); }
                }
                o = self.open_rx.recv() => {
                    if let Some((name, r)) = o { return self.install(name, r); }
                }
                e = async {
                    match events.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => match e {
                    Ok(ev) => return Msg::Engine(Box::new(ev)),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if let Some(l) = &self.loader { l.request(LoadRequest::Stale(Stale::ALL)); }
                    }
                    Err(broadcast::error::RecvError::Closed) => self.events = None,
                },
                _ = tokio::time::sleep(wait) => {
                    let now = self.engine.as_ref().map(|e| e.now()).unwrap_or_else(Utc::now);
                    return Msg::Tick(now);
                }
            }
        }
    }

    /// A message that is ready now, without waiting (to handle a burst before drawing).
    pub fn try_next(&mut self) -> Option<Msg> {
        if let Ok(m) = self.msg_rx.try_recv() {
            return Some(m);
        }
        if let Some(rx) = self.events.as_mut() {
            if let Ok(e) = rx.try_recv() {
                return Some(Msg::Engine(Box::new(e)));
            }
        }
        if let Ok(d) = self.data_rx.try_recv() {
            return Some(Msg::Data(Box::new(d)));
        }
        None
    }

    /// Handles messages until `done(&app)` holds or `timeout` passes; returns whether it
    /// held. (Headless tests.)
    pub async fn run_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&App) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if done(&self.app) {
                return true;
            }
            match tokio::time::timeout_at(deadline, self.next()).await {
                Ok(m) => self.handle(m),
                Err(_) => return done(&self.app),
            }
        }
    }

    /// Quits: stops the scheduler and shuts the engine down (running jobs are cancelled
    /// and recorded as Cancelled).
    pub async fn close(&mut self) {
        if let Some(engine) = self.close_engine() {
            engine.shutdown(SHUTDOWN_TIMEOUT).await;
        }
    }
}

/// What the background opener needs of the setup (the setup itself is not `Send`-shared).
struct SetupLite {
    config: crate::config::Config,
    data_dir: std::path::PathBuf,
    unlock: crate::app::UnlockOptions,
}

impl SetupLite {
    fn from(s: &Setup) -> SetupLite {
        SetupLite {
            config: s.config.clone(),
            data_dir: s.data_dir.clone(),
            unlock: s.unlock.clone(),
        }
    }
    async fn open(self, vault: &VaultConfig, read_only: bool) -> Result<Engine, AppError> {
        let setup = Setup {
            config: self.config,
            vault: vault.clone(),
            data_dir: self.data_dir,
            unlock: self.unlock,
        };
        open_blocking(&setup, vault, read_only).await
    }
}

/// Opens a vault on a blocking thread (it reads the catalog and may wait for the lock).
async fn open_blocking(
    setup: &Setup,
    vault: &VaultConfig,
    read_only: bool,
) -> Result<Engine, AppError> {
    let s = Setup {
        config: setup.config.clone(),
        vault: vault.clone(),
        data_dir: setup.data_dir.clone(),
        // The console owns the terminal: it never asks for a passphrase there.
        unlock: crate::app::UnlockOptions {
            prompt: false,
            ..setup.unlock.clone()
        },
    };
    let v = vault.clone();
    let mode = if read_only {
        OpenMode::ReadOnly
    } else {
        OpenMode::Exclusive
    };
    tokio::task::spawn_blocking(move || s.open_vault(&v, mode))
        .await
        .unwrap_or_else(|e| {
            Err(AppError::failed(format!(
                "opening the vault stopped unexpectedly: {e}"
            )))
        })
}

/// Who holds the lock of the vault in `dir` ("in use by process 42 (vmvault run)"), if
/// anyone; asked on a blocking thread (it opens a file).
async fn holder_of(dir: std::path::PathBuf) -> Option<String> {
    tokio::task::spawn_blocking(move || {
        crate::vault::lock::VaultLock::owner(&dir).map(|e| {
            e.holder()
                .unwrap_or_else(|| "in use by another process".to_string())
        })
    })
    .await
    .ok()
    .flatten()
}

/// Watches who holds the vault a read-only console shows, every [`READ_ONLY_POLL`] (one
/// `flock` probe off the UI task), and says when that changes — above all when the owner
/// left and the vault can be taken over. Ends when the console closes or switches vault
/// (the task is aborted) or stops listening.
async fn watch_owner(
    name: String,
    dir: std::path::PathBuf,
    mut holder: Option<String>,
    tx: mpsc::UnboundedSender<Msg>,
) {
    let mut timer =
        tokio::time::interval_at(tokio::time::Instant::now() + READ_ONLY_POLL, READ_ONLY_POLL);
    loop {
        timer.tick().await;
        let now = holder_of(dir.clone()).await;
        if now != holder {
            holder = now.clone();
            let msg = Msg::VaultOwner {
                name: name.clone(),
                holder: now,
            };
            if tx.send(msg).is_err() {
                return;
            }
        }
    }
}

fn until_next_minute(now: DateTime<Utc>) -> Duration {
    let into = now.second() as u64 * 1000 + (now.nanosecond() / 1_000_000) as u64 % 1000;
    Duration::from_millis(60_000u64.saturating_sub(into).max(50))
}

/// Runs an engine command (blocking) and says how it went.
pub fn run_command(engine: &Engine, cmd: Command) -> CommandDone {
    let (label, subject, operation) = (cmd.label(), cmd.subject(), cmd.operation());
    let mut note = None;
    let result = match cmd {
        Command::Discover => engine.discover().map(|id| vec![id]),
        Command::Register(items) => engine.register(&items),
        Command::Protect {
            items,
            policy,
            create,
        } => {
            let created = if create {
                engine.create_policy(&policy).map(|_| true)
            } else {
                Ok(false)
            };
            match created {
                Ok(c) => {
                    if c {
                        note = Some(format!("policy {} created", policy.name));
                    }
                    engine.protect(&items, &policy.name)
                }
                Err(e) => Err(e),
            }
        }
        Command::BackupNow { item, retain_until } => engine
            .backup_now(&item, Some(retain_until))
            .map(|id| vec![id]),
        Command::Restore {
            item,
            point,
            dir,
            format,
        } => engine
            .restore(&item, &point, &dir, format)
            .map(|id| vec![id]),
        Command::StopProtection { item, delete_data } => engine
            .stop_protection(&item, delete_data)
            .map(|id| vec![id]),
        Command::ResumeProtection { item, policy } => {
            engine.resume_protection(&item, &policy).map(|id| vec![id])
        }
        Command::Undelete(item) => engine.undelete(&item).map(|id| vec![id]),
        Command::CancelJob(id) => engine.cancel_job(&id).map(|_| {
            note = Some("cancelling".into());
            vec![]
        }),
        Command::CreatePolicy(p) => engine.create_policy(&p).map(|_| {
            note = Some("created".into());
            vec![]
        }),
        Command::UpdatePolicy(p) => engine.update_policy(&p.name, &p).map(|n| {
            note = Some(match n.changed {
                0 => "saved; no recovery point expires at another time".into(),
                n => format!("saved; {n} recovery point(s) now expire at another time"),
            });
            vec![]
        }),
        Command::DeletePolicy(n) => engine.delete_policy(&n).map(|_| {
            note = Some("deleted".into());
            vec![]
        }),
        Command::AddPassphrase { passphrase, label } => engine
            .add_passphrase_slot(passphrase.expose(), &label)
            .map(|s| {
                note = Some(format!(
                    "added as key slot {}; the passphrase now opens the vault",
                    s.id
                ));
                vec![]
            }),
        Command::RemoveKeySlot(id) => engine.remove_key_slot(&id).map(|s| {
            note = Some(format!("removed ({}, \"{}\")", s.kind, s.label));
            vec![]
        }),
    };
    CommandDone {
        label,
        subject,
        operation,
        result: result.map_err(|e| e.to_string()),
        note,
    }
}
