//! Key bindings: the console's actions, their default keys, and the `[tui.keys]` overrides
//! of the configuration.
//!
//! Every action has a stable snake_case name (the config key) and one or more keys. An
//! override replaces the action's default keys; unknown action names and keys that cannot
//! be parsed are collected as warnings (shown in the console), never errors: a typo in a
//! key binding must not keep anyone from their backups.
//!
//! Which action a key means depends on where it is pressed (`s` sorts a table but stops
//! protection in an item's details): each view asks [`KeyMap::is`] for the actions it
//! knows, so the same key can serve different actions in different views.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::collections::BTreeMap;

macro_rules! actions {
    ($($variant:ident => $name:literal, [$($key:literal),*], $help:literal;)+) => {
        /// Something a key does.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Action { $($variant),+ }

        impl Action {
            pub const ALL: &'static [Action] = &[$(Action::$variant),+];
            /// The name used in `[tui.keys]`.
            pub fn name(self) -> &'static str {
                match self { $(Action::$variant => $name),+ }
            }
            /// What the action does, for the help popup.
            pub fn help(self) -> &'static str {
                match self { $(Action::$variant => $help),+ }
            }
            fn default_keys(self) -> &'static [&'static str] {
                match self { $(Action::$variant => &[$($key),*]),+ }
            }
            pub fn from_name(name: &str) -> Option<Action> {
                Self::ALL.iter().copied().find(|a| a.name() == name)
            }
        }
    };
}

actions! {
    Quit => "quit", ["q", "ctrl-c"], "Quit (asks first when jobs are running)";
    Help => "help", ["?", "f1"], "Show the keys of this view (F1 also while typing)";
    NextTab => "next_tab", ["tab"], "Next tab";
    PrevTab => "prev_tab", ["backtab"], "Previous tab";
    TabDashboard => "tab_dashboard", ["1"], "Go to Dashboard";
    TabRegistered => "tab_registered", ["2"], "Go to Registered Items";
    TabProtected => "tab_protected", ["3"], "Go to Protected Items";
    TabJobs => "tab_jobs", ["4"], "Go to Jobs";
    TabPolicies => "tab_policies", ["5"], "Go to Policies";
    Up => "up", ["up", "k"], "Move up";
    Down => "down", ["down", "j"], "Move down";
    Left => "left", ["left", "h"], "Move left / previous choice";
    Right => "right", ["right", "l"], "Move right / next choice";
    PageUp => "page_up", ["pageup"], "Page up";
    PageDown => "page_down", ["pagedown"], "Page down";
    Top => "top", ["home", "g"], "First row";
    Bottom => "bottom", ["end", "G"], "Last row";
    Open => "open", ["enter"], "Open / confirm";
    Back => "back", ["esc"], "Back / close";
    Toggle => "toggle", ["space"], "Toggle the selection";
    SelectAll => "select_all", ["a"], "Select all / none";
    Filter => "filter", ["/"], "Filter by text";
    Sort => "sort", ["s"], "Sort by the next column";
    SortReverse => "sort_reverse", ["S"], "Reverse the sort order";
    Discover => "discover", ["d"], "Discover virtual machines";
    Register => "register", ["r"], "Register items";
    Protect => "protect", ["p"], "Protect items (wizard)";
    BackupNow => "backup_now", ["b"], "Back up now";
    CancelJob => "cancel_job", ["c"], "Cancel the selected job";
    SwitchVault => "switch_vault", ["v"], "Switch vault";
    VaultKeys => "vault_keys", ["K"], "Vault keys: key slots, add a passphrase, the key file";
    TakeOver => "take_over", ["T"], "Take over a read-only vault whose owner has left";
    Restore => "restore", ["R"], "Restore a recovery point";
    StopProtection => "stop_protection", ["s"], "Stop protection";
    ResumeProtection => "resume_protection", ["u"], "Resume protection";
    Undelete => "undelete", ["U"], "Undelete soft-deleted data";
    NewPolicy => "new_policy", ["n"], "Create a policy";
    EditPolicy => "edit_policy", ["e"], "Edit the selected policy (schedule and retention)";
    DeletePolicy => "delete_policy", ["x"], "Delete the selected policy (when unused)";
    ViewJobs => "view_jobs", ["J"], "View the jobs of the last notification";
    FilterStatus => "filter_status", ["f"], "Jobs: next status filter";
    FilterOperation => "filter_operation", ["o"], "Jobs: next operation filter";
    FilterTime => "filter_time", ["t"], "Jobs: next time range (24 h, 7 d, 30 d, all)";
    ClearFilters => "clear_filters", ["X"], "Jobs: clear every filter";
    Workload => "workload", ["w"], "Registered Items: workload type";
    Refresh => "refresh", ["ctrl-r"], "Reload from the vault";
}

impl Action {
    /// A word or two for the footer.
    pub fn short(self) -> &'static str {
        match self {
            Action::Quit => "Quit",
            Action::Help => "Help",
            Action::NextTab | Action::PrevTab => "Tab",
            Action::Up | Action::Down => "Move",
            Action::Left | Action::Right => "Choose",
            Action::Open => "Open",
            Action::Back => "Back",
            Action::Toggle => "Select",
            Action::SelectAll => "All",
            Action::Filter => "Filter",
            Action::Sort => "Sort",
            Action::SortReverse => "Reverse",
            Action::Discover => "Discover",
            Action::Register => "Register",
            Action::Protect => "Protect",
            Action::BackupNow => "Back up now",
            Action::CancelJob => "Cancel job",
            Action::SwitchVault => "Vault",
            Action::VaultKeys => "Keys",
            Action::TakeOver => "Take over",
            Action::Restore => "Restore",
            Action::StopProtection => "Stop protection",
            Action::ResumeProtection => "Resume",
            Action::Undelete => "Undelete",
            Action::NewPolicy => "New policy",
            Action::EditPolicy => "Edit",
            Action::DeletePolicy => "Delete",
            Action::ViewJobs => "View jobs",
            Action::FilterStatus => "Status",
            Action::FilterOperation => "Operation",
            Action::FilterTime => "Time range",
            Action::ClearFilters => "Clear filters",
            Action::Workload => "Workload",
            Action::Refresh => "Reload",
            Action::PageUp | Action::PageDown => "Page",
            Action::Top | Action::Bottom => "Ends",
            Action::TabDashboard
            | Action::TabRegistered
            | Action::TabProtected
            | Action::TabJobs
            | Action::TabPolicies => "Tab",
        }
    }
}

/// A key with its modifiers, as a binding names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeySpec {
    pub code: KeyCode,
    pub mods: KeyModifiers,
}

impl KeySpec {
    /// Parses `"d"`, `"R"`, `"enter"`, `"ctrl-c"`, `"alt-x"`, `"shift-tab"`, `"f5"`.
    pub fn parse(s: &str) -> Option<KeySpec> {
        let s = s.trim();
        if s.chars().count() == 1 {
            let c = s.chars().next()?;
            return Some(KeySpec {
                code: KeyCode::Char(c),
                mods: KeyModifiers::NONE,
            });
        }
        let mut mods = KeyModifiers::NONE;
        let mut rest = s;
        loop {
            let lower = rest.to_ascii_lowercase();
            if let Some(r) = lower
                .strip_prefix("ctrl-")
                .or_else(|| lower.strip_prefix("ctrl+"))
            {
                mods |= KeyModifiers::CONTROL;
                rest = &rest[rest.len() - r.len()..];
            } else if let Some(r) = lower
                .strip_prefix("alt-")
                .or_else(|| lower.strip_prefix("alt+"))
            {
                mods |= KeyModifiers::ALT;
                rest = &rest[rest.len() - r.len()..];
            } else if let Some(r) = lower
                .strip_prefix("shift-")
                .or_else(|| lower.strip_prefix("shift+"))
            {
                mods |= KeyModifiers::SHIFT;
                rest = &rest[rest.len() - r.len()..];
            } else {
                break;
            }
        }
        if rest.chars().count() == 1 {
            let c = rest.chars().next()?;
            return Some(KeySpec {
                code: KeyCode::Char(c),
                mods,
            });
        }
        let code = match rest.to_ascii_lowercase().as_str() {
            "enter" | "return" => KeyCode::Enter,
            "esc" | "escape" => KeyCode::Esc,
            "tab" if mods.contains(KeyModifiers::SHIFT) => {
                mods.remove(KeyModifiers::SHIFT);
                KeyCode::BackTab
            }
            "tab" => KeyCode::Tab,
            "backtab" => KeyCode::BackTab,
            "space" => KeyCode::Char(' '),
            "up" => KeyCode::Up,
            "down" => KeyCode::Down,
            "left" => KeyCode::Left,
            "right" => KeyCode::Right,
            "pageup" | "pgup" => KeyCode::PageUp,
            "pagedown" | "pgdn" => KeyCode::PageDown,
            "home" => KeyCode::Home,
            "end" => KeyCode::End,
            "backspace" => KeyCode::Backspace,
            "delete" | "del" => KeyCode::Delete,
            "insert" | "ins" => KeyCode::Insert,
            f if f.starts_with('f') => {
                let n: u8 = f[1..].parse().ok()?;
                if !(1..=12).contains(&n) {
                    return None;
                }
                KeyCode::F(n)
            }
            _ => return None,
        };
        Some(KeySpec { code, mods })
    }

    /// Whether a pressed key is this one. Shift is implied by an upper-case character and
    /// ignored for characters (terminals disagree about reporting it).
    pub fn matches(&self, k: &KeyEvent) -> bool {
        let relevant = KeyModifiers::CONTROL | KeyModifiers::ALT;
        match (self.code, k.code) {
            (KeyCode::Char(a), KeyCode::Char(b)) => {
                let same = if self.mods.contains(KeyModifiers::CONTROL) {
                    a.eq_ignore_ascii_case(&b)
                } else {
                    a == b
                };
                same && (k.modifiers & relevant) == (self.mods & relevant)
            }
            (a, b) => a == b && (k.modifiers & relevant) == (self.mods & relevant),
        }
    }

    /// How the key is written in the footer and the help.
    pub fn label(&self) -> String {
        let mut s = String::new();
        if self.mods.contains(KeyModifiers::CONTROL) {
            s.push_str("Ctrl-");
        }
        if self.mods.contains(KeyModifiers::ALT) {
            s.push_str("Alt-");
        }
        let base = match self.code {
            KeyCode::Char(' ') => "Space".to_string(),
            KeyCode::Char(c) => c.to_string(),
            KeyCode::Enter => "Enter".into(),
            KeyCode::Esc => "Esc".into(),
            KeyCode::Tab => "Tab".into(),
            KeyCode::BackTab => "Shift-Tab".into(),
            KeyCode::Up => "↑".into(),
            KeyCode::Down => "↓".into(),
            KeyCode::Left => "←".into(),
            KeyCode::Right => "→".into(),
            KeyCode::PageUp => "PgUp".into(),
            KeyCode::PageDown => "PgDn".into(),
            KeyCode::Home => "Home".into(),
            KeyCode::End => "End".into(),
            KeyCode::Backspace => "Backspace".into(),
            KeyCode::Delete => "Del".into(),
            KeyCode::Insert => "Ins".into(),
            KeyCode::F(n) => format!("F{n}"),
            other => format!("{other:?}"),
        };
        s.push_str(&base);
        s
    }
}

/// The bindings in force.
#[derive(Debug, Clone)]
pub struct KeyMap {
    keys: BTreeMap<Action, Vec<KeySpec>>,
}

impl Default for KeyMap {
    fn default() -> Self {
        let keys = Action::ALL
            .iter()
            .map(|a| {
                (
                    *a,
                    a.default_keys()
                        .iter()
                        .filter_map(|k| KeySpec::parse(k))
                        .collect(),
                )
            })
            .collect();
        KeyMap { keys }
    }
}

impl KeyMap {
    /// Defaults with `overrides` (`[tui.keys]`) applied; returns the warnings to show.
    /// A value may name several keys separated by spaces (`down = "down j"`).
    pub fn from_config(overrides: &BTreeMap<String, String>) -> (KeyMap, Vec<String>) {
        let mut map = KeyMap::default();
        let mut warnings = Vec::new();
        for (name, value) in overrides {
            let Some(action) = Action::from_name(name.trim()) else {
                warnings.push(format!(
                    "[tui.keys]: unknown action \"{name}\" ignored; actions are listed in config.example.toml (e.g. discover, backup_now, quit)"
                ));
                continue;
            };
            let mut specs = Vec::new();
            for part in value.split_whitespace() {
                match KeySpec::parse(part) {
                    Some(k) => specs.push(k),
                    None => warnings.push(format!(
                        "[tui.keys]: {name} = \"{value}\": \"{part}\" is not a key (use a character, or a name such as enter, esc, tab, space, up, pageup, f5, with ctrl-/alt-/shift-); kept the default"
                    )),
                }
            }
            if !specs.is_empty() {
                map.keys.insert(action, specs);
            }
        }
        (map, warnings)
    }

    /// Whether `k` is bound to `action`.
    pub fn is(&self, action: Action, k: &KeyEvent) -> bool {
        self.keys
            .get(&action)
            .is_some_and(|v| v.iter().any(|s| s.matches(k)))
    }

    /// Whether any action is bound to `k`.
    pub fn binds(&self, k: &KeyEvent) -> bool {
        self.keys.values().flatten().any(|s| s.matches(k))
    }

    /// The keys a key event stands for. A terminal sends Esc as a lone ESC byte and Alt+key
    /// as ESC then the key, so an Esc typed just before another key arrives as Alt+key
    /// (crossterm cannot tell them apart). The console binds no Alt key unless the config
    /// does; an Alt+key bound to nothing is read as what it most likely was, as terminal
    /// apps do: Esc, then the key.
    pub fn unfold_escape(&self, k: KeyEvent) -> Vec<KeyEvent> {
        if !k.modifiers.contains(KeyModifiers::ALT) || self.binds(&k) {
            return vec![k];
        }
        let mut esc = KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE);
        esc.kind = k.kind;
        let mut key = k;
        key.modifiers.remove(KeyModifiers::ALT);
        vec![esc, key]
    }

    /// The first key of an action, as shown to people.
    pub fn label(&self, action: Action) -> String {
        self.keys
            .get(&action)
            .and_then(|v| v.first())
            .map(|k| k.label())
            .unwrap_or_else(|| "—".into())
    }

    /// Every key of an action, as shown in the help (`↓ / j`).
    pub fn labels(&self, action: Action) -> String {
        match self.keys.get(&action) {
            Some(v) if !v.is_empty() => v.iter().map(|k| k.label()).collect::<Vec<_>>().join(" / "),
            _ => "—".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
    }

    #[test]
    fn parses_names_and_modifiers() {
        assert_eq!(KeySpec::parse("enter").unwrap().code, KeyCode::Enter);
        let c = KeySpec::parse("ctrl-q").unwrap();
        assert_eq!(c.code, KeyCode::Char('q'));
        assert!(c.mods.contains(KeyModifiers::CONTROL));
        assert_eq!(KeySpec::parse("shift-tab").unwrap().code, KeyCode::BackTab);
        assert_eq!(KeySpec::parse("f5").unwrap().code, KeyCode::F(5));
        assert!(KeySpec::parse("f13").is_none());
        assert!(KeySpec::parse("hyper-x").is_none());
        assert_eq!(KeySpec::parse("space").unwrap().code, KeyCode::Char(' '));
    }

    #[test]
    fn overrides_replace_defaults_and_unknown_names_warn() {
        let mut o = BTreeMap::new();
        o.insert("discover".to_string(), "D".to_string());
        o.insert("dicsover".to_string(), "x".to_string());
        o.insert("quit".to_string(), "ctrl-q bogus-key".to_string());
        let (map, warnings) = KeyMap::from_config(&o);
        assert!(map.is(Action::Discover, &key('D')));
        assert!(!map.is(Action::Discover, &key('d')));
        assert!(map.is(
            Action::Quit,
            &KeyEvent::new(KeyCode::Char('q'), KeyModifiers::CONTROL)
        ));
        assert!(!map.is(Action::Quit, &key('q')));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings.iter().any(|w| w.contains("dicsover")));
        assert!(warnings.iter().any(|w| w.contains("bogus-key")));
    }

    #[test]
    fn an_unbound_alt_key_is_esc_then_the_key() {
        let alt = |c: KeyCode| KeyEvent::new(c, KeyModifiers::ALT);
        let map = KeyMap::default();
        assert_eq!(
            map.unfold_escape(alt(KeyCode::Char('4'))),
            [KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE), key('4')]
        );
        assert_eq!(
            map.unfold_escape(alt(KeyCode::Enter))[1],
            KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)
        );
        // Ctrl stays: Esc then Ctrl-C (quit).
        let ctrl_alt_c = KeyEvent::new(
            KeyCode::Char('c'),
            KeyModifiers::ALT | KeyModifiers::CONTROL,
        );
        assert!(map.is(Action::Quit, &map.unfold_escape(ctrl_alt_c)[1]));
        assert_eq!(map.unfold_escape(key('4')), [key('4')]);
        // An Alt key the config binds is that key.
        let mut o = BTreeMap::new();
        o.insert("refresh".to_string(), "alt-r".to_string());
        let (map, _) = KeyMap::from_config(&o);
        assert_eq!(
            map.unfold_escape(alt(KeyCode::Char('r'))),
            [alt(KeyCode::Char('r'))]
        );
    }

    #[test]
    fn ctrl_does_not_match_plain_characters() {
        let map = KeyMap::default();
        assert!(map.is(
            Action::Quit,
            &KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)
        ));
        assert!(!map.is(
            Action::CancelJob,
            &KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)
        ));
        assert!(map.is(
            Action::Restore,
            &KeyEvent::new(KeyCode::Char('R'), KeyModifiers::SHIFT)
        ));
    }
}

#[cfg(test)]
mod example_config {
    use super::*;

    /// The `# name = "value"` lines of a `[section]` of config.example.toml.
    fn commented(section: &str) -> BTreeMap<String, String> {
        let text = include_str!("../../config.example.toml");
        let mut out = BTreeMap::new();
        let mut inside = false;
        for line in text.lines() {
            let l = line.trim();
            if l.starts_with('[') {
                inside = l == format!("[{section}]");
                continue;
            }
            if !inside {
                continue;
            }
            let Some(rest) = l.strip_prefix("# ") else {
                continue;
            };
            // Only `# key = "value"` lines: prose comments have spaces in the "key".
            let Some((k, v)) = rest.split_once(" = ") else {
                continue;
            };
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let Some(v) = v.strip_prefix('"').and_then(|v| v.split_once('"')) else {
                continue;
            };
            out.insert(k.to_string(), v.0.to_string());
        }
        out
    }

    #[test]
    fn config_example_lists_every_action_with_its_default_keys() {
        let listed = commented("tui.keys");
        let names: Vec<&str> = Action::ALL.iter().map(|a| a.name()).collect();
        for n in &names {
            assert!(
                listed.contains_key(*n),
                "config.example.toml [tui.keys] does not list {n}"
            );
        }
        for k in listed.keys() {
            assert!(
                names.contains(&k.as_str()),
                "config.example.toml [tui.keys] lists {k}, which is no action"
            );
        }
        // The values shown are the defaults, and parse without warnings.
        let (map, warnings) = KeyMap::from_config(&listed);
        assert!(warnings.is_empty(), "{warnings:?}");
        let defaults = KeyMap::default();
        for a in Action::ALL {
            assert_eq!(
                map.labels(*a),
                defaults.labels(*a),
                "{}: the example shows other keys than the default",
                a.name()
            );
        }
    }

    #[test]
    fn config_example_lists_every_colour_role() {
        let listed = commented("tui.theme");
        let roles: Vec<&str> = crate::tui::theme::ROLES.iter().map(|r| r.0).collect();
        for r in &roles {
            assert!(
                listed.contains_key(*r),
                "config.example.toml [tui.theme] does not list {r}"
            );
        }
        let (_, warnings) = crate::tui::theme::Theme::from_config(&listed, false);
        assert!(warnings.is_empty(), "{warnings:?}");
    }
}
