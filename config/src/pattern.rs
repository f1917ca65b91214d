//! The small line matcher of `hoist logs --grep`: the controller checks a pattern with
//! it before asking any host, the agent filters lines with it (so `--lines N` counts
//! matching lines). A subset of regular expressions, matched in time linear in the
//! line (a set of states, no backtracking): literals, `.`, classes `[a-z0-9_]` and
//! `[^...]`, `\d \w \s` and `\` escapes, the quantifiers `* + ?`, the anchors `^ $`,
//! alternation `|` of whole patterns, and a leading `(?i)` for case-insensitive.

use std::fmt;

/// The longest pattern accepted, in bytes.
pub const MAX_PATTERN: usize = 256;

/// A parsed `--grep` pattern.
#[derive(Clone, Debug)]
pub struct Pattern {
    branches: Vec<Branch>,
    icase: bool,
}

#[derive(Clone, Debug)]
struct Branch {
    start: bool,
    end: bool,
    pieces: Vec<Piece>,
}

#[derive(Clone, Debug)]
struct Piece {
    atom: Atom,
    optional: bool,
    many: bool,
}

#[derive(Clone, Debug)]
enum Atom {
    Char(char),
    Any,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// Why a pattern is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("the pattern is {0} bytes long; at most {MAX_PATTERN} are allowed")]
    TooLong(usize),
    #[error("the pattern is empty")]
    Empty,
    #[error(
        "{0} is not supported by --grep (it takes literals, . [...] \\d \\w \\s, * + ?, ^ $, | and a leading (?i); escape a literal with \\)"
    )]
    Unsupported(String),
    #[error("unclosed [ in the pattern")]
    UnclosedClass,
    #[error("{0:?} has nothing before it to repeat")]
    NothingToRepeat(char),
    #[error("the pattern ends with a lone \\")]
    TrailingBackslash,
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        if text.len() > MAX_PATTERN {
            return Err(PatternError::TooLong(text.len()));
        }
        let (icase, body) = match text.strip_prefix("(?i)") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        if body.is_empty() {
            return Err(PatternError::Empty);
        }
        let mut branches = vec![];
        let mut chars = body.chars().peekable();
        let mut branch = Branch {
            start: false,
            end: false,
            pieces: vec![],
        };
        while let Some(c) = chars.next() {
            let atom = match c {
                '|' => {
                    branches.push(std::mem::replace(
                        &mut branch,
                        Branch {
                            start: false,
                            end: false,
                            pieces: vec![],
                        },
                    ));
                    continue;
                }
                '^' if branch.pieces.is_empty() && !branch.start => {
                    branch.start = true;
                    continue;
                }
                '$' if matches!(chars.peek(), None | Some('|')) => {
                    branch.end = true;
                    continue;
                }
                '*' | '+' | '?' => {
                    let Some(last) = branch.pieces.last_mut().filter(|p| !p.many && !p.optional)
                    else {
                        return Err(PatternError::NothingToRepeat(c));
                    };
                    last.optional = c != '+';
                    last.many = c != '?';
                    continue;
                }
                '.' => Atom::Any,
                '[' => class(&mut chars)?,
                '\\' => escape(chars.next().ok_or(PatternError::TrailingBackslash)?)?,
                '(' | ')' | '{' | '}' | '^' | '$' => {
                    return Err(PatternError::Unsupported(format!("{c:?}")));
                }
                c => Atom::Char(c),
            };
            branch.pieces.push(Piece {
                atom,
                optional: false,
                many: false,
            });
        }
        branches.push(branch);
        let mut pattern = Pattern { branches, icase };
        if icase {
            for piece in pattern.branches.iter_mut().flat_map(|b| &mut b.pieces) {
                piece.atom = piece.atom.lowered();
            }
        }
        Ok(pattern)
    }

    /// Whether `line` holds a match.
    pub fn is_match(&self, line: &str) -> bool {
        let lowered;
        let line = if self.icase {
            lowered = line.to_lowercase();
            lowered.as_str()
        } else {
            line
        };
        self.branches.iter().any(|b| b.is_match(line))
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} branch(es)", self.branches.len())
    }
}

fn escape(c: char) -> Result<Atom, PatternError> {
    let ranges = match c {
        'd' => vec![('0', '9')],
        'w' => vec![('a', 'z'), ('A', 'Z'), ('0', '9'), ('_', '_')],
        's' => vec![(' ', ' '), ('\t', '\t'), ('\r', '\r'), ('\n', '\n')],
        c if c.is_ascii_alphanumeric() => {
            return Err(PatternError::Unsupported(format!("\\{c}")));
        }
        c => return Ok(Atom::Char(c)),
    };
    Ok(Atom::Class {
        negated: false,
        ranges,
    })
}

fn class(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<Atom, PatternError> {
    let negated = chars.next_if_eq(&'^').is_some();
    let mut ranges = vec![];
    let mut first = true;
    loop {
        let c = chars.next().ok_or(PatternError::UnclosedClass)?;
        if c == ']' && !first {
            break;
        }
        first = false;
        let lo = if c == '\\' {
            match escape(chars.next().ok_or(PatternError::UnclosedClass)?)? {
                Atom::Char(c) => c,
                Atom::Class { ranges: r, .. } => {
                    ranges.extend(r);
                    continue;
                }
                Atom::Any => unreachable!("escape never gives Any"),
            }
        } else {
            c
        };
        if chars.peek() == Some(&'-') {
            chars.next();
            match chars.next().ok_or(PatternError::UnclosedClass)? {
                ']' => {
                    ranges.push((lo, lo));
                    ranges.push(('-', '-'));
                    break;
                }
                hi => ranges.push((lo, hi)),
            }
        } else {
            ranges.push((lo, lo));
        }
    }
    Ok(Atom::Class { negated, ranges })
}

impl Atom {
    fn matches(&self, c: char) -> bool {
        match self {
            Atom::Char(x) => *x == c,
            Atom::Any => true,
            Atom::Class { negated, ranges } => {
                ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated
            }
        }
    }

    fn lowered(&self) -> Atom {
        match self {
            Atom::Char(c) => Atom::Char(c.to_lowercase().next().unwrap_or(*c)),
            Atom::Any => Atom::Any,
            Atom::Class { negated, ranges } => {
                let mut all = ranges.clone();
                for (lo, hi) in ranges {
                    if lo.is_ascii_uppercase() && hi.is_ascii_uppercase() {
                        all.push((lo.to_ascii_lowercase(), hi.to_ascii_lowercase()));
                    }
                }
                Atom::Class {
                    negated: *negated,
                    ranges: all,
                }
            }
        }
    }
}

impl Branch {
    /// A set of states (piece indices; `pieces.len()` accepts) stepped over the line.
    fn is_match(&self, line: &str) -> bool {
        let n = self.pieces.len();
        let mut states = vec![false; n + 1];
        let mut next = vec![false; n + 1];
        let close = |set: &mut Vec<bool>| {
            for i in 0..n {
                if set[i] && self.pieces[i].optional {
                    set[i + 1] = true;
                }
            }
        };
        states[0] = true;
        close(&mut states);
        for c in line.chars() {
            if states[n] && !self.end {
                return true;
            }
            next.iter_mut().for_each(|s| *s = false);
            for i in 0..n {
                if states[i] && self.pieces[i].atom.matches(c) {
                    next[i + 1] = true;
                    if self.pieces[i].many {
                        next[i] = true;
                    }
                }
            }
            if !self.start {
                next[0] = true;
            }
            close(&mut next);
            std::mem::swap(&mut states, &mut next);
        }
        states[n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, line: &str) -> bool {
        Pattern::parse(p).unwrap().is_match(line)
    }

    #[test]
    fn matches_the_grep_subset() {
        assert!(m("ERROR", "[2026-12-02] local.ERROR: boom"));
        assert!(!m("ERROR", "[2026-12-02] local.INFO: fine"));
        assert!(m("ERROR|CRITICAL", "local.CRITICAL: x"));
        assert!(m("^\\[2026", "[2026-12-02] x"));
        assert!(!m("^x", "a x"));
        assert!(m("done$", "all done"));
        assert!(!m("done$", "done twice"));
        assert!(m("status=5\\d\\d", "GET / status=503"));
        assert!(!m("status=5\\d\\d", "GET / status=200"));
        assert!(m("user [a-z]+ logged", "user bob logged in"));
        assert!(!m("user [a-z]+ logged", "user  logged in"));
        assert!(m("colou?r", "color"));
        assert!(m("a.*b", "xaYYYbz"));
        assert!(m("(?i)error", "Fatal ERROR"));
        assert!(m("[^0-9]x", "ax"));
        assert!(!m("[^0-9]x", "1x"));
        assert!(m("1\\.5", "v1.5"));
        assert!(!m("1\\.5", "v145"));
        assert!(m("x*", ""));
    }

    #[test]
    fn refuses_what_it_does_not_support() {
        assert_eq!(
            Pattern::parse(&"a".repeat(300)).unwrap_err(),
            PatternError::TooLong(300)
        );
        assert!(matches!(
            Pattern::parse("(a|b)c"),
            Err(PatternError::Unsupported(_))
        ));
        assert!(matches!(
            Pattern::parse("a{2}"),
            Err(PatternError::Unsupported(_))
        ));
        assert_eq!(
            Pattern::parse("*a").unwrap_err(),
            PatternError::NothingToRepeat('*')
        );
        assert_eq!(
            Pattern::parse("[ab").unwrap_err(),
            PatternError::UnclosedClass
        );
        assert_eq!(Pattern::parse("").unwrap_err(), PatternError::Empty);
        assert!(matches!(
            Pattern::parse("\\bword"),
            Err(PatternError::Unsupported(_))
        ));
    }

    #[test]
    fn time_is_linear_in_the_line() {
        // A pattern that makes backtracking matchers explode.
        let p = Pattern::parse("a*a*a*a*a*a*a*a*a*a*a*a*b").unwrap();
        assert!(!p.is_match(&"a".repeat(10_000)));
    }
}
