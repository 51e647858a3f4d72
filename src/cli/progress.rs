//! A one-line progress bar for long jobs when stdout is a terminal: bytes, rate, time left.

use crate::engine::JobProgress;
use crate::fmt;
use std::io::Write;

pub struct Bar {
    enabled: bool,
    last_len: usize,
    label: String,
}

impl Bar {
    pub fn new(enabled: bool, label: impl Into<String>) -> Bar {
        Bar {
            enabled,
            last_len: 0,
            // The label holds the VM's name: escaped like every name printed.
            label: crate::fmt::escape(&label.into()).into_owned(),
        }
    }

    pub fn draw(&mut self, p: &JobProgress) {
        if !self.enabled {
            return;
        }
        let width = 30usize;
        let frac = if p.bytes_total > 0 {
            (p.bytes_done as f64 / p.bytes_total as f64).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let filled = (frac * width as f64).round() as usize;
        let bar: String = "█".repeat(filled) + &"░".repeat(width - filled);
        let eta = p
            .eta_seconds()
            .map(|s| format!(" {} left", fmt::duration_secs(s)))
            .unwrap_or_default();
        let task = p
            .task
            .as_deref()
            .map(|t| format!("  {t}"))
            .unwrap_or_default();
        let line = format!(
            "{} {bar} {:>5.1}%  {} / {}  {}{eta}{task}",
            self.label,
            frac * 100.0,
            fmt::bytes(p.bytes_done),
            fmt::bytes(p.bytes_total),
            fmt::rate(p.rate),
        );
        let pad = self.last_len.saturating_sub(line.chars().count());
        self.last_len = line.chars().count();
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\r{line}{}", " ".repeat(pad));
        let _ = out.flush();
    }

    /// Removes the bar so the next line starts clean.
    pub fn clear(&mut self) {
        if self.enabled && self.last_len > 0 {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\r{}\r", " ".repeat(self.last_len));
            let _ = out.flush();
            self.last_len = 0;
        }
    }
}
