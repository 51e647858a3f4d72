//! Fitting text into columns: one way to cut ([`truncate`], [`fit_line`]: always with
//! "…", measured in display columns, so a wide character never overflows) and one way to
//! wrap ([`wrap`]: continuation lines start under the text of their line, not at column 0).
//! Tables, labels and popups use these instead of letting the terminal cut silently.

use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// The mark of cut text.
pub const ELLIPSIS: &str = "…";

/// Display columns of `s`.
pub fn width(s: &str) -> usize {
    UnicodeWidthStr::width(s)
}

fn char_width(c: char) -> usize {
    UnicodeWidthChar::width(c).unwrap_or(0)
}

/// The longest prefix of `s` that fits in `cols` columns.
fn prefix(s: &str, cols: usize) -> &str {
    let mut used = 0;
    for (i, c) in s.char_indices() {
        used += char_width(c);
        if used > cols {
            return &s[..i];
        }
    }
    s
}

/// `s` cut to `cols` display columns, ending with "…" when something was cut.
pub fn truncate(s: &str, cols: usize) -> String {
    if width(s) <= cols {
        return s.to_string();
    }
    if cols == 0 {
        return String::new();
    }
    let mut out = prefix(s, cols - 1).to_string();
    out.push_str(ELLIPSIS);
    out
}

/// `line` cut to `cols` display columns, its last visible span ending with "…" when
/// something was cut (styles kept).
pub fn fit_line(line: Line<'_>, cols: usize) -> Line<'static> {
    let total: usize = line.spans.iter().map(|s| width(&s.content)).sum();
    let mut spans = Vec::new();
    if total <= cols {
        spans.extend(
            line.spans
                .iter()
                .map(|s| Span::styled(s.content.to_string(), s.style)),
        );
    } else if cols > 0 {
        let mut left = cols - 1;
        let mut last_style = line.spans.first().map(|s| s.style).unwrap_or_default();
        for s in &line.spans {
            let part = prefix(&s.content, left);
            left -= width(part);
            if !part.is_empty() {
                last_style = s.style;
                spans.push(Span::styled(part.to_string(), s.style));
            }
            if part.len() < s.content.len() {
                break;
            }
        }
        spans.push(Span::styled(ELLIPSIS, last_style));
    }
    let mut out = Line::from(spans).style(line.style);
    out.alignment = line.alignment;
    out
}

/// Marks that start a list entry: continuation lines go under the entry's text.
const BULLETS: [&str; 5] = ["- ", "• ", "→ ", "✗ ", "* "];

/// Where the text of a line starts: after its leading blanks and its label (the leading
/// spans that end in a blank, such as `"Message       "` or `"▶ "`, when text follows
/// them) and a list bullet.
fn hanging_indent(line: &Line) -> usize {
    let mut indent = 0;
    let n = line.spans.len();
    for (i, s) in line.spans.iter().enumerate() {
        if i + 1 < n && s.content.ends_with(' ') {
            indent += width(&s.content);
            continue;
        }
        let text = s.content.trim_start_matches(' ');
        indent += s.content.len() - text.len();
        if let Some(b) = BULLETS.iter().find(|b| text.starts_with(**b)) {
            indent += width(b);
        }
        break;
    }
    indent
}

/// `lines` wrapped to `cols` columns at blanks (a word longer than a line is cut where it
/// must be); continuation lines start under the text of their line (after its indent,
/// label or bullet), or at column 0 when that would leave too little room.
pub fn wrap(lines: Vec<Line<'_>>, cols: usize) -> Vec<Line<'static>> {
    let cols = cols.max(1);
    let mut out = Vec::new();
    for line in lines {
        let total: usize = line.spans.iter().map(|s| width(&s.content)).sum();
        if total <= cols {
            out.push(fit_line(line, cols));
            continue;
        }
        let mut indent = hanging_indent(&line);
        if cols.saturating_sub(indent) < 12.min(cols) {
            indent = 0;
        }
        let mut w = Wrapper {
            cols,
            indent,
            style: line.style,
            current: Vec::new(),
            used: 0,
            continuation: false,
            out: &mut out,
        };
        for s in &line.spans {
            for token in split_keep_blanks(&s.content) {
                w.add(token, s.style);
            }
        }
        if w.current.iter().any(|s| !s.content.trim().is_empty()) {
            w.break_line();
        }
    }
    out
}

/// The line being filled by [`wrap`].
struct Wrapper<'o> {
    cols: usize,
    indent: usize,
    style: ratatui::style::Style,
    current: Vec<Span<'static>>,
    used: usize,
    continuation: bool,
    out: &'o mut Vec<Line<'static>>,
}

impl Wrapper<'_> {
    fn start(&self) -> usize {
        if self.continuation {
            self.indent
        } else {
            0
        }
    }

    fn break_line(&mut self) {
        // No blanks at the end of a wrapped line.
        while let Some(last) = self.current.last_mut() {
            let t = last.content.trim_end_matches(' ').to_string();
            if t.is_empty() {
                self.current.pop();
            } else {
                last.content = t.into();
                break;
            }
        }
        let spans = std::mem::take(&mut self.current);
        self.out.push(Line::from(spans).style(self.style));
        self.continuation = true;
        self.used = self.indent;
        if self.indent > 0 {
            self.current.push(Span::raw(" ".repeat(self.indent)));
        }
    }

    fn add(&mut self, token: &str, style: ratatui::style::Style) {
        let blank = token.starts_with(' ');
        let mut rest = token;
        while !rest.is_empty() {
            let w = width(rest);
            let at_start = self.used == self.start();
            if blank && at_start && self.continuation {
                return;
            }
            if self.used + w <= self.cols {
                self.current.push(Span::styled(rest.to_string(), style));
                self.used += w;
                return;
            }
            if blank {
                self.break_line();
                return;
            }
            if !at_start && w <= self.cols - self.indent {
                self.break_line();
                continue;
            }
            // A word longer than a line: cut it (at least one character per line).
            let room = self.cols.saturating_sub(self.used).max(1);
            let mut head = prefix(rest, room);
            if head.is_empty() {
                head = rest
                    .char_indices()
                    .nth(1)
                    .map(|(i, _)| &rest[..i])
                    .unwrap_or(rest);
            }
            self.current.push(Span::styled(head.to_string(), style));
            rest = &rest[head.len()..];
            self.break_line();
        }
    }
}

/// A paragraph of `lines` wrapped by [`wrap`] for an area `cols` wide: every wrapped text
/// of the console goes through here.
pub fn wrapped<'a>(lines: Vec<Line<'a>>, cols: u16) -> Paragraph<'static> {
    Paragraph::new(wrap(lines, cols as usize))
}

/// Draws `lines` wrapped in `area`, scrolled (when they do not fit) so that the lines
/// `focus` — a range of `lines`, such as a form's focused field — are in view.
pub fn render_scrolled(
    f: &mut ratatui::Frame,
    area: ratatui::layout::Rect,
    lines: Vec<Line<'_>>,
    focus: Option<std::ops::Range<usize>>,
) {
    let mut out = Vec::new();
    let mut visual = None;
    for (i, line) in lines.into_iter().enumerate() {
        let start = out.len();
        out.extend(wrap(vec![line], area.width as usize));
        if let Some(r) = &focus {
            if i == r.start {
                visual = Some((start, out.len()));
            }
            if i + 1 == r.end {
                visual = visual.map(|(s, _)| (s, out.len()));
            }
        }
    }
    let height = area.height as usize;
    let offset = match visual {
        Some((start, end)) if end > height => (end - height).min(start),
        _ => 0,
    };
    f.render_widget(
        Paragraph::new(out).scroll((offset.min(u16::MAX as usize) as u16, 0)),
        area,
    );
}

/// `"a  b c"` → `["a", "  ", "b", " ", "c"]`.
fn split_keep_blanks(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut blank = None;
    for (i, c) in s.char_indices() {
        let b = c == ' ';
        if blank != Some(b) {
            if i > start {
                out.push(&s[start..i]);
            }
            start = i;
            blank = Some(b);
        }
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::style::{Color, Style};

    fn texts(lines: &[Line]) -> Vec<String> {
        lines
            .iter()
            .map(|l| l.spans.iter().map(|s| s.content.as_ref()).collect())
            .collect()
    }

    #[test]
    fn truncation_marks_the_cut_and_counts_columns() {
        assert_eq!(truncate("shared-infra/dc01", 10), "shared-in…");
        assert_eq!(truncate("web01", 5), "web01");
        assert_eq!(truncate("web01", 0), "");
        // Wide characters take two columns: never one too many.
        assert_eq!(truncate("日本語のVM", 6), "日本…");
        assert!(width(&truncate("日本語のVM", 6)) <= 6);
        let l = fit_line(
            Line::from(vec![
                Span::styled("Backup ", Style::default().fg(Color::Red)),
                Span::raw("sales/web01"),
            ]),
            12,
        );
        assert_eq!(texts(std::slice::from_ref(&l)), ["Backup sale…"]);
        assert_eq!(l.spans.last().map(|s| s.style), Some(Style::default()));
    }

    #[test]
    fn continuation_lines_start_under_their_text() {
        let lines = wrap(
            vec![Line::from(vec![
                Span::raw("Message       "),
                Span::raw("the VM was not found at the source at the last discovery"),
            ])],
            40,
        );
        let t = texts(&lines);
        assert_eq!(t[0], "Message       the VM was not found at");
        for l in &t[1..] {
            assert!(
                l.starts_with("              ") && !l.starts_with("               "),
                "{t:?}"
            );
        }
        let words = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        assert_eq!(
            words(&t.join(" ")),
            words("Message the VM was not found at the source at the last discovery")
        );
        // Plain text keeps its own indent.
        let t = texts(&wrap(
            vec![Line::from("  - a list entry that wraps around")],
            16,
        ));
        assert_eq!(t, ["  - a list entry", "    that wraps", "    around"]);
        // A word longer than the line is cut, nothing lost.
        let t = texts(&wrap(
            vec![Line::from("/a/very/long/path/without/blanks")],
            10,
        ));
        assert_eq!(t.concat(), "/a/very/long/path/without/blanks");
        assert!(t.iter().all(|l| width(l) <= 10), "{t:?}");
    }
}
