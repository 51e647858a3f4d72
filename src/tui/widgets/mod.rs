//! Widgets the views share: a table that renders only its visible rows, a text input, a
//! progress cell, a bar chart drawn with block characters, popup frames and key hints.

pub mod bars;
pub mod input;
pub mod progress;
pub mod table;
pub mod text;
pub mod wizard;

pub use input::{FilterInput, FilterKey, TextInput};
pub use table::{render_table, Column, TableNav};
pub use text::truncate;

use crate::tui::theme::Theme;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Borders, Clear};
use ratatui::Frame;

/// A rectangle of `w`×`h` centred in `area` (clipped to it).
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    let [v] = Layout::vertical([Constraint::Length(h)])
        .flex(Flex::Center)
        .areas(area);
    let [r] = Layout::horizontal([Constraint::Length(w)])
        .flex(Flex::Center)
        .areas(v);
    r
}

/// Clears `area` and draws a popup frame titled `title`; returns the inner area.
pub fn popup_frame(f: &mut Frame, area: Rect, title: &str, theme: &Theme) -> Rect {
    f.render_widget(Clear, area);
    let block = Block::default()
        .borders(Borders::ALL)
        .border_type(BorderType::Rounded)
        .border_style(theme.accent())
        .title(Span::styled(
            format!(
                " {} ",
                truncate(title, area.width.saturating_sub(4) as usize)
            ),
            theme.title(),
        ));
    let inner = block.inner(area);
    f.render_widget(block, area);
    inner
}

/// A bordered panel with a title.
pub fn panel<'a>(title: impl Into<String>, theme: &Theme) -> Block<'a> {
    Block::default()
        .borders(Borders::ALL)
        .border_type(BorderType::Rounded)
        .border_style(theme.border())
        .title(Span::styled(format!(" {} ", title.into()), theme.title()))
}

/// `key label  key label …` for footers and popup hints.
pub fn key_hints<'a>(hints: &[(String, &'a str)], theme: &Theme) -> Line<'a> {
    let mut spans = Vec::new();
    for (i, (k, label)) in hints.iter().enumerate() {
        if i > 0 {
            spans.push(Span::raw("  "));
        }
        spans.push(Span::styled(k.clone(), theme.key()));
        spans.push(Span::raw(" "));
        spans.push(Span::raw(*label));
    }
    Line::from(spans)
}

/// `[x]` / `[ ]` check boxes.
pub fn check(on: bool) -> &'static str {
    if on {
        "[x]"
    } else {
        "[ ]"
    }
}

/// `(•)` / `( )` radio buttons.
pub fn radio(on: bool) -> &'static str {
    if on {
        "(•)"
    } else {
        "( )"
    }
}

/// Spinner frames (braille), advanced by the tick while something runs.
pub const SPINNER: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];
