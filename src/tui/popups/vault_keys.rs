//! Keys (`K`): the key slots of the open vault, where its key file is, and the warning that
//! losing every key loses the backups. `a` adds a passphrase slot (typed twice, shown as
//! dots, wiped from memory when the form closes), `x` removes the selected slot after
//! asking. The slots are loaded, and slots added or removed, by the engine off the UI task;
//! the engine refuses what would leave the vault without a way in, and says why.

use super::{confirm, Popup};
use crate::engine::KeysOverview;
use crate::fmt;
use crate::tui::app::{App, Command, Cx, Effect};
use crate::tui::keys::Action;
use crate::tui::widgets::text::wrapped;
use crate::tui::widgets::{centered, key_hints, popup_frame, TextInput};
use crate::vault::keys::{Secret, SlotKind};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

/// The passphrase form: two masked fields and a label.
#[derive(Debug, Default)]
pub struct AddForm {
    pub passphrase: Secret,
    pub repeat: Secret,
    pub label: TextInput,
    /// 0 passphrase, 1 repeat, 2 label.
    pub field: usize,
    /// Why Enter did not add (empty, or the two differ).
    pub problem: Option<&'static str>,
}

impl AddForm {
    fn new() -> AddForm {
        AddForm {
            label: TextInput::new("passphrase"),
            ..AddForm::default()
        }
    }

    /// The passphrase to add, or why not.
    fn checked(&self) -> Result<&Secret, &'static str> {
        if self.passphrase.is_empty() {
            Err("Type a passphrase: an empty one protects nothing")
        } else if self.passphrase != self.repeat {
            Err("The two passphrases differ; type the same one twice")
        } else {
            Ok(&self.passphrase)
        }
    }
}

#[derive(Debug, Default)]
pub struct State {
    /// The vault's keys, once loaded (or why they could not be).
    pub loaded: Option<Result<KeysOverview, String>>,
    pub selected: usize,
    /// Adding a passphrase: the form.
    pub form: Option<AddForm>,
    /// A command was sent; its answer reloads the list.
    pub pending: bool,
    asked: bool,
}

impl State {
    pub fn new() -> State {
        State::default()
    }

    /// Keys type into the form while it is open.
    pub fn capturing_text(&self) -> bool {
        self.form.is_some()
    }

    /// What to load when opened (once).
    pub fn wants(&mut self) -> Vec<Effect> {
        if self.asked {
            return vec![];
        }
        self.asked = true;
        vec![Effect::LoadKeys]
    }

    pub fn loaded(&mut self, r: &Result<KeysOverview, String>) {
        if let Ok(k) = r {
            self.selected = self.selected.min(k.slots.len().saturating_sub(1));
        }
        self.loaded = Some(r.clone());
    }

    /// A command's answer arrived: the form (and its secrets) goes, the list reloads.
    pub fn command_done(&mut self) -> Vec<Effect> {
        self.pending = false;
        self.form = None;
        vec![Effect::LoadKeys]
    }

    fn overview(&self) -> Option<&KeysOverview> {
        self.loaded.as_ref().and_then(|r| r.as_ref().ok())
    }

    pub fn handle_key(&mut self, k: &KeyEvent, cx: &mut Cx) {
        if self.pending {
            if cx.keys.is(Action::Back, k) {
                cx.close();
            }
            return;
        }
        if self.form.is_some() {
            self.form_key(k, cx);
            return;
        }
        let keys = cx.keys;
        let n = self.overview().map(|o| o.slots.len()).unwrap_or(0);
        let encrypted = self.overview().is_some_and(|o| o.encrypted);
        if keys.is(Action::Up, k) {
            self.selected = self.selected.saturating_sub(1);
        } else if keys.is(Action::Down, k) {
            self.selected = (self.selected + 1).min(n.saturating_sub(1));
        } else if keys.is(Action::Back, k) {
            cx.close();
        } else if k.code == KeyCode::Char('a') && encrypted {
            if cx.writable("Add passphrase") {
                self.form = Some(AddForm::new());
            }
        } else if k.code == KeyCode::Char('x') && encrypted {
            let Some(slot) = self.overview().and_then(|o| o.slots.get(self.selected)) else {
                return;
            };
            if !cx.writable("Remove key slot") {
                return;
            }
            let lines = vec![
                format!(
                    "Remove key slot {} ({}, \"{}\")?",
                    slot.id,
                    slot.kind,
                    fmt::escape(&slot.label)
                ),
                match slot.kind {
                    SlotKind::Passphrase => {
                        "Its passphrase will no longer open the vault.".to_string()
                    }
                    SlotKind::Keyfile => {
                        "Its key file will no longer open the vault.".to_string()
                    }
                },
                String::new(),
                "The last slot, and the one that opened the vault while no other way in remains, are never removed.".into(),
            ];
            cx.push(Popup::Confirm(
                confirm::State::new(
                    "Remove key slot",
                    lines,
                    vec![Effect::Run(Command::RemoveKeySlot(slot.id.clone()))],
                    true,
                )
                .keep_below(),
            ));
        }
    }

    fn form_key(&mut self, k: &KeyEvent, cx: &mut Cx) {
        let Some(form) = self.form.as_mut() else {
            return;
        };
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        match k.code {
            KeyCode::Esc => self.form = None,
            KeyCode::Tab | KeyCode::Down => form.field = (form.field + 1) % 3,
            KeyCode::BackTab | KeyCode::Up => form.field = (form.field + 2) % 3,
            KeyCode::Enter => match form.checked() {
                Ok(pass) => {
                    if cx.writable("Add passphrase") {
                        let label = form.label.value.trim();
                        cx.run(Command::AddPassphrase {
                            passphrase: pass.clone(),
                            label: if label.is_empty() {
                                "passphrase".into()
                            } else {
                                label.to_string()
                            },
                        });
                        self.pending = true;
                    }
                }
                Err(why) => form.problem = Some(why),
            },
            _ if form.field == 2 => {
                form.label.handle(k);
            }
            KeyCode::Char('u') if ctrl => {
                form.problem = None;
                secret_of(form).clear();
            }
            KeyCode::Char(c) if !ctrl && !k.modifiers.contains(KeyModifiers::ALT) => {
                form.problem = None;
                secret_of(form).push(c);
            }
            KeyCode::Backspace => {
                form.problem = None;
                secret_of(form).pop();
            }
            _ => {}
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, app: &App) {
        let t = &app.theme;
        let w = 86.min(area.width.saturating_sub(2));
        let h = 22.min(area.height.saturating_sub(1));
        let r = centered(area, w, h);
        let title = match (self.overview(), &self.form) {
            (Some(o), None) => format!("Keys · {}", o.vault),
            (Some(o), Some(_)) => format!("Keys · {} · add a passphrase", o.vault),
            (None, _) => "Keys".to_string(),
        };
        let inner = popup_frame(f, r, &title, t);
        let [body, foot] =
            Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(inner);
        let k = &app.keys;
        let mut hints: Vec<(String, &str)> = Vec::new();
        let lines = match (&self.loaded, &self.form) {
            (None, _) => vec![Line::styled("Loading the key slots…", t.muted())],
            (Some(Err(e)), _) => vec![
                Line::styled("The key slots cannot be read:", t.error()),
                Line::from(e.clone()),
            ],
            (Some(Ok(o)), _) if !o.encrypted => {
                let why = if o.format == 1 {
                    "a format v1 vault, made before vaults were encrypted"
                } else {
                    "made with encryption = \"none\""
                };
                vec![
                    Line::styled(
                        format!("Vault {} is not encrypted ({why}).", o.vault),
                        t.warning(),
                    ),
                    Line::from(""),
                    Line::from("It has no keys: whoever can read its folder can read its backups."),
                ]
            }
            (Some(Ok(_)), Some(form)) => {
                if !self.pending {
                    hints.push(("Tab".into(), "next field"));
                    hints.push((k.label(Action::Open), "add"));
                }
                self.form_lines(form, app)
            }
            (Some(Ok(o)), None) => {
                if !self.pending {
                    hints.push(("a".into(), "add passphrase"));
                    if !o.slots.is_empty() {
                        hints.push(("x".into(), "remove slot"));
                    }
                }
                self.list_lines(o, app, body.width as usize)
            }
        };
        hints.push((
            k.label(Action::Back),
            if self.form.is_some() && !self.pending {
                "back"
            } else {
                "close"
            },
        ));
        f.render_widget(wrapped(lines, body.width), body);
        f.render_widget(Paragraph::new(key_hints(&hints, t)), foot);
    }

    fn list_lines(&self, o: &KeysOverview, app: &App, width: usize) -> Vec<Line<'static>> {
        let t = &app.theme;
        let mut lines = vec![
            Line::from(
                "Encrypted (AES-256-GCM). Each key slot holds the vault's master key wrapped by a passphrase or a key file; any one of them opens the vault.",
            ),
            Line::from(""),
        ];
        // Every column but the label has a fixed width; the label gets what is left.
        let label_w = width
            .saturating_sub(2 + 16 + 2 + 10 + 2 + 2 + 10 + 2 + 16)
            .clamp(8, 30);
        lines.push(Line::styled(
            format!(
                "  {:<16}  {:<10}  {:<label_w$}  {:<10}  OPENS WITH",
                "SLOT", "KIND", "LABEL", "CREATED"
            ),
            t.header(),
        ));
        if o.slots.is_empty() {
            lines.push(Line::styled(
                "  No key slot: the vault was opened with its paper key. Add one now (a).",
                t.warning(),
            ));
        }
        for (i, s) in o.slots.iter().enumerate() {
            let opens = match s.kind {
                SlotKind::Keyfile if s.opened_by_key_file => "the key file",
                SlotKind::Keyfile => "another key file",
                SlotKind::Passphrase => "a passphrase",
            };
            let label = crate::tui::widgets::truncate(&fmt::escape(&s.label), label_w);
            let text = format!(
                "{} {:<16}  {:<10}  {:<label_w$}  {:<10}  {opens}",
                if i == self.selected { "▶" } else { " " },
                s.id,
                s.kind.to_string(),
                label,
                s.created.format("%Y-%m-%d"),
            );
            lines.push(if i == self.selected {
                Line::styled(text, t.selected())
            } else {
                Line::from(text)
            });
        }
        for problem in &o.unreadable {
            lines.push(Line::styled(
                format!("  ⚠ {problem}: it opens nothing (remove it if it is not a key slot)"),
                t.warning(),
            ));
        }
        lines.push(Line::from(""));
        let key_file = match &o.key_file {
            Some(p) if o.key_file_exists => p.display().to_string(),
            Some(p) => format!("{} (missing)", p.display()),
            None => "none configured".into(),
        };
        lines.push(Line::from(vec![
            Span::styled("Key file: ", t.header()),
            Span::raw(key_file),
        ]));
        if let Some(w) = &o.opened_with {
            lines.push(Line::from(vec![
                Span::styled("Opened with: ", t.header()),
                Span::raw(w.clone()),
            ]));
        }
        lines.push(Line::from(""));
        lines.push(Line::styled(
            "⚠ Losing every key — the key file, each passphrase and the paper key (`vmvault key export --paper`) — loses the backups: nobody can read them.",
            t.warning().add_modifier(Modifier::BOLD),
        ));
        lines
    }

    fn form_lines(&self, form: &AddForm, app: &App) -> Vec<Line<'static>> {
        let t = &app.theme;
        let field = |i: usize, name: &str, value: String| -> Line<'static> {
            let focused = form.field == i && !self.pending;
            let mut spans = vec![Span::styled(format!("{name:<17}"), t.header())];
            spans.push(Span::raw(value));
            if focused {
                spans.push(Span::styled(
                    " ",
                    t.selected().add_modifier(Modifier::REVERSED),
                ));
            }
            Line::from(spans)
        };
        let dots = |s: &Secret| "•".repeat(s.chars());
        let mut lines = vec![
            Line::from(
                "A passphrase slot opens the vault with the passphrase alone (Argon2id, 64 MiB). Type it twice; it is never shown.",
            ),
            Line::from(""),
            field(0, "New passphrase:", dots(&form.passphrase)),
            field(1, "Repeat:", dots(&form.repeat)),
            field(2, "Label:", form.label.value.clone()),
            Line::from(""),
        ];
        if self.pending {
            lines.push(Line::styled(
                "Adding the passphrase slot (Argon2id takes a moment)…",
                t.running(),
            ));
        } else if let Some(p) = form.problem {
            lines.push(Line::styled(p.to_string(), t.error()));
        } else {
            lines.push(Line::styled(
                "Whoever knows it can read every backup of the vault; without it (and without the key file and the paper key) nobody can.",
                t.muted(),
            ));
        }
        lines
    }
}

/// The masked field that has the focus.
fn secret_of(form: &mut AddForm) -> &mut Secret {
    if form.field == 1 {
        &mut form.repeat
    } else {
        &mut form.passphrase
    }
}
