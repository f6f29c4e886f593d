//! Text for people: the one escape every stored name (and every message that may hold one) goes
//! through before the CLI or the mount daemon prints it. Names come from untrusted archives; a
//! raw `ESC ] 0 ; ... BEL` in a file name would retitle the terminal, a raw newline would forge
//! a line of `ls` or of the mount log. JSON output is not escaped here: serde escapes it, and a
//! program reading it gets the exact name.

use std::borrow::Cow;

/// `s` with every control character (C0, DEL, C1) and every bidirectional-override or
/// zero-width formatting character (which can make a name display as another) replaced by a
/// Rust-style escape: `\x1b`, `\n`, `\t`, `\u{202e}`. Borrowed, unchanged, when there is none.
/// Backslashes are left as they are, so the escaped form is for reading, not for parsing back.
pub fn escaped(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if needs_escape(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::escaped;

    #[test]
    fn controls_are_escaped_and_plain_names_borrowed() {
        assert!(matches!(
            escaped("model-00001.safetensors"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(escaped("héllo wörld"), "héllo wörld");
        assert_eq!(escaped("a\x1b]0;pwn\x07b"), "a\\x1b]0;pwn\\x07b");
        assert_eq!(escaped("x\ny\tz\r"), "x\\ny\\tz\\r");
        assert_eq!(escaped("\u{9b}31m\u{7f}"), "\\u{9b}31m\\x7f");
        assert_eq!(escaped("txt.\u{202e}exe"), "txt.\\u{202e}exe");
    }
}
