//! Text that came from elsewhere (an agent, a hook, a request: lock reasons, refs, job
//! output, error messages) is made visible before it reaches the terminal, so it cannot
//! move the cursor, clear the screen, retitle the window or hide text. The one function
//! for it is [`visible`]; everything the CLI prints from outside goes through it.
//!
//! ESC is shown as `\e`, other C0 controls and DEL as `\xNN` (`\r` as `\r`), C1
//! controls (U+0080..U+009F) as `\u{NN}`, and the bidirectional overrides and isolates
//! (U+202A..U+202E, U+2066..U+2069) as `\u{NNNN}`. Tab and newline are kept: callers
//! lay out lines themselves.

use std::{borrow::Cow, fmt::Write as _};

fn needs_escape(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with control characters made visible (borrowed when there are none).
pub fn visible(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            _ if !needs_escape(c) => out.push(c),
            '\u{1b}' => out.push_str("\\e"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    Cow::Owned(out)
}

/// [`visible`], and newlines too (as `\n`): for text that must stay on one line.
pub fn one_line(text: &str) -> Cow<'_, str> {
    let shown = visible(text);
    if shown.contains('\n') {
        Cow::Owned(shown.replace('\n', "\\n"))
    } else {
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_shown() {
        assert_eq!(visible("plain text"), "plain text");
        assert!(matches!(visible("plain"), Cow::Borrowed(_)));
        assert_eq!(
            visible("\u{1b}[2J\u{1b}]0;pwned\u{7}"),
            "\\e[2J\\e]0;pwned\\x07"
        );
        assert_eq!(visible("a\tb\nc\rd\u{7f}"), "a\tb\nc\\rd\\x7f");
        assert_eq!(visible("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(visible("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(visible("ünïcødé ✓"), "ünïcødé ✓");
        assert_eq!(one_line("a\nb\u{1b}"), "a\\nb\\e");
    }
}
