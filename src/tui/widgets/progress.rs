//! The progress cell of a running job: a bar, the percent, the rate and the time left.

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

/// How far a running job is, as the console shows it (see `App::job_now`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    /// Bytes per second, when known (live progress only).
    pub rate: Option<f64>,
    /// Seconds left at that rate, when it can be told.
    pub eta: Option<f64>,
}

impl Progress {
    pub fn fraction(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            (self.done as f64 / self.total as f64).clamp(0.0, 1.0)
        }
    }
}

/// The narrowest bar worth drawing beside the rate and the time left.
const MIN_BAR: usize = 4;
/// The widest bar.
const MAX_BAR: usize = 30;

/// `███▌░░░░  45%  85.3 MiB/s  1m 20s left` fitted into `width` columns: the percent
/// always, then the time left, then the rate, each only when a bar of [`MIN_BAR`] still
/// fits beside them; the bar takes the rest.
pub fn progress_line(p: Progress, width: usize, theme: &Theme) -> Line<'static> {
    let pct = format!("{:>3.0}%", p.fraction() * 100.0);
    let eta = p.eta.map(|e| format!("  {} left", fmt::duration_secs(e)));
    let rate = p
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| format!("  {}", fmt::rate(r)));
    let mut used = pct.chars().count() + 1;
    let mut shown = [None, None];
    for (slot, part) in [eta, rate].into_iter().enumerate() {
        if let Some(part) = part {
            let w = part.chars().count();
            if used + w + MIN_BAR <= width {
                used += w;
                shown[slot] = Some(part);
            }
        }
    }
    let (a, b) = bar(p.fraction(), width.saturating_sub(used).min(MAX_BAR));
    let mut spans = vec![
        Span::styled(a, theme.running()),
        Span::styled(b, theme.muted()),
        Span::raw(" "),
        Span::raw(pct),
    ];
    // The rate reads before the time left.
    let [eta, rate] = shown;
    for part in [rate, eta].into_iter().flatten() {
        spans.push(Span::styled(part, theme.muted()));
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

    fn shown(p: Progress, width: usize) -> String {
        progress_line(p, width, &Theme::default())
            .spans
            .iter()
            .map(|s| s.content.as_ref())
            .collect()
    }

    #[test]
    fn the_time_left_and_the_rate_fit_before_the_bar_grows() {
        let p = Progress {
            done: 3 << 30,
            total: 8 << 30,
            rate: Some(85.0 * 1024.0 * 1024.0),
            eta: Some(80.0),
        };
        // Wide: all of it.
        let s = shown(p, 60);
        assert!(
            s.contains("38%") && s.contains("MiB/s") && s.contains("1m 20s left"),
            "{s}"
        );
        // Narrower: the time left stays longest, then only the percent.
        let s = shown(p, 24);
        assert!(
            s.contains("38%") && s.contains("left") && !s.contains("MiB/s"),
            "{s}"
        );
        let s = shown(p, 10);
        assert!(s.contains("38%") && !s.contains("left"), "{s}");
        for w in [0, 1, 5, 10, 24, 34, 60] {
            assert!(
                shown(p, w).chars().count() <= w.max(5),
                "{w}: {}",
                shown(p, w)
            );
        }
    }
}
