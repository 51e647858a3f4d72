//! A one-line text input (filters, names, times, folders).

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::style::Style;
use ratatui::text::{Line, Span};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextInput {
    pub value: String,
    /// Cursor position in characters.
    pub cursor: usize,
}

impl TextInput {
    pub fn new(value: impl Into<String>) -> TextInput {
        let value = value.into();
        let cursor = value.chars().count();
        TextInput { value, cursor }
    }

    pub fn set(&mut self, value: impl Into<String>) {
        *self = TextInput::new(value);
    }

    fn byte_at(&self, char_idx: usize) -> usize {
        self.value
            .char_indices()
            .nth(char_idx)
            .map(|(i, _)| i)
            .unwrap_or(self.value.len())
    }

    /// Applies an editing key; returns true when the key was an edit (or cursor move).
    pub fn handle(&mut self, k: &KeyEvent) -> bool {
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        match k.code {
            KeyCode::Char('u') if ctrl => {
                self.value.clear();
                self.cursor = 0;
            }
            KeyCode::Char('w') if ctrl => {
                let before: Vec<char> = self.value.chars().take(self.cursor).collect();
                let mut i = before.len();
                while i > 0 && before[i - 1] == ' ' {
                    i -= 1;
                }
                while i > 0 && before[i - 1] != ' ' {
                    i -= 1;
                }
                let (a, b) = (self.byte_at(i), self.byte_at(self.cursor));
                self.value.replace_range(a..b, "");
                self.cursor = i;
            }
            KeyCode::Char(c) if !ctrl && !k.modifiers.contains(KeyModifiers::ALT) => {
                let at = self.byte_at(self.cursor);
                self.value.insert(at, c);
                self.cursor += 1;
            }
            KeyCode::Backspace => {
                if self.cursor > 0 {
                    let at = self.byte_at(self.cursor - 1);
                    self.value.remove(at);
                    self.cursor -= 1;
                }
            }
            KeyCode::Delete => {
                if self.cursor < self.value.chars().count() {
                    let at = self.byte_at(self.cursor);
                    self.value.remove(at);
                }
            }
            KeyCode::Left => self.cursor = self.cursor.saturating_sub(1),
            KeyCode::Right => self.cursor = (self.cursor + 1).min(self.value.chars().count()),
            KeyCode::Home => self.cursor = 0,
            KeyCode::End => self.cursor = self.value.chars().count(),
            _ => return false,
        }
        true
    }

    /// The value with a block cursor when `focused`.
    pub fn line(&self, focused: bool, style: Style, cursor_style: Style) -> Line<'static> {
        if !focused {
            return Line::from(Span::styled(self.value.clone(), style));
        }
        let chars: Vec<char> = self.value.chars().collect();
        let before: String = chars[..self.cursor.min(chars.len())].iter().collect();
        let at: String = chars
            .get(self.cursor)
            .map(|c| c.to_string())
            .unwrap_or_else(|| " ".into());
        let after: String = chars
            .get(self.cursor + 1..)
            .map(|s| s.iter().collect())
            .unwrap_or_default();
        Line::from(vec![
            Span::styled(before, style),
            Span::styled(at, cursor_style),
            Span::styled(after, style),
        ])
    }
}

/// The text filter of a list, the same everywhere (item tables, Jobs, the Register popup):
/// the filter key starts typing; Enter ends it and keeps the text; Esc ends it and clears
/// the text; ↑/↓ end it and move in the list.
#[derive(Debug, Clone, Default)]
pub struct FilterInput {
    pub text: TextInput,
    /// Keys go to the text.
    pub typing: bool,
}

/// What [`FilterInput::handle`] did with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterKey {
    /// Not typing: the key is the list's.
    NotTyping,
    /// Typed (or typing ended): the key is used up.
    Used,
    /// Typing ended on ↑/↓: the list should still move.
    EndedOnMove,
}

impl FilterInput {
    pub fn value(&self) -> &str {
        &self.text.value
    }

    pub fn set(&mut self, value: impl Into<String>) {
        self.text.set(value);
    }

    pub fn start(&mut self) {
        self.typing = true;
    }

    pub fn handle(&mut self, k: &KeyEvent) -> FilterKey {
        if !self.typing {
            return FilterKey::NotTyping;
        }
        match k.code {
            KeyCode::Enter => self.typing = false,
            KeyCode::Esc => {
                self.typing = false;
                self.text.set("");
            }
            KeyCode::Up | KeyCode::Down => {
                self.typing = false;
                return FilterKey::EndedOnMove;
            }
            _ => {
                self.text.handle(k);
            }
        }
        FilterKey::Used
    }

    /// `web▏` while typing, `web` after; None without a filter.
    pub fn shown(&self) -> Option<String> {
        (self.typing || !self.text.value.is_empty())
            .then(|| format!("{}{}", self.text.value, if self.typing { "▏" } else { "" }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn edits_at_the_cursor() {
        let mut t = TextInput::new("web");
        t.handle(&k(KeyCode::Left));
        t.handle(&k(KeyCode::Char('X')));
        assert_eq!(t.value, "weXb");
        t.handle(&k(KeyCode::Backspace));
        t.handle(&k(KeyCode::End));
        t.handle(&k(KeyCode::Char('ü')));
        assert_eq!(t.value, "webü");
        t.handle(&k(KeyCode::Backspace));
        assert_eq!(t.value, "web");
        t.handle(&KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
        assert_eq!(t.value, "");
        assert!(!t.handle(&k(KeyCode::Enter)));
    }

    #[test]
    fn filter_keys_are_the_same_everywhere() {
        let mut f = FilterInput::default();
        assert_eq!(f.handle(&k(KeyCode::Char('w'))), FilterKey::NotTyping);
        assert_eq!(f.shown(), None);
        f.start();
        assert_eq!(f.shown().as_deref(), Some("▏"));
        for c in "web".chars() {
            assert_eq!(f.handle(&k(KeyCode::Char(c))), FilterKey::Used);
        }
        assert_eq!(f.shown().as_deref(), Some("web▏"));
        assert_eq!(f.handle(&k(KeyCode::Enter)), FilterKey::Used);
        assert_eq!((f.value(), f.typing), ("web", false));
        assert_eq!(f.shown().as_deref(), Some("web"));
        f.start();
        assert_eq!(f.handle(&k(KeyCode::Down)), FilterKey::EndedOnMove);
        assert_eq!((f.value(), f.typing), ("web", false));
        f.start();
        assert_eq!(f.handle(&k(KeyCode::Esc)), FilterKey::Used);
        assert_eq!((f.value(), f.typing, f.shown()), ("", false, None));
    }
}
