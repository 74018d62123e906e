//! The one way text from the log or a client reaches a terminal: control
//! characters (C0, DEL, C1, and the bidirectional overrides that reorder what
//! is shown) become visible escapes such as `\x1b` or `\u{202e}`, so a request
//! id, a reason, a target name or a hook's stderr can neither drive the
//! terminal (escape sequences) nor forge a line of output (newlines,
//! carriage returns). Issue 12 item 11.

use std::borrow::Cow;

/// True for a character that must not reach a terminal as is.
fn is_unsafe(c: char) -> bool {
    c.is_control() // C0, DEL and C1
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every unsafe character written as an escape (`\n`, `\r`, `\t`,
/// `\\x1b`-style for the other C0 and DEL, `\u{…}` for the rest). A backslash
/// stays as it is, so ordinary Windows paths read naturally; the output is for
/// people, not meant to be parsed back (`--json` is).
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !is_unsafe(c) {
            out.push(c);
            continue;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    Cow::Owned(out)
}

/// Prints one line to stdout with [`escape`] applied to all of it (the line
/// must not carry our own colours: escape what goes inside them instead).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        println!("{}", $crate::render::escape::escape(&format!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(escape("plain text, ünïcode ✓"), "plain text, ünïcode ✓");
        assert!(matches!(escape("plain"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(escape("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(escape("line\n     1  forged"), "line\\n     1  forged");
        assert_eq!(escape("x\ry\tz\x7f\x00"), "x\\ry\\tz\\x7f\\x00");
        assert_eq!(escape("\u{9b}31m"), "\\u{9b}31m"); // C1 CSI
        assert_eq!(escape("abc\u{202e}fdp.exe"), "abc\\u{202e}fdp.exe");
        assert_eq!(escape("C:\\path"), "C:\\path");
    }
}
