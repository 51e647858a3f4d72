//! Colours: a theme of named roles (`[tui.theme]` in the configuration), and `NO_COLOR`.
//!
//! Views never name a colour: they ask the theme for a role's style, so a theme (or
//! NO_COLOR, which turns every colour off and keeps only bold/reverse/underline) changes the
//! whole console at once. Meaning never rests on colour alone: statuses are also written out.

use ratatui::style::{Color, Modifier, Style};
use std::collections::BTreeMap;

/// The colour roles a theme can set.
pub const ROLES: &[(&str, &str)] = &[
    ("accent", "titles, the selected tab, keys in the footer"),
    ("ok", "Completed, Protected, Registered"),
    ("warning", "warnings, Cancelling, Not found, pending"),
    ("error", "Failed, errors"),
    ("running", "In progress, progress bars"),
    ("muted", "secondary text, Cancelled"),
    ("selected_bg", "background of the selected row"),
    ("border", "borders of panels"),
];

#[derive(Debug, Clone, PartialEq)]
pub struct Theme {
    pub color: bool,
    pub accent: Color,
    pub ok: Color,
    pub warning: Color,
    pub error: Color,
    pub running: Color,
    pub muted: Color,
    pub selected_bg: Color,
    pub border: Color,
}

impl Default for Theme {
    fn default() -> Self {
        Theme {
            color: true,
            accent: Color::Cyan,
            ok: Color::Green,
            warning: Color::Yellow,
            error: Color::Red,
            running: Color::Blue,
            muted: Color::DarkGray,
            selected_bg: Color::Rgb(0x26, 0x4f, 0x78),
            border: Color::Gray,
        }
    }
}

/// A colour from config: a name (`red`, `darkgray`, `lightblue`, …), `#rrggbb`, or 0..=255.
pub fn parse_color(s: &str) -> Option<Color> {
    let s = s.trim();
    if let Some(hex) = s.strip_prefix('#') {
        if hex.len() == 6 {
            let v = u32::from_str_radix(hex, 16).ok()?;
            return Some(Color::Rgb((v >> 16) as u8, (v >> 8) as u8, v as u8));
        }
        return None;
    }
    if let Ok(n) = s.parse::<u8>() {
        return Some(Color::Indexed(n));
    }
    let c = match s.to_ascii_lowercase().replace(['-', '_', ' '], "").as_str() {
        "black" => Color::Black,
        "red" => Color::Red,
        "green" => Color::Green,
        "yellow" => Color::Yellow,
        "blue" => Color::Blue,
        "magenta" => Color::Magenta,
        "cyan" => Color::Cyan,
        "gray" | "grey" => Color::Gray,
        "darkgray" | "darkgrey" => Color::DarkGray,
        "lightred" => Color::LightRed,
        "lightgreen" => Color::LightGreen,
        "lightyellow" => Color::LightYellow,
        "lightblue" => Color::LightBlue,
        "lightmagenta" => Color::LightMagenta,
        "lightcyan" => Color::LightCyan,
        "white" => Color::White,
        "reset" | "default" => Color::Reset,
        _ => return None,
    };
    Some(c)
}

impl Theme {
    /// The default theme with `overrides` applied; `no_color` (NO_COLOR set) turns colour
    /// off. Returns the warnings to show.
    pub fn from_config(
        overrides: &BTreeMap<String, String>,
        no_color: bool,
    ) -> (Theme, Vec<String>) {
        let mut t = Theme::default();
        let mut warnings = Vec::new();
        for (role, value) in overrides {
            let Some(c) = parse_color(value) else {
                warnings.push(format!(
                    "[tui.theme]: {role} = \"{value}\" is not a colour (use a name such as red or darkgray, #rrggbb, or 0..255); kept the default"
                ));
                continue;
            };
            match role.as_str() {
                "accent" => t.accent = c,
                "ok" => t.ok = c,
                "warning" => t.warning = c,
                "error" => t.error = c,
                "running" => t.running = c,
                "muted" => t.muted = c,
                "selected_bg" => t.selected_bg = c,
                "border" => t.border = c,
                _ => warnings.push(format!(
                    "[tui.theme]: unknown colour role \"{role}\" ignored; roles: {}",
                    ROLES.iter().map(|r| r.0).collect::<Vec<_>>().join(", ")
                )),
            }
        }
        t.color = !no_color;
        (t, warnings)
    }

    /// A theme without colour (NO_COLOR).
    pub fn no_color() -> Theme {
        Theme {
            color: false,
            ..Theme::default()
        }
    }

    fn fg(&self, c: Color) -> Style {
        if self.color {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }

    pub fn accent(&self) -> Style {
        self.fg(self.accent)
    }
    pub fn ok(&self) -> Style {
        self.fg(self.ok)
    }
    pub fn warning(&self) -> Style {
        self.fg(self.warning)
    }
    /// Errors are bold too, so they stand out without colour.
    pub fn error(&self) -> Style {
        self.fg(self.error).add_modifier(Modifier::BOLD)
    }
    pub fn running(&self) -> Style {
        self.fg(self.running)
    }
    pub fn muted(&self) -> Style {
        self.fg(self.muted)
    }
    pub fn border(&self) -> Style {
        self.fg(self.border)
    }
    pub fn title(&self) -> Style {
        self.accent().add_modifier(Modifier::BOLD)
    }
    pub fn key(&self) -> Style {
        self.accent().add_modifier(Modifier::BOLD)
    }
    /// The selected row: a background colour, or reverse video without colour.
    pub fn selected(&self) -> Style {
        if self.color {
            Style::new()
                .bg(self.selected_bg)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::REVERSED)
        }
    }
    /// A focused field in a form.
    pub fn focused(&self) -> Style {
        if self.color {
            Style::new()
                .fg(self.accent)
                .add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
        } else {
            Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
        }
    }
    pub fn header(&self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }

    pub fn job_status(&self, s: crate::model::JobStatus) -> Style {
        use crate::model::JobStatus::*;
        match s {
            Completed => self.ok(),
            CompletedWithWarnings | Cancelling => self.warning(),
            Failed => self.error(),
            InProgress => self.running(),
            Cancelled => self.muted(),
        }
    }

    pub fn protection_state(&self, s: crate::model::ProtectionState) -> Style {
        use crate::model::ProtectionState::*;
        match s {
            Protected => self.ok(),
            IrPending => self.running(),
            ProtectionError => self.error(),
            ProtectionStopped | BackupsSuspended => self.warning(),
            SoftDeleted | NotProtected => self.muted(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_parse_and_bad_ones_warn() {
        assert_eq!(parse_color("#264f78"), Some(Color::Rgb(0x26, 0x4f, 0x78)));
        assert_eq!(parse_color("DarkGray"), Some(Color::DarkGray));
        assert_eq!(parse_color("light-blue"), Some(Color::LightBlue));
        assert_eq!(parse_color("208"), Some(Color::Indexed(208)));
        let mut o = BTreeMap::new();
        o.insert("error".into(), "magenta".into());
        o.insert("eror".into(), "red".into());
        o.insert("ok".into(), "#12".into());
        let (t, w) = Theme::from_config(&o, false);
        assert_eq!(t.error, Color::Magenta);
        assert_eq!(w.len(), 2, "{w:?}");
    }

    #[test]
    fn no_color_has_no_colours() {
        let t = Theme::no_color();
        assert_eq!(t.error().fg, None);
        assert!(t.error().add_modifier.contains(Modifier::BOLD));
        assert!(t.selected().add_modifier.contains(Modifier::REVERSED));
    }
}
