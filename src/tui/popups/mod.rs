//! Popups: one file each. A popup gets every key while it is on top; the stack lets one
//! open another (an item's details open the restore dialog) and Esc go back.

pub mod backup_now;
pub mod confirm;
pub mod help;
pub mod item;
pub mod job;
pub mod locked;
pub mod message;
pub mod policy_form;
pub mod policy_wizard;
pub mod protect;
pub mod register;
pub mod restore;
pub mod resume;
pub mod stop;
pub mod vault_keys;
pub mod vaults;

use super::app::{App, Cx, Effect};
use super::data::Data;
use super::keys::Action;
use crossterm::event::KeyEvent;
use ratatui::layout::Rect;
use ratatui::Frame;

pub enum Popup {
    Help(help::State),
    Register(register::State),
    Protect(Box<protect::State>),
    PolicyWizard(Box<policy_wizard::State>),
    BackupNow(backup_now::State),
    Item(Box<item::State>),
    Restore(Box<restore::State>),
    Stop(stop::State),
    Resume(resume::State),
    Confirm(confirm::State),
    Job(Box<job::State>),
    Vaults(vaults::State),
    VaultKeys(Box<vault_keys::State>),
    Locked(locked::State),
    Message(message::State),
}

impl Popup {
    pub fn handle_key(&mut self, k: &KeyEvent, cx: &mut Cx) {
        match self {
            Popup::Help(s) => s.handle_key(k, cx),
            Popup::Register(s) => s.handle_key(k, cx),
            Popup::Protect(s) => s.handle_key(k, cx),
            Popup::PolicyWizard(s) => s.handle_key(k, cx),
            Popup::BackupNow(s) => s.handle_key(k, cx),
            Popup::Item(s) => s.handle_key(k, cx),
            Popup::Restore(s) => s.handle_key(k, cx),
            Popup::Stop(s) => s.handle_key(k, cx),
            Popup::Resume(s) => s.handle_key(k, cx),
            Popup::Confirm(s) => s.handle_key(k, cx),
            Popup::Job(s) => s.handle_key(k, cx),
            Popup::Vaults(s) => s.handle_key(k, cx),
            Popup::VaultKeys(s) => s.handle_key(k, cx),
            Popup::Locked(s) => s.handle_key(k, cx),
            Popup::Message(s) => s.handle_key(k, cx),
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, app: &App) {
        match self {
            Popup::Help(s) => s.draw(f, area, app),
            Popup::Register(s) => s.draw(f, area, app),
            Popup::Protect(s) => s.draw(f, area, app),
            Popup::PolicyWizard(s) => s.draw(f, area, app),
            Popup::BackupNow(s) => s.draw(f, area, app),
            Popup::Item(s) => s.draw(f, area, app),
            Popup::Restore(s) => s.draw(f, area, app),
            Popup::Stop(s) => s.draw(f, area, app),
            Popup::Resume(s) => s.draw(f, area, app),
            Popup::Confirm(s) => s.draw(f, area, app),
            Popup::Job(s) => s.draw(f, area, app),
            Popup::Vaults(s) => s.draw(f, area, app),
            Popup::VaultKeys(s) => s.draw(f, area, app),
            Popup::Locked(s) => s.draw(f, area, app),
            Popup::Message(s) => s.draw(f, area, app),
        }
    }

    /// The keys this popup knows (help).
    pub fn actions(&self) -> Vec<Action> {
        use Action::*;
        match self {
            Popup::Help(_) => vec![Filter, Up, Down, Back],
            Popup::Register(_) => vec![Up, Down, Toggle, SelectAll, Filter, Open, Back],
            Popup::Protect(s) => s.actions(),
            Popup::PolicyWizard(s) => s.actions(),
            Popup::BackupNow(_) => vec![Open, Back],
            Popup::Item(_) => vec![
                Up,
                Down,
                Restore,
                BackupNow,
                StopProtection,
                ResumeProtection,
                Undelete,
                Back,
            ],
            Popup::Restore(_) => vec![Up, Down, Left, Right, Open, Back],
            Popup::Stop(_) => vec![Up, Down, Open, Back],
            Popup::Resume(_) => vec![Up, Down, Open, Back],
            Popup::Confirm(_) => vec![Back],
            Popup::Job(_) => vec![Up, Down, CancelJob, Back],
            Popup::Vaults(_) => vec![Up, Down, Open, Back],
            Popup::VaultKeys(_) => vec![Up, Down, Back],
            Popup::Locked(_) => vec![Open, SwitchVault, Quit],
            Popup::Message(_) => vec![Up, Down, Back],
        }
    }

    /// What the help calls it ("Keys · Restore").
    pub fn name(&self) -> &'static str {
        match self {
            Popup::Help(_) => "Help",
            Popup::Register(_) => "Register items",
            Popup::Protect(_) => "Protect",
            Popup::PolicyWizard(_) => "Policy",
            Popup::BackupNow(_) => "Back up now",
            Popup::Item(_) => "Item details",
            Popup::Restore(_) => "Restore",
            Popup::Stop(_) => "Stop protection",
            Popup::Resume(_) => "Resume protection",
            Popup::Confirm(_) => "Question",
            Popup::Job(_) => "Job details",
            Popup::Vaults(_) => "Vaults",
            Popup::VaultKeys(_) => "Vault keys",
            Popup::Locked(_) => "Vault in use",
            Popup::Message(_) => "Message",
        }
    }

    /// Keys type text now (a search, a filter or a text field has the focus): a key that
    /// types a character is that character, not an action.
    pub fn capturing_text(&self) -> bool {
        match self {
            Popup::Help(_) | Popup::BackupNow(_) => true,
            Popup::Register(s) => s.picker.filter.typing,
            Popup::Protect(s) => s.capturing_text(),
            Popup::PolicyWizard(s) => s.capturing_text(),
            Popup::Restore(s) => s.capturing_text(),
            Popup::VaultKeys(s) => s.capturing_text(),
            Popup::Item(_)
            | Popup::Stop(_)
            | Popup::Resume(_)
            | Popup::Confirm(_)
            | Popup::Job(_)
            | Popup::Vaults(_)
            | Popup::Locked(_)
            | Popup::Message(_) => false,
        }
    }

    /// Keys of this popup that are no actions of the key map, for the help.
    pub fn fixed_keys(&self) -> Vec<(String, String)> {
        let pair = |k: &str, d: &str| (k.to_string(), d.to_string());
        match self {
            Popup::Confirm(_) => vec![
                pair("y", "Yes"),
                pair("n / Esc / Enter", "No (Enter never answers yes)"),
            ],
            Popup::Restore(_) => vec![
                pair("Tab / Shift-Tab", "Next / previous field"),
                pair("y", "Start the restore (Enter asks first)"),
                pair("n / Esc", "Back to the form from the question"),
            ],
            Popup::Locked(_) => vec![pair("o", "Open the vault read-only")],
            Popup::VaultKeys(_) => vec![
                pair("a", "Add a passphrase slot (typed twice, never shown)"),
                pair("x", "Remove the selected key slot (asks first)"),
                pair(
                    "Tab / Shift-Tab",
                    "Next / previous field while adding a passphrase",
                ),
                pair("Enter", "Add the passphrase typed"),
            ],
            _ => vec![],
        }
    }

    /// The keys the footer shows.
    pub fn footer(&self) -> Vec<Action> {
        use Action::*;
        match self {
            Popup::Help(_) => vec![Back],
            Popup::Register(_) => vec![Toggle, SelectAll, Filter, Open, Back],
            Popup::Protect(s) => s.footer(),
            Popup::PolicyWizard(s) => s.footer(),
            Popup::BackupNow(_) => vec![Open, Back],
            Popup::Item(s) => s.footer(),
            Popup::Restore(s) if s.confirming => vec![],
            Popup::Restore(_) => vec![Up, Left, Open, Back],
            Popup::Stop(_) | Popup::Resume(_) | Popup::Vaults(_) => vec![Up, Open, Back],
            Popup::VaultKeys(_) => vec![Up, Back],
            // Its y/n hints come first (view.rs); they include Esc.
            Popup::Confirm(_) => vec![],
            Popup::Job(s) => s.footer(),
            Popup::Locked(_) => vec![Open, SwitchVault, Quit],
            Popup::Message(_) => vec![Back],
        }
    }

    /// A y/n question is asked (the footer shows its keys).
    pub fn asks(&self) -> bool {
        match self {
            Popup::Confirm(_) => true,
            Popup::Restore(s) => s.confirming,
            _ => false,
        }
    }

    /// What a newly opened popup needs loaded.
    pub fn wants(&mut self) -> Vec<Effect> {
        match self {
            Popup::Item(s) => s.wants(),
            Popup::Job(s) => s.wants(),
            Popup::Restore(s) => s.wants(),
            Popup::VaultKeys(s) => s.wants(),
            _ => vec![],
        }
    }

    /// A new snapshot arrived.
    pub fn data_changed(&mut self, data: &Data, region: &str) {
        match self {
            Popup::Register(s) => s.refresh(data, region),
            Popup::Protect(s) => s.refresh(data, region),
            Popup::Item(s) => s.refresh(data),
            _ => {}
        }
    }
}
