//! Text that came from the sandbox (DNS names the agent looked up, log fields, git messages about
//! its commits, file names in its checkouts) made safe to show and to suggest. The agent chooses
//! those bytes: printed raw, control sequences would drive the user's terminal (rewrite what is
//! on screen, set the window title, paste into the shell), and a name like `0.0.0.0/0:443` must
//! never come back as a suggested allowlist entry.

use std::fmt::Write as _;

/// `s` with every control character, and every character that reorders or hides text (bidi
/// overrides, zero-width marks), written as a visible escape (`\x1b`, `\u{202e}`).
pub fn printable(s: &str) -> String {
    escape(s, false)
}

/// [`printable`] for a message of several lines: line breaks stay, so sbx's own multi-line
/// messages keep their shape while whatever they quote cannot drive the terminal. Every message
/// sbx prints for people goes through this (`progress::Ui`).
pub fn printable_lines(s: &str) -> String {
    escape(s, true)
}

fn escape(s: &str, keep_newlines: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\n' && keep_newlines {
            out.push(c);
        } else if c == '\\' && !keep_newlines {
            // Escapes stay unambiguous: a literal `\x1b` is shown as `\\x1b`.
            out.push_str("\\\\");
        } else if c.is_control() {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else if is_invisible(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// Characters that change how the text around them looks without looking like anything.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
    )
}

/// Whether `s` is a plain DNS host name that may be suggested as an allowlist entry: letters,
/// digits and hyphens in dot-separated labels of 1 to 63 characters (no leading or trailing
/// hyphen), at most 253 characters, and not an address (the last label is not all digits).
pub fn is_host_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.is_empty() || s.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = s.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    labels.iter().all(label_ok)
        && !labels
            .last()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_invisible_characters_are_escaped() {
        assert_eq!(printable("plain.example"), "plain.example");
        assert_eq!(printable("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(printable("x\ny\r\u{7}"), "x\\x0ay\\x0d\\x07");
        assert_eq!(printable("\u{9b}31m"), "\\x9b31m");
        assert_eq!(printable("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(printable("zero\u{200b}width"), "zero\\u{200b}width");
        assert_eq!(printable("ünïcödé.example"), "ünïcödé.example");
        assert_eq!(printable("a\\x1b"), "a\\\\x1b");
        assert_eq!(printable_lines("one\ntwo\x1b[2J"), "one\ntwo\\x1b[2J");
    }

    #[test]
    fn only_plain_host_names_are_suggested() {
        for ok in [
            "example.com",
            "api.github.com",
            "a-b.c",
            "localhost",
            "x.example.",
        ] {
            assert!(is_host_name(ok), "{ok}");
        }
        for bad in [
            "0.0.0.0/0:443",
            "10.0.0.1",
            "1.2.3.4.",
            "*.example.com",
            "a b.example",
            "-a.example",
            "a..example",
            "evil\x1b.example",
            "a_b.example",
            "",
            ".",
            &"a".repeat(64),
            &format!("{}.com", "a.".repeat(130)),
        ] {
            assert!(!is_host_name(bad), "{bad:?}");
        }
    }
}
