//! The progress cell of a running job: a bar, the percent, the rate and the time left.

use crate::engine::JobProgress;
use crate::fmt;
use crate::tui::theme::Theme;
use ratatui::text::{Line, Span};

/// A bar of `width` cells for `fraction` (0..=1), drawn with eighth blocks.
pub fn bar(fraction: f64, width: usize) -> (String, String) {
    let f = fraction.clamp(0.0, 1.0);
    let eighths = (f * width as f64 * 8.0).round() as usize;
    let full = eighths / 8;
    let rest = eighths % 8;
    let mut done = "█".repeat(full.min(width));
    let mut used = full.min(width);
    if rest > 0 && used < width {
        done.push(['▏', '▎', '▍', '▌', '▋', '▊', '▉'][rest - 1]);
        used += 1;
    }
    (done, "░".repeat(width - used))
}

/// `███▌░░░░  45%  85.3 MiB/s  1m 20s left` fitted into `width` columns.
pub fn progress_line(
    p: Option<&JobProgress>,
    bytes_done: u64,
    bytes_total: u64,
    width: usize,
    theme: &Theme,
) -> Line<'static> {
    let (done, total, rate, eta) = match p {
        Some(p) => (p.bytes_done, p.bytes_total, Some(p.rate), p.eta_seconds()),
        None => (bytes_done, bytes_total, None, None),
    };
    let fraction = if total == 0 {
        0.0
    } else {
        done as f64 / total as f64
    };
    let pct = format!("{:>3.0}%", (fraction * 100.0).min(100.0));
    let mut tail = String::new();
    if let Some(r) = rate.filter(|r| *r > 0.0) {
        tail.push_str(&format!("  {}", fmt::rate(r)));
    }
    if let Some(e) = eta {
        tail.push_str(&format!("  {} left", fmt::duration_secs(e)));
    }
    // Bar takes what is left after the percent (and the tail when there is room).
    let mut bar_w = width.saturating_sub(pct.len() + 1);
    let mut show_tail = false;
    if bar_w >= tail.chars().count() + 6 {
        bar_w -= tail.chars().count();
        show_tail = true;
    }
    bar_w = bar_w.min(30);
    let (a, b) = bar(fraction, bar_w);
    let mut spans = vec![
        Span::styled(a, theme.running()),
        Span::styled(b, theme.muted()),
        Span::raw(" "),
        Span::raw(pct),
    ];
    if show_tail {
        spans.push(Span::styled(tail, theme.muted()));
    }
    Line::from(spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_fill_by_eighths() {
        assert_eq!(bar(0.0, 4), (String::new(), "░░░░".into()));
        assert_eq!(bar(1.0, 4), ("████".into(), String::new()));
        assert_eq!(bar(0.5, 4), ("██".into(), "░░".into()));
        let (a, b) = bar(0.3, 4);
        assert_eq!(a.chars().count() + b.chars().count(), 4);
        assert_eq!(bar(7.0, 3).0, "███");
    }
}
