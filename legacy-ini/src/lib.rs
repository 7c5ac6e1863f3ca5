//! UBackup's INI dialect, as its `uuzuback.conf` files (client and server) are written.
//!
//! UBackup read these files with Python 2's `ConfigParser`; its README annotates every line
//! with an inline comment (`my_ip = 127.0.0.0.1 #本机IP`). This reader accepts exactly that:
//!
//! - `[section]` headers, `key = value` or `key: value` lines, keys case-folded to lower case
//!   (ConfigParser's `optionxform`), values trimmed;
//! - whole-line comments starting with `#` or `;`, and inline comments: a `#` or `;` that
//!   follows whitespace ends the value (so `a#b` keeps its `#`);
//! - blank lines anywhere.
//!
//! It does not interpret values, and it does not decide what a repeated key means: every
//! entry is returned with its line number, in file order, and the caller (the puller's
//! server config, the agent's client config) decides. Lines it cannot read are returned as
//! [`Problem`]s next to everything it could read, so a caller can report every problem at
//! once. Input is bounded by the caller (a config is read whole, after a size check).
//!
//! ```
//! let ini = ubackup_legacy_ini::parse("[global]\nserver_id = 111111  #asset id\n");
//! assert!(ini.problems.is_empty());
//! assert_eq!(ini.sections[0].get("server_id"), Some("111111"));
//! ```
#![warn(missing_docs)]

/// One `key = value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key, lower-cased and trimmed.
    pub key: String,
    /// The value, trimmed, without its inline comment.
    pub value: String,
    /// 1-based line number.
    pub line: usize,
}

/// One `[section]` and its entries, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The name between the brackets, trimmed (case kept, as ConfigParser does).
    pub name: String,
    /// 1-based line number of the header.
    pub line: usize,
    /// Entries in file order (a repeated key appears twice).
    pub entries: Vec<Entry>,
}

impl Section {
    /// The last value given for `key` (ConfigParser's "last one wins").
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.key == key)
            .map(|e| e.value.as_str())
    }

    /// The entry for `key` (the last one).
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| e.key == key)
    }
}

/// A line that is not a header, a comment or `key = value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line number.
    pub line: usize,
    /// The section the line is in, if any.
    pub section: Option<String>,
    /// What is wrong.
    pub problem: String,
}

/// A parsed file: every section it could read and every line it could not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ini {
    /// Sections in file order (a repeated header gives two sections).
    pub sections: Vec<Section>,
    /// Lines it could not read.
    pub problems: Vec<Problem>,
}

impl Ini {
    /// The first section named `name`.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }
}

/// Cuts an inline comment: `#` or `;` after whitespace, as in UBackup's sample
/// (`work_thread = 4 #执行rsync拉取的线程数量`).
pub fn strip_inline_comment(line: &str) -> &str {
    let b = line.as_bytes();
    for i in 1..b.len() {
        if (b[i] == b'#' || b[i] == b';') && b[i - 1].is_ascii_whitespace() {
            // `i` is an ASCII byte: a char boundary.
            return line.get(..i).unwrap_or(line);
        }
    }
    line
}

/// True when the first section header of `text` is `[global]`: the shape of both UBackup
/// config files (our TOML files never open with a `[global]` table).
pub fn starts_with_global(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .is_some_and(|l| strip_inline_comment(l).trim() == "[global]")
}

/// Longest line kept in a problem's text.
const MAX_SHOWN: usize = 80;

fn shown(s: &str) -> String {
    let mut end = s.len().min(MAX_SHOWN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    if end < s.len() {
        format!("{:?}…", s.get(..end).unwrap_or_default())
    } else {
        format!("{s:?}")
    }
}

/// Reads `text`. Never fails: what it cannot read becomes a [`Problem`].
pub fn parse(text: &str) -> Ini {
    let mut ini = Ini::default();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        let t = strip_inline_comment(t).trim();
        if t.starts_with('[') {
            match t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                Some(name) if !name.trim().is_empty() => ini.sections.push(Section {
                    name: name.trim().to_string(),
                    line,
                    entries: Vec::new(),
                }),
                _ => ini.problems.push(Problem {
                    line,
                    section: ini.sections.last().map(|s| s.name.clone()),
                    problem: format!("not a [section] header: {}", shown(t)),
                }),
            }
            continue;
        }
        let current = ini.sections.last_mut();
        match (t.split_once(['=', ':']), current) {
            (Some((k, v)), Some(sec)) if !k.trim().is_empty() => sec.entries.push(Entry {
                key: k.trim().to_ascii_lowercase(),
                value: v.trim().to_string(),
                line,
            }),
            (Some(_), None) => ini.problems.push(Problem {
                line,
                section: None,
                problem: "a key before any [section]".into(),
            }),
            (_, sec) => ini.problems.push(Problem {
                line,
                section: sec.map(|s| s.name.clone()),
                problem: format!("expected key = value, got {}", shown(t)),
            }),
        }
    }
    ini
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_inline_comments_after_whitespace_only() {
        let ini = parse("[g]\na = 1 #one\nb = x#y\nc = 2 ; two\nd=\t3\t#\n");
        let s = &ini.sections[0];
        assert_eq!(
            (s.get("a"), s.get("b"), s.get("c"), s.get("d")),
            (Some("1"), Some("x#y"), Some("2"), Some("3"))
        );
        assert!(ini.problems.is_empty());
    }

    #[test]
    fn folds_keys_keeps_section_case_and_line_numbers() {
        let ini = parse("# c\n[Global]\n\nServer_ID: 7\n");
        assert_eq!(ini.sections[0].name, "Global");
        let e = ini.sections[0].entry("server_id").unwrap();
        assert_eq!((e.value.as_str(), e.line), ("7", 4));
    }

    #[test]
    fn reports_every_unreadable_line() {
        let ini = parse("k = v\n[a]\nnonsense\n[]\n= 3\n[b\n");
        let lines: Vec<usize> = ini.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [1, 3, 4, 5, 6]);
        assert_eq!(ini.problems[1].section.as_deref(), Some("a"));
    }

    #[test]
    fn detects_the_ubackup_shape() {
        assert!(starts_with_global("# x\n[global] # g\na=1"));
        assert!(!starts_with_global("[node]\n[global]"));
    }

    #[test]
    fn keeps_problem_text_short() {
        let ini = parse(&format!("[a]\n{}\n", "é".repeat(500)));
        assert!(ini.problems[0].problem.len() < 200);
    }
}
