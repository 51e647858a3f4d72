//! The frame of a wizard: a full popup with the steps across the top (done, current,
//! to come), the step's content, its problems and its keys.

use super::{key_hints, popup_frame};
use crate::tui::theme::Theme;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

/// The popup area of a wizard: nearly the whole screen, at most 110 columns wide.
pub fn area(screen: Rect) -> Rect {
    // Narrow screens: all of it (a margin would only cost columns).
    let w = if screen.width <= 100 {
        screen.width
    } else {
        (screen.width - 4).min(110)
    };
    let h = if screen.height <= 30 {
        screen.height
    } else {
        screen.height - 2
    };
    super::centered(screen, w, h)
}

/// Draws the frame; returns the area for the step's content. `problems` are shown under
/// the content (red), `hints` at the bottom.
#[allow(clippy::too_many_arguments)]
pub fn draw(
    f: &mut Frame,
    area: Rect,
    title: &str,
    steps: &[&str],
    current: usize,
    problems: &[String],
    hints: &[(String, &str)],
    theme: &Theme,
) -> Rect {
    let inner = popup_frame(f, area, title, theme);
    let mut spans = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        if i > 0 {
            spans.push(Span::styled(" › ", theme.muted()));
        }
        let text = format!("{} {s}", i + 1);
        let style = if i == current {
            theme
                .accent()
                .add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
        } else if i < current {
            theme.ok()
        } else {
            theme.muted()
        };
        spans.push(Span::styled(
            if i < current {
                format!("✓ {s}")
            } else {
                text
            },
            style,
        ));
    }
    // Long problems wrap: give them the room they take.
    let problem_lines = super::text::wrap(
        problems
            .iter()
            .take(6)
            .map(|p| Line::from(Span::styled(format!("✗ {p}"), theme.error())))
            .collect(),
        inner.width as usize,
    );
    let problem_h = problem_lines.len() as u16;
    let [steps_a, _, content, probs, hint_a] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(problem_h.min(inner.height / 3)),
        Constraint::Length(1),
    ])
    .areas(inner);
    f.render_widget(Paragraph::new(Line::from(spans)), steps_a);
    f.render_widget(Paragraph::new(problem_lines), probs);
    f.render_widget(Paragraph::new(key_hints(hints, theme)), hint_a);
    content
}
