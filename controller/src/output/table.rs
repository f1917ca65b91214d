//! Plain-text tables for terminals: column widths from the visible text (colour codes
//! do not count), left-aligned, two spaces between columns.

use std::io::IsTerminal as _;

use crate::output::escape::one_line;

/// Whether to colour output: stdout is a terminal and `NO_COLOR` is not set.
pub fn use_colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    Plain,
    Good,
    Warn,
    Bad,
    Dim,
}

/// One cell: text plus how to colour it.
#[derive(Clone, Debug)]
pub struct Cell {
    pub text: String,
    pub tone: Tone,
}

impl Cell {
    pub fn new(text: impl Into<String>, tone: Tone) -> Cell {
        Cell {
            text: text.into(),
            tone,
        }
    }
}

impl From<&str> for Cell {
    fn from(s: &str) -> Cell {
        Cell::new(s, Tone::Plain)
    }
}

impl From<String> for Cell {
    fn from(s: String) -> Cell {
        Cell::new(s, Tone::Plain)
    }
}

pub fn paint(text: &str, tone: Tone, colour: bool) -> String {
    let code = match tone {
        Tone::Plain => return text.to_string(),
        _ if !colour => return text.to_string(),
        Tone::Good => "32",
        Tone::Warn => "33",
        Tone::Bad => "1;31",
        Tone::Dim => "2",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// Renders `rows` under `header`.
///
/// Cell text is shown through [`one_line`]: cells hold what agents and requests said
/// (lock reasons, refs, check output), which must not reach the terminal raw.
pub fn render(header: &[&str], rows: &[Vec<Cell>], colour: bool) -> String {
    let shown: Vec<Vec<Cell>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|cell| Cell::new(one_line(&cell.text).into_owned(), cell.tone))
                .collect()
        })
        .collect();
    let rows = &shown[..];
    let cols = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(cell.text.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: Vec<(String, Tone)>| {
        let last = cells.len().saturating_sub(1);
        for (i, (text, tone)) in cells.into_iter().enumerate() {
            let pad = widths[i].saturating_sub(text.chars().count());
            out.push_str(&paint(&text, tone, colour));
            if i < last {
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push('\n');
    };
    line(
        &mut out,
        header.iter().map(|h| (h.to_string(), Tone::Dim)).collect(),
    );
    for row in rows {
        line(
            &mut out,
            row.iter().map(|c| (c.text.clone(), c.tone)).collect(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_on_visible_width() {
        let rows = vec![
            vec![Cell::new("web-1", Tone::Bad), "x".into()],
            vec!["a".into(), "yy".into()],
        ];
        let text = render(&["HOST", "V"], &rows, true);
        let plain = render(&["HOST", "V"], &rows, false);
        assert_eq!(plain, "HOST   V\nweb-1  x\na      yy\n");
        assert!(text.contains("\x1b[1;31mweb-1\x1b[0m  x"));
    }
}
