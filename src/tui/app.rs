//! The console's state and its one entry point for change, [`App::update`] (Elm style).
//!
//! `update` takes a [`Msg`] (a key, a mouse event, a data snapshot, an engine event, the
//! result of a command, a tick) and changes the state; it never does I/O. What should
//! happen outside — run an engine command, load a job, ask the loader for another window
//! of jobs, switch vault, quit — it returns as [`Effect`]s, which the session performs on
//! other tasks and answers with more messages. That keeps the UI task free of disk I/O,
//! and lets tests drive the whole console through `update` with or without an engine.

use super::data::{Data, JobsQuery, StatusFilter, TimeRange};
use super::keys::{Action, KeyMap};
use super::popups::{self, Popup};
use super::tabs;
use super::theme::Theme;
use super::widgets::progress::Progress;
use crate::engine::{Event, JobProgress, NoticeLevel, RestoreFormat};
use crate::model::*;
use crate::policy::Policy;
use chrono::{DateTime, Utc};
use crossterm::event::{KeyEvent, KeyEventKind, MouseButton, MouseEvent, MouseEventKind};
use ratatui::layout::Rect;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

/// The five tabs, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tab {
    Dashboard,
    Registered,
    Protected,
    Jobs,
    Policies,
}

impl Tab {
    pub const ALL: [Tab; 5] = [
        Tab::Dashboard,
        Tab::Registered,
        Tab::Protected,
        Tab::Jobs,
        Tab::Policies,
    ];
    pub fn title(self) -> &'static str {
        match self {
            Tab::Dashboard => "Dashboard",
            Tab::Registered => "Registered Items",
            Tab::Protected => "Protected Items",
            Tab::Jobs => "Jobs",
            Tab::Policies => "Policies",
        }
    }
    /// The title for a narrow tab bar.
    pub fn short_title(self) -> &'static str {
        match self {
            Tab::Registered => "Registered",
            Tab::Protected => "Protected",
            t => t.title(),
        }
    }
    /// The title for a very narrow tab bar.
    pub fn tiny_title(self) -> &'static str {
        match self {
            Tab::Dashboard => "Dash",
            Tab::Registered => "Reg.",
            Tab::Protected => "Prot.",
            Tab::Jobs => "Jobs",
            Tab::Policies => "Pol.",
        }
    }
    pub fn action(self) -> Action {
        match self {
            Tab::Dashboard => Action::TabDashboard,
            Tab::Registered => Action::TabRegistered,
            Tab::Protected => Action::TabProtected,
            Tab::Jobs => Action::TabJobs,
            Tab::Policies => Action::TabPolicies,
        }
    }
    fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }
}

/// The open vault, as the header shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultInfo {
    pub name: String,
    pub region: String,
    pub source_kind: String,
    pub source_description: String,
    pub simulated: bool,
    /// Why the vault is only read (another process owns it), when it is: a phrase that
    /// reads after "vault X is" ("in use by process 42 (vmvault run)").
    pub read_only: Option<String>,
    /// Read-only, and the owner has left: the vault can be taken over.
    pub free: bool,
    /// A vault of format 1 (never encrypted; `vmvault vault upgrade` converts it).
    pub unencrypted_v1: bool,
    /// The key file this open made for the new encrypted vault: told once.
    pub new_key_file: Option<std::path::PathBuf>,
}

/// A configured vault the user can switch to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultChoice {
    pub name: String,
    pub region: String,
    pub source: String,
}

/// An engine command the console asks for.
#[derive(Debug, Clone)]
pub enum Command {
    Discover,
    Register(Vec<Item>),
    /// Protect items with a policy, creating the policy first when `create`.
    Protect {
        items: Vec<Item>,
        policy: Box<Policy>,
        create: bool,
    },
    BackupNow {
        item: Box<Item>,
        retain_until: DateTime<Utc>,
    },
    Restore {
        item: Box<Item>,
        point: Box<RecoveryPoint>,
        dir: PathBuf,
        format: RestoreFormat,
    },
    StopProtection {
        item: Box<Item>,
        delete_data: bool,
    },
    ResumeProtection {
        item: Box<Item>,
        policy: String,
    },
    Undelete(Box<Item>),
    CancelJob(String),
    CreatePolicy(Box<Policy>),
    /// Replaces the schedule and retention of the policy of that name.
    UpdatePolicy(Box<Policy>),
    DeletePolicy(String),
    /// Adds a passphrase slot to the vault's keys.
    AddPassphrase {
        passphrase: crate::vault::keys::Secret,
        label: String,
    },
    /// Removes a key slot (by id).
    RemoveKeySlot(String),
}

impl Command {
    /// The labels of the commands that change the vault's keys.
    pub const KEY_LABELS: [&'static str; 2] = ["Add passphrase", "Remove key slot"];

    /// Words for notifications ("Register: 2 jobs created").
    pub fn label(&self) -> &'static str {
        match self {
            Command::Discover => "Discover",
            Command::Register(_) => "Register",
            Command::Protect { .. } => "Configure protection",
            Command::BackupNow { .. } => "Back up now",
            Command::Restore { .. } => "Restore",
            Command::StopProtection {
                delete_data: false, ..
            } => "Stop protection",
            Command::StopProtection {
                delete_data: true, ..
            } => "Stop protection and delete data",
            Command::ResumeProtection { .. } => "Resume protection",
            Command::Undelete(_) => "Undelete",
            Command::CancelJob(_) => "Cancel",
            Command::CreatePolicy(_) => "Create policy",
            Command::UpdatePolicy(_) => "Edit policy",
            Command::DeletePolicy(_) => "Delete policy",
            Command::AddPassphrase { .. } => "Add passphrase",
            Command::RemoveKeySlot(_) => "Remove key slot",
        }
    }
    /// The operation of the jobs it creates.
    pub fn operation(&self) -> Option<JobOperation> {
        Some(match self {
            Command::Discover => JobOperation::Discover,
            Command::Register(_) => JobOperation::Register,
            Command::Protect { .. } | Command::ResumeProtection { .. } => {
                JobOperation::ConfigureBackup
            }
            Command::BackupNow { .. } => JobOperation::Backup,
            Command::Restore { .. } => JobOperation::Restore,
            Command::StopProtection {
                delete_data: false, ..
            } => JobOperation::DisableBackup,
            Command::StopProtection {
                delete_data: true, ..
            } => JobOperation::DeleteBackupData,
            Command::Undelete(_) => JobOperation::Undelete,
            Command::CancelJob(_)
            | Command::CreatePolicy(_)
            | Command::UpdatePolicy(_)
            | Command::DeletePolicy(_)
            | Command::AddPassphrase { .. }
            | Command::RemoveKeySlot(_) => return None,
        })
    }
    /// What it is about, for messages ("sales/web01", "policy Gold").
    pub fn subject(&self) -> String {
        match self {
            Command::Discover => "virtual machines".into(),
            Command::Register(items) | Command::Protect { items, .. } => match items.as_slice() {
                [one] => one.qualified_name(),
                many => format!("{} VMs", many.len()),
            },
            Command::BackupNow { item, .. }
            | Command::Restore { item, .. }
            | Command::StopProtection { item, .. }
            | Command::ResumeProtection { item, .. }
            | Command::Undelete(item) => item.qualified_name(),
            Command::CancelJob(id) => format!("job {}", short_id(id)),
            Command::CreatePolicy(p) | Command::UpdatePolicy(p) => format!("policy {}", p.name),
            Command::DeletePolicy(n) => format!("policy {n}"),
            Command::AddPassphrase { label, .. } => {
                format!("a slot labelled \"{}\"", crate::fmt::escape(label))
            }
            Command::RemoveKeySlot(id) => format!("key slot {id}"),
        }
    }
}

/// The first 8 characters of an id.
pub fn short_id(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// What came back from a command.
#[derive(Debug, Clone)]
pub struct CommandDone {
    pub label: &'static str,
    pub subject: String,
    pub operation: Option<JobOperation>,
    /// Job ids created, or the message of the refusal.
    pub result: Result<Vec<String>, String>,
    /// Extra words for success ("policy Gold created").
    pub note: Option<String>,
}

/// Something outside the UI task should do.
#[derive(Debug, Clone)]
pub enum Effect {
    Run(Command),
    /// The Jobs tab's filter or window changed.
    Jobs(JobsQuery),
    /// Reload everything now.
    Reload,
    LoadJob(String),
    LoadPoints(String),
    /// Load the vault's key slots (the Keys popup).
    LoadKeys,
    /// Tell the free space of the file system a restore target is on.
    ProbeSpace(PathBuf),
    OpenVault {
        name: String,
        read_only: bool,
    },
    Quit,
}

/// Input to [`App::update`].
#[derive(Debug, Clone)]
pub enum Msg {
    Key(KeyEvent),
    Mouse(MouseEvent),
    Resize(u16, u16),
    /// Time passes (engine time: simulated when the source is).
    Tick(DateTime<Utc>),
    Data(Box<Result<Data, String>>),
    Engine(Box<Event>),
    Done(Box<CommandDone>),
    JobLoaded(Box<Result<Job, String>>),
    PointsLoaded {
        item_id: String,
        result: Result<Vec<RecoveryPoint>, String>,
    },
    /// The vault's keys (see [`Effect::LoadKeys`]).
    KeysLoaded(Box<Result<crate::engine::KeysOverview, String>>),
    /// The free space of a restore target (see [`Effect::ProbeSpace`]).
    SpaceProbed {
        dir: PathBuf,
        space: popups::restore::Space,
    },
    VaultOpened(Box<VaultInfo>),
    /// A vault is being opened; `holder`: the process it waits for, when one holds it.
    Opening {
        name: String,
        holder: Option<String>,
    },
    /// Who holds the vault a read-only console shows changed (None: nobody; it is free).
    VaultOwner {
        name: String,
        holder: Option<String>,
    },
    VaultFailed {
        name: String,
        message: String,
        locked: bool,
    },
}

/// How many ended jobs the console remembers (until a snapshot shows their end).
const MAX_ENDED: usize = 10_000;

/// A job as the console shows it now (see [`App::job_now`]).
#[derive(Debug, Clone, Copy)]
pub struct JobNow<'a> {
    /// The freshest record: final, live, or the snapshot's.
    pub job: &'a Job,
    pub progress: Progress,
    /// The task running now (live progress only).
    pub task: Option<&'a str>,
}

/// The notification line.
#[derive(Debug, Clone, PartialEq)]
pub struct NoticeLine {
    pub level: NoticeLevel,
    pub text: String,
    /// Jobs it is about (J opens them).
    pub job_ids: Vec<String>,
    pub operation: Option<JobOperation>,
    /// When a job of `job_ids` is running: the line counts the seconds since `since`.
    pub since: Option<DateTime<Utc>>,
}

/// What handlers of tabs and popups can ask of the app.
pub struct Cx<'a> {
    pub keys: &'a KeyMap,
    pub data: &'a Data,
    pub now: DateTime<Utc>,
    pub vault: Option<&'a VaultInfo>,
    /// The vault being opened, while no vault is open yet.
    pub opening: Option<&'a str>,
    pub vaults: &'a [VaultChoice],
    pub running: &'a HashMap<String, Job>,
    pub cwd: &'a std::path::Path,
    pub effects: Vec<Effect>,
    pub nav: Nav,
    pub goto: Option<Tab>,
    pub notice: Option<(NoticeLevel, String)>,
    /// New query for the Jobs tab (set by the dashboard).
    pub jobs_query: Option<JobsQuery>,
}

/// Popup stack changes asked for by a handler.
#[derive(Default)]
pub enum Nav {
    #[default]
    Stay,
    Push(Box<Popup>),
    Replace(Box<Popup>),
    Close,
    CloseAll,
}

impl Cx<'_> {
    /// False (with a notice) when the vault is only read or no vault is open.
    pub fn writable(&mut self, what: &str) -> bool {
        match self.vault {
            None => {
                let text = match self.opening {
                    Some(name) => {
                        format!("{what}: vault {name} is still opening; try again in a moment")
                    }
                    None => format!(
                        "{what}: no vault is open; press {} to choose one",
                        self.keys.label(Action::SwitchVault)
                    ),
                };
                self.notice = Some((NoticeLevel::Warning, text));
                false
            }
            Some(v) => match &v.read_only {
                Some(_) if v.free => {
                    self.notice = Some((
                        NoticeLevel::Warning,
                        format!(
                            "Read-only, {what} is disabled: vault {} is no longer in use — press {} to take it over",
                            v.name,
                            self.keys.label(Action::TakeOver)
                        ),
                    ));
                    false
                }
                Some(why) => {
                    self.notice = Some((
                        NoticeLevel::Warning,
                        format!("Read-only, {what} is disabled: vault {} is {why}", v.name),
                    ));
                    false
                }
                None => true,
            },
        }
    }
    pub fn push(&mut self, p: Popup) {
        self.nav = Nav::Push(Box::new(p));
    }
    pub fn replace(&mut self, p: Popup) {
        self.nav = Nav::Replace(Box::new(p));
    }
    pub fn close(&mut self) {
        self.nav = Nav::Close;
    }
    pub fn run(&mut self, c: Command) {
        self.effects.push(Effect::Run(c));
    }
    pub fn region(&self) -> &str {
        self.vault.map(|v| v.region.as_str()).unwrap_or("")
    }
}

/// A handler context borrowing the app's fields one by one (so a tab or popup can be
/// borrowed mutably beside it).
macro_rules! cx {
    ($s:ident) => {
        Cx {
            keys: &$s.keys,
            data: &$s.data,
            now: $s.now,
            vault: $s.vault.as_ref(),
            opening: $s.opening.as_deref(),
            vaults: &$s.vaults,
            running: &$s.running,
            cwd: &$s.cwd,
            effects: vec![],
            nav: Nav::Stay,
            goto: None,
            notice: None,
            jobs_query: None,
        }
    };
}

/// The whole console.
pub struct App {
    pub vault: Option<VaultInfo>,
    pub vaults: Vec<VaultChoice>,
    pub keys: KeyMap,
    pub theme: Theme,
    pub mouse: bool,
    pub cwd: PathBuf,
    pub data: Data,
    pub load_error: Option<String>,
    pub now: DateTime<Utc>,
    pub tab: Tab,
    pub dashboard: tabs::dashboard::State,
    pub registered: tabs::registered::State,
    pub protected: tabs::protected::State,
    pub jobs: tabs::jobs::State,
    pub policies: tabs::policies::State,
    pub popups: Vec<Popup>,
    pub notice: Option<NoticeLine>,
    /// Live progress of running jobs (from events).
    pub progress: HashMap<String, JobProgress>,
    /// Jobs running now, by id.
    pub running: HashMap<String, Job>,
    /// Jobs seen ending, with their final record: a snapshot loaded before they ended
    /// must neither revive them nor draw their older progress.
    ended: HashMap<String, Job>,
    /// Commands sent and not answered yet.
    pub pending: usize,
    pub spinner: usize,
    pub should_quit: bool,
    /// Something changed since the last draw.
    pub dirty: bool,
    /// Where the tab titles were drawn (for mouse clicks).
    pub(crate) tab_areas: RefCell<Vec<(Rect, Tab)>>,
    /// A warning of the configuration, shown once the vault is open (and meanwhile).
    pub startup_warning: Option<String>,
    /// The vault being opened (until it opened or failed).
    pub opening: Option<String>,
}

impl App {
    pub fn new(
        vault: Option<VaultInfo>,
        vaults: Vec<VaultChoice>,
        keys: KeyMap,
        theme: Theme,
        mouse: bool,
    ) -> App {
        App {
            vault,
            vaults,
            keys,
            theme,
            mouse,
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            data: Data::default(),
            load_error: None,
            now: Utc::now(),
            tab: Tab::Dashboard,
            dashboard: Default::default(),
            registered: Default::default(),
            protected: Default::default(),
            jobs: Default::default(),
            policies: Default::default(),
            popups: Vec::new(),
            notice: None,
            progress: HashMap::new(),
            running: HashMap::new(),
            ended: HashMap::new(),
            pending: 0,
            spinner: 0,
            should_quit: false,
            dirty: true,
            tab_areas: RefCell::new(Vec::new()),
            startup_warning: None,
            opening: None,
        }
    }

    pub fn read_only(&self) -> bool {
        self.vault.as_ref().is_some_and(|v| v.read_only.is_some())
    }

    /// Jobs this console would cancel on quit (not those of another process).
    pub fn own_running_jobs(&self) -> usize {
        if self.read_only() {
            0
        } else {
            self.running.len()
        }
    }

    /// Something is running: the spinner turns and the screen redraws steadily.
    pub fn busy(&self) -> bool {
        !self.running.is_empty() || self.pending > 0
    }

    /// A job as it stands now: its final record when it was seen ending (whatever an older
    /// snapshot says) or `row` is final, else its live status; while it runs, the most done that the
    /// snapshot, its record and its live progress have shown — so a bar never goes back.
    pub fn job_now<'a>(&'a self, row: &'a Job) -> JobNow<'a> {
        // An end beats any running state, wherever it comes from.
        let end = self
            .ended
            .get(&row.id)
            .or((!row.status.is_active()).then_some(row));
        if let Some(end) = end {
            return JobNow {
                job: end,
                progress: Progress {
                    done: end.bytes_done,
                    total: end.bytes_total,
                    ..Default::default()
                },
                task: None,
            };
        }
        let record = self.running.get(&row.id);
        let job = record.unwrap_or(row);
        let live = self.progress.get(&row.id);
        let seen = [
            Some((row.bytes_done, row.bytes_total)),
            record.map(|j| (j.bytes_done, j.bytes_total)),
            live.map(|p| (p.bytes_done, p.bytes_total)),
        ];
        let total = seen.iter().flatten().map(|s| s.1).max().unwrap_or(0);
        let mut done = seen.iter().flatten().map(|s| s.0).max().unwrap_or(0);
        if total > 0 {
            done = done.min(total);
        }
        let rate = live.map(|p| p.rate).filter(|r| *r > 0.0);
        JobNow {
            job,
            progress: Progress {
                done,
                total,
                rate,
                eta: rate.map(|r| total.saturating_sub(done) as f64 / r),
            },
            task: live.and_then(|p| p.task.as_deref()),
        }
    }

    /// How often to tick: steadily while something runs; otherwise only for the clock.
    pub fn tick_interval(&self) -> Option<std::time::Duration> {
        self.busy().then(|| std::time::Duration::from_millis(125))
    }

    /// Shows a line in the notification area.
    pub fn set_notice(&mut self, level: NoticeLevel, text: impl Into<String>) {
        self.notice = Some(NoticeLine {
            level,
            text: text.into(),
            job_ids: vec![],
            operation: None,
            since: None,
        });
    }

    /// Handles one message; returns what should happen outside.
    pub fn update(&mut self, msg: Msg) -> Vec<Effect> {
        self.dirty = true;
        match msg {
            Msg::Key(k) => {
                if k.kind == KeyEventKind::Release {
                    self.dirty = false;
                    return vec![];
                }
                let mut effects = Vec::new();
                for k in self.keys.unfold_escape(k) {
                    effects.extend(self.on_key(k));
                    effects.extend(self.popup_wants());
                    if self.should_quit {
                        break;
                    }
                }
                effects
            }
            Msg::Mouse(m) => {
                let mut effects = self.on_mouse(m);
                effects.extend(self.popup_wants());
                effects
            }
            // The next draw lays out for the new size.
            Msg::Resize(..) => vec![],
            Msg::Tick(now) => {
                self.now = now;
                if self.busy() {
                    self.spinner = self.spinner.wrapping_add(1);
                }
                vec![]
            }
            Msg::Data(d) => {
                match *d {
                    Ok(d) => {
                        self.data = d;
                        self.load_error = None;
                        // A snapshot begun after a job ended shows its end itself.
                        let taken = self.data.now;
                        self.ended
                            .retain(|_, j| j.end_time.is_none_or(|end| end >= taken));
                        self.now = self.now.max(self.data.now);
                        self.sync_running();
                        self.refresh_views();
                    }
                    Err(e) => self.load_error = Some(e),
                }
                vec![]
            }
            Msg::Engine(e) => self.on_event(*e),
            Msg::Done(d) => self.on_done(*d),
            Msg::JobLoaded(r) => {
                for p in self.popups.iter_mut() {
                    if let Popup::Job(j) = p {
                        j.loaded(&r);
                    }
                }
                vec![]
            }
            Msg::SpaceProbed { dir, space } => {
                for p in self.popups.iter_mut() {
                    if let Popup::Restore(r) = p {
                        r.space_probed(&dir, &space);
                    }
                }
                vec![]
            }
            Msg::KeysLoaded(r) => {
                for p in self.popups.iter_mut() {
                    if let Popup::VaultKeys(k) = p {
                        k.loaded(&r);
                    }
                }
                vec![]
            }
            Msg::PointsLoaded { item_id, result } => {
                for p in self.popups.iter_mut() {
                    if let Popup::Item(i) = p {
                        i.points_loaded(&item_id, &result);
                    }
                }
                vec![]
            }
            Msg::VaultOpened(info) => {
                self.opening = None;
                let name = info.name.clone();
                let ro = info.read_only.clone();
                self.vault = Some(*info);
                self.data = Data::default();
                self.progress.clear();
                self.running.clear();
                self.ended.clear();
                self.popups.clear();
                self.jobs = Default::default();
                self.registered = Default::default();
                self.protected = Default::default();
                self.policies = Default::default();
                self.dashboard = Default::default();
                let new_key = self.vault.as_ref().and_then(|v| v.new_key_file.clone());
                // Said once: where the key of a new encrypted vault is.
                let key_note = new_key.map(|path| {
                    format!(
                        "Opened vault {name}, new and encrypted: its key file is {}. Keep a copy somewhere safe; losing it loses the backups",
                        path.display()
                    )
                });
                match (self.startup_warning.take(), ro) {
                    (Some(w), _) => match key_note {
                        Some(k) => self.set_notice(NoticeLevel::Warning, format!("{w} · {k}")),
                        None => self.set_notice(NoticeLevel::Warning, w),
                    },
                    _ if let Some(k) = key_note => self.set_notice(NoticeLevel::Warning, k),
                    (None, Some(why)) => self.set_notice(
                        NoticeLevel::Warning,
                        format!("Opened vault {name} read-only ({why}); actions are disabled"),
                    ),
                    (None, None) => {
                        self.set_notice(NoticeLevel::Info, format!("Opened vault {name}"))
                    }
                }
                vec![]
            }
            Msg::Opening { name, holder } => {
                self.opening = Some(name.clone());
                let text = match holder {
                    Some(h) => format!("Opening vault {name}: waiting for it, {h}…"),
                    None => format!("Opening vault {name}…"),
                };
                match self.startup_warning.clone() {
                    Some(w) => self.set_notice(NoticeLevel::Warning, w),
                    None => self.set_notice(NoticeLevel::Info, text),
                }
                vec![]
            }
            Msg::VaultOwner { name, holder } => {
                let key = self.keys.label(Action::TakeOver);
                let Some(v) = self.vault.as_mut().filter(|v| v.name == name) else {
                    return vec![];
                };
                if v.read_only.is_none() {
                    return vec![];
                }
                v.free = holder.is_none();
                match holder {
                    Some(h) => {
                        v.read_only = Some(h.clone());
                        self.set_notice(
                            NoticeLevel::Warning,
                            format!("Vault {name} is {h} now; still read-only"),
                        );
                    }
                    None => self.set_notice(
                        NoticeLevel::Warning,
                        format!(
                            "Vault {name} is no longer in use: press {key} to take it over (actions work again)"
                        ),
                    ),
                }
                vec![]
            }
            Msg::VaultFailed {
                name,
                message,
                locked,
            } => {
                self.opening = None;
                self.popups.retain(|p| !matches!(p, Popup::Locked(_)));
                if locked {
                    self.popups
                        .push(Popup::Locked(popups::locked::State::new(name, message)));
                } else {
                    self.popups
                        .push(Popup::Message(popups::message::State::error(
                            format!("Cannot open vault {name}"),
                            message,
                        )));
                }
                vec![]
            }
        }
    }

    /// What a newly opened popup needs loaded (asked for once).
    fn popup_wants(&mut self) -> Vec<Effect> {
        self.popups
            .last_mut()
            .map(|p| p.wants())
            .unwrap_or_default()
    }

    /// Running jobs from a snapshot, unless events said they finished.
    fn sync_running(&mut self) {
        if self.read_only() {
            self.running = self
                .data
                .active_jobs
                .iter()
                .map(|j| (j.id.clone(), j.clone()))
                .collect();
            return;
        }
        for j in self.data.active_jobs.iter() {
            if !self.ended.contains_key(&j.id) {
                self.running
                    .entry(j.id.clone())
                    .or_insert_with(|| j.clone());
            }
        }
        // A snapshot newer than a job's start that no longer lists it: it ended.
        let active: HashSet<&str> = self
            .data
            .active_jobs
            .iter()
            .map(|j| j.id.as_str())
            .collect();
        let now = self.data.now;
        self.running
            .retain(|id, j| active.contains(id.as_str()) || j.start_time > now);
    }

    fn refresh_views(&mut self) {
        let region = self
            .vault
            .as_ref()
            .map(|v| v.region.clone())
            .unwrap_or_default();
        self.registered.refresh(&self.data);
        self.protected.refresh(&self.data);
        self.jobs.refresh(&self.data);
        self.policies.refresh(&self.data);
        for p in self.popups.iter_mut() {
            p.data_changed(&self.data, &region);
        }
    }

    fn on_event(&mut self, e: crate::engine::Event) -> Vec<Effect> {
        match e {
            Event::JobProgress(mut p) => {
                // Drawn at the next tick, not once per event.
                self.dirty = false;
                if self.ended.contains_key(&p.id) {
                    return vec![];
                }
                if let Some(old) = self.progress.get(&p.id) {
                    if old.bytes_total == p.bytes_total {
                        p.bytes_done = p.bytes_done.max(old.bytes_done);
                    }
                }
                self.progress.insert(p.id.clone(), p);
                vec![]
            }
            Event::JobUpdated(job) => {
                if job.status.is_active() {
                    if !self.ended.contains_key(&job.id) {
                        self.running.insert(job.id.clone(), (*job).clone());
                    }
                } else {
                    self.running.remove(&job.id);
                    self.progress.remove(&job.id);
                    if self.ended.len() >= MAX_ENDED {
                        self.ended.clear();
                    }
                    self.ended.insert(job.id.clone(), (*job).clone());
                    if let Some(n) = &mut self.notice {
                        if n.job_ids.contains(&job.id) {
                            n.since = None;
                        }
                    }
                }
                for p in self.popups.iter_mut() {
                    if let Popup::Job(j) = p {
                        j.job_updated(&job);
                    }
                }
                vec![]
            }
            Event::Notice(n) => {
                // "Discovering virtual machines…" counts the seconds while its job runs.
                let ongoing = n.text.ends_with('…');
                let running = n.job_id.as_ref().and_then(|id| self.running.get(id));
                let since = if ongoing {
                    Some(running.map(|j| j.start_time).unwrap_or(self.now))
                } else {
                    None
                };
                let operation = n
                    .job_id
                    .as_ref()
                    .and_then(|id| self.running.get(id))
                    .map(|j| j.operation);
                self.notice = Some(NoticeLine {
                    level: n.level,
                    text: n.text,
                    job_ids: n.job_id.into_iter().collect(),
                    operation,
                    since,
                });
                vec![]
            }
            Event::PointsChanged { item_id } => {
                let mut eff = vec![];
                for p in self.popups.iter() {
                    if let Popup::Item(i) = p {
                        if i.item_id() == item_id {
                            eff.push(Effect::LoadPoints(item_id.clone()));
                        }
                    }
                }
                eff
            }
            Event::ClockChanged(t) => {
                self.now = t;
                vec![]
            }
            Event::ItemsChanged | Event::PoliciesChanged => vec![],
        }
    }

    fn on_done(&mut self, d: CommandDone) -> Vec<Effect> {
        self.pending = self.pending.saturating_sub(1);
        // A key command answered: the Keys popup shows the slots as they are now (its
        // form, with the passphrase typed, goes).
        let mut effects = Vec::new();
        if Command::KEY_LABELS.contains(&d.label) {
            for p in self.popups.iter_mut() {
                if let Popup::VaultKeys(k) = p {
                    effects.extend(k.command_done());
                }
            }
        }
        // A restore form waiting for this answer closes on success (with the item popup
        // beneath it), or keeps the refusal to show it where it can be corrected. It is
        // looked for in the whole stack: another command's refusal may have put a message
        // on top of it meanwhile.
        let mut refusal_shown = false;
        if d.operation == Some(JobOperation::Restore) {
            let waiting = self
                .popups
                .iter()
                .rposition(|p| matches!(p, Popup::Restore(f) if f.pending));
            if let Some(at) = waiting {
                let closes = match &mut self.popups[at] {
                    Popup::Restore(form) => form.answered(&d.result),
                    _ => false,
                };
                if closes {
                    self.popups.remove(at);
                    if at > 0 && matches!(self.popups[at - 1], Popup::Item(_)) {
                        self.popups.remove(at - 1);
                    }
                } else {
                    refusal_shown = true;
                }
            }
        }
        match d.result {
            Ok(ids) => {
                let view = self.keys.label(Action::ViewJobs);
                let text = match (ids.len(), d.operation) {
                    (_, None) => format!(
                        "{}: {}{}",
                        d.label,
                        d.subject,
                        d.note.map(|n| format!(" — {n}")).unwrap_or_default()
                    ),
                    (0, Some(_)) => format!("{}: nothing to do", d.label),
                    (1, Some(_)) => format!(
                        "{}: job created for {}{} — press {view} to view",
                        d.label,
                        d.subject,
                        d.note.map(|n| format!(" ({n})")).unwrap_or_default()
                    ),
                    (n, Some(_)) => format!(
                        "{}: {n} jobs created{} — press {view} to view",
                        d.label,
                        d.note.map(|n| format!(" ({n})")).unwrap_or_default()
                    ),
                };
                // Discovery announces itself ("Discovering virtual machines…").
                if d.operation != Some(JobOperation::Discover) {
                    self.notice = Some(NoticeLine {
                        level: NoticeLevel::Info,
                        text,
                        job_ids: ids,
                        operation: d.operation,
                        since: None,
                    });
                }
            }
            Err(message) => {
                self.notice = Some(NoticeLine {
                    level: NoticeLevel::Error,
                    text: format!(
                        "{} of {} refused: {}",
                        d.label,
                        d.subject,
                        first_line(&message)
                    ),
                    job_ids: vec![],
                    operation: None,
                    since: None,
                });
                if !refusal_shown {
                    self.popups
                        .push(Popup::Message(popups::message::State::error(
                            format!("{}: refused", d.label),
                            message,
                        )));
                }
            }
        }
        effects
    }

    fn on_key(&mut self, k: KeyEvent) -> Vec<Effect> {
        // Help is `?` where keys type no text, and F1 everywhere.
        let types_text = matches!(k.code, crossterm::event::KeyCode::Char(_))
            && !k
                .modifiers
                .contains(crossterm::event::KeyModifiers::CONTROL);
        // A popup gets every other key.
        if let Some(top) = self.popups.len().checked_sub(1) {
            let popup = &self.popups[top];
            if self.keys.is(Action::Help, &k)
                && !matches!(popup, Popup::Help(_))
                && !(types_text && popup.capturing_text())
            {
                let entries = self.help_entries();
                let name = popup.name().to_string();
                self.popups
                    .push(Popup::Help(popups::help::State::new(name, entries)));
                return vec![];
            }
            let mut cx = cx!(self);
            let p = &mut self.popups[top];
            p.handle_key(&k, &mut cx);
            let r = Self::take(cx);
            return self.apply(r);
        }
        let keys = &self.keys;
        let capturing = match self.tab {
            Tab::Dashboard => false,
            Tab::Registered => self.registered.capturing_text(),
            Tab::Protected => self.protected.capturing_text(),
            Tab::Jobs => self.jobs.capturing_text(),
            Tab::Policies => false,
        };
        if keys.is(Action::Help, &k) && !(capturing && types_text) {
            let entries = self.help_entries();
            self.popups.push(Popup::Help(popups::help::State::new(
                self.tab.title().to_string(),
                entries,
            )));
            return vec![];
        }
        if !capturing {
            if keys.is(Action::Quit, &k) {
                return self.quit();
            }
            for t in Tab::ALL {
                if keys.is(t.action(), &k) {
                    return self.goto(t);
                }
            }
            if keys.is(Action::NextTab, &k) {
                return self.goto(Tab::ALL[(self.tab.index() + 1) % Tab::ALL.len()]);
            }
            if keys.is(Action::PrevTab, &k) {
                return self
                    .goto(Tab::ALL[(self.tab.index() + Tab::ALL.len() - 1) % Tab::ALL.len()]);
            }
            if keys.is(Action::SwitchVault, &k) {
                self.popups.push(Popup::Vaults(popups::vaults::State::new(
                    &self.vaults,
                    self.vault.as_ref().map(|v| v.name.as_str()),
                )));
                return vec![];
            }
            if keys.is(Action::VaultKeys, &k) {
                if self.vault.is_none() {
                    let text = match &self.opening {
                        Some(name) => format!("Keys: vault {name} is still opening"),
                        None => format!(
                            "Keys: no vault is open; press {} to choose one",
                            keys.label(Action::SwitchVault)
                        ),
                    };
                    self.set_notice(NoticeLevel::Warning, text);
                    return vec![];
                }
                self.popups
                    .push(Popup::VaultKeys(Box::new(popups::vault_keys::State::new())));
                return vec![];
            }
            if keys.is(Action::Refresh, &k) {
                return vec![Effect::Reload];
            }
            if keys.is(Action::ViewJobs, &k) {
                return self.view_notice_jobs();
            }
            if keys.is(Action::TakeOver, &k) {
                return self.take_over();
            }
        }
        let mut cx = cx!(self);
        match self.tab {
            Tab::Dashboard => self.dashboard.handle_key(&k, &mut cx),
            Tab::Registered => self.registered.handle_key(&k, &mut cx),
            Tab::Protected => self.protected.handle_key(&k, &mut cx),
            Tab::Jobs => self.jobs.handle_key(&k, &mut cx),
            Tab::Policies => self.policies.handle_key(&k, &mut cx),
        }
        let r = Self::take(cx);
        self.apply(r)
    }

    fn take(cx: Cx<'_>) -> CxResult {
        CxResult {
            effects: cx.effects,
            nav: cx.nav,
            goto: cx.goto,
            notice: cx.notice,
            jobs_query: cx.jobs_query,
        }
    }

    /// Applies what a handler asked for.
    fn apply(&mut self, r: CxResult) -> Vec<Effect> {
        let mut effects = r.effects;
        match r.nav {
            Nav::Stay => {}
            Nav::Push(p) => self.popups.push(*p),
            Nav::Replace(p) => {
                self.popups.pop();
                self.popups.push(*p);
            }
            Nav::Close => {
                self.popups.pop();
            }
            Nav::CloseAll => self.popups.clear(),
        }
        if let Some((level, text)) = r.notice {
            self.set_notice(level, text);
        }
        // A drill-down (a dashboard count): its filter, until the user comes back on
        // their own.
        if let Some(q) = r.jobs_query {
            self.jobs.drill_down(q.clone());
            effects.push(Effect::Jobs(q));
        }
        if let Some(t) = r.goto {
            self.tab = t;
        }
        for e in &effects {
            match e {
                Effect::Run(_) => self.pending += 1,
                Effect::Quit => self.should_quit = true,
                _ => {}
            }
        }
        // Popups are made from the current data and refreshed with every new snapshot
        // (`refresh_views`): a key needs no refresh (it would re-filter 10,000 items).
        effects
    }

    /// The user goes to a tab (a key, a click): coming to Jobs, a drill-down's filter
    /// gives way to their own.
    fn goto(&mut self, t: Tab) -> Vec<Effect> {
        let arriving = self.tab != t;
        self.tab = t;
        if arriving && t == Tab::Jobs {
            if let Some(q) = self.jobs.come_back() {
                return vec![Effect::Jobs(q)];
            }
        }
        vec![]
    }

    fn quit(&mut self) -> Vec<Effect> {
        let n = self.own_running_jobs();
        if n > 0 {
            self.popups.push(Popup::Confirm(popups::confirm::State::new(
                "Quit",
                vec![
                    format!("{n} job(s) are running in this console."),
                    "Quitting cancels them; they are recorded as Cancelled.".into(),
                    String::new(),
                    "Quit anyway?".into(),
                ],
                vec![Effect::Quit],
                true,
            )));
            return vec![];
        }
        self.should_quit = true;
        vec![Effect::Quit]
    }

    /// Takes over a read-only vault whose owner left: reopens it as its owner.
    fn take_over(&mut self) -> Vec<Effect> {
        let Some(v) = &self.vault else { return vec![] };
        match (&v.read_only, v.free) {
            (None, _) => vec![],
            (Some(_), true) => vec![Effect::OpenVault {
                name: v.name.clone(),
                read_only: false,
            }],
            (Some(why), false) => {
                let text = format!(
                    "Vault {} is {why}: it can be taken over once that process ends (the console notices)",
                    v.name
                );
                self.set_notice(NoticeLevel::Info, text);
                vec![]
            }
        }
    }

    /// `J`: the jobs the notification is about.
    fn view_notice_jobs(&mut self) -> Vec<Effect> {
        let Some(n) = &self.notice else { return vec![] };
        match n.job_ids.as_slice() {
            [] => vec![],
            [one] => {
                let id = one.clone();
                self.popups
                    .push(Popup::Job(Box::new(popups::job::State::new(id))));
                vec![]
            }
            ids => {
                // Exactly the notification's jobs, however old or many the others.
                let q = JobsQuery {
                    status: StatusFilter::Any,
                    range: TimeRange::All,
                    job_ids: ids.to_vec(),
                    ..Default::default()
                };
                self.tab = Tab::Jobs;
                self.jobs.drill_down(q.clone());
                vec![Effect::Jobs(q)]
            }
        }
    }

    fn on_mouse(&mut self, m: MouseEvent) -> Vec<Effect> {
        if !self.mouse {
            self.dirty = false;
            return vec![];
        }
        let down = match m.kind {
            MouseEventKind::ScrollDown => Some(true),
            MouseEventKind::ScrollUp => Some(false),
            _ => None,
        };
        if !self.popups.is_empty() {
            if let Some(down) = down {
                let code = if down {
                    crossterm::event::KeyCode::Down
                } else {
                    crossterm::event::KeyCode::Up
                };
                return self.on_key(KeyEvent::new(code, crossterm::event::KeyModifiers::NONE));
            }
            return vec![];
        }
        if let Some(down) = down {
            match self.tab {
                Tab::Registered => self.registered.table.scroll(down, &self.data),
                Tab::Protected => self.protected.table.scroll(down, &self.data),
                Tab::Jobs => {
                    let q = self.jobs.scroll(down, &self.data);
                    return q.map(|q| vec![Effect::Jobs(q)]).unwrap_or_default();
                }
                Tab::Policies => self.policies.scroll(down, &self.data, self.now),
                Tab::Dashboard => {}
            }
            return vec![];
        }
        if m.kind != MouseEventKind::Down(MouseButton::Left) {
            self.dirty = false;
            return vec![];
        }
        let hit = self
            .tab_areas
            .borrow()
            .iter()
            .find(|(r, _)| {
                m.column >= r.x
                    && m.column < r.x + r.width
                    && m.row >= r.y
                    && m.row < r.y + r.height
            })
            .map(|(_, t)| *t);
        if let Some(t) = hit {
            return self.goto(t);
        }
        let mut cx = cx!(self);
        match self.tab {
            Tab::Registered => self.registered.table.click(m.column, m.row, &mut cx),
            Tab::Protected => self.protected.table.click(m.column, m.row, &mut cx),
            Tab::Jobs => self.jobs.click(m.column, m.row, &mut cx),
            Tab::Policies => self.policies.click(m.column, m.row, &mut cx),
            Tab::Dashboard => self.dashboard.click(m.column, m.row, &mut cx),
        }
        let r = Self::take(cx);
        self.apply(r)
    }

    /// The keys of the current view, for the help popup.
    pub fn help_entries(&self) -> Vec<(String, String)> {
        let mut actions: Vec<Action> = match self.popups.last() {
            Some(p) => p.actions(),
            None => match self.tab {
                Tab::Dashboard => tabs::dashboard::ACTIONS.to_vec(),
                Tab::Registered => tabs::registered::ACTIONS.to_vec(),
                Tab::Protected => tabs::protected::ACTIONS.to_vec(),
                Tab::Jobs => tabs::jobs::ACTIONS.to_vec(),
                Tab::Policies => tabs::policies::ACTIONS.to_vec(),
            },
        };
        if self.popups.is_empty() {
            actions.extend_from_slice(GLOBAL_ACTIONS);
        }
        actions.push(Action::Help);
        let mut seen = HashSet::new();
        let mut entries: Vec<(String, String)> = actions
            .into_iter()
            .filter(|a| seen.insert(*a))
            .map(|a| (self.keys.labels(a), a.help().to_string()))
            .collect();
        if let Some(p) = self.popups.last() {
            entries.extend(p.fixed_keys());
        }
        entries
    }

    /// The few keys the footer shows for the current view.
    pub fn footer_actions(&self) -> Vec<Action> {
        match self.popups.last() {
            Some(p) => p.footer(),
            None => {
                let mut v = match self.tab {
                    Tab::Dashboard => tabs::dashboard::FOOTER.to_vec(),
                    Tab::Registered => self.registered.footer(),
                    Tab::Protected => self.protected.footer(&self.data),
                    Tab::Jobs => self.jobs.footer(&self.data, &self.running),
                    Tab::Policies => tabs::policies::FOOTER.to_vec(),
                };
                if self.vault.as_ref().is_some_and(|v| v.free) {
                    v.insert(0, Action::TakeOver);
                }
                v.extend_from_slice(&[Action::Help, Action::Quit]);
                v
            }
        }
    }
}

struct CxResult {
    effects: Vec<Effect>,
    nav: Nav,
    goto: Option<Tab>,
    notice: Option<(NoticeLevel, String)>,
    jobs_query: Option<JobsQuery>,
}

/// Keys that work in every tab.
pub const GLOBAL_ACTIONS: &[Action] = &[
    Action::NextTab,
    Action::PrevTab,
    Action::TabDashboard,
    Action::TabRegistered,
    Action::TabProtected,
    Action::TabJobs,
    Action::TabPolicies,
    Action::ViewJobs,
    Action::SwitchVault,
    Action::VaultKeys,
    Action::TakeOver,
    Action::Refresh,
    Action::Help,
    Action::Quit,
];

pub fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}
