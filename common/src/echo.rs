//! Bounded echoing of job-provided text (function names, decoder details) into error
//! messages and log lines, so a hostile 10 MB string never becomes a 10 MB failure text.

use std::borrow::Cow;
use std::fmt;

/// How many characters of a job-provided string an error text repeats.
pub const ECHO_CHARS: usize = 200;

/// Keeps at most `max_chars` characters of `text` (its head) and, when something was
/// cut, says how many bytes: `mymod.aaaa… (10485560 more bytes)`. Control characters
/// (line breaks included) are escaped (`\n`), so the echo stays on one line; escapes
/// count towards `max_chars`. Borrowed when `text` is short and plain; a cut never
/// splits a character.
pub fn clip(text: &str, max_chars: usize) -> Cow<'_, str> {
    if text.chars().nth(max_chars).is_none() && !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::new();
    let mut width = 0;
    for (i, c) in text.char_indices() {
        let w = char_width(c);
        if width + w > max_chars {
            out.push_str(&format!("… ({} more bytes)", text.len() - i));
            return Cow::Owned(out);
        }
        push_escaped(&mut out, c);
        width += w;
    }
    Cow::Owned(out)
}

/// Characters `c` takes once escaped.
fn char_width(c: char) -> usize {
    if c.is_control() {
        c.escape_default().count()
    } else {
        1
    }
}

fn push_escaped(out: &mut String, c: char) {
    if c.is_control() {
        out.extend(c.escape_default());
    } else {
        out.push(c);
    }
}

/// [`clip`] with the default [`ECHO_CHARS`].
pub fn short(text: &str) -> Cow<'_, str> {
    clip(text, ECHO_CHARS)
}

/// Formats `value` (an error from a decoder, which may quote the input) keeping at
/// most `max_chars` characters, control characters escaped. Formatting stops as soon
/// as the limit is reached, so a `Debug` dump of a huge value is never built in full.
pub fn clip_display(value: &dyn fmt::Display, max_chars: usize) -> String {
    struct Bounded {
        out: String,
        chars: usize,
        max: usize,
        cut: bool,
    }
    impl fmt::Write for Bounded {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            for c in s.chars() {
                let w = char_width(c);
                if self.chars + w > self.max {
                    self.cut = true;
                    return Err(fmt::Error);
                }
                push_escaped(&mut self.out, c);
                self.chars += w;
            }
            Ok(())
        }
    }
    let mut w = Bounded {
        out: String::new(),
        chars: 0,
        max: max_chars,
        cut: false,
    };
    let _ = fmt::write(&mut w, format_args!("{value}"));
    if w.cut {
        w.out.push_str("… (cut)");
    }
    w.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_borrowed_unchanged() {
        assert!(matches!(clip("mymod.add", 200), Cow::Borrowed("mymod.add")));
        assert_eq!(clip("", 0), "");
        assert_eq!(clip("abc", 3), "abc");
    }

    #[test]
    fn long_text_keeps_its_head_and_counts_the_cut() {
        assert_eq!(clip("abcdef", 2), "ab… (4 more bytes)");
        // Multi-byte characters are never split; the count is in bytes.
        assert_eq!(clip("ééé", 1), "é… (4 more bytes)");
        let big = "a".repeat(10 * 1024 * 1024);
        let c = clip(&big, 200);
        assert!(c.len() < 250, "{}", c.len());
        assert!(c.ends_with("(10485560 more bytes)"), "{c}");
    }

    #[test]
    fn control_characters_are_escaped_onto_one_line() {
        assert_eq!(clip("a\nb\u{1b}", 10), "a\\nb\\u{1b}");
        assert_eq!(clip("a\nbcdef", 3), "a\\n… (5 more bytes)");
        // Escapes count towards the limit: the echo stays short.
        let ctl = "\u{e}".repeat(1000);
        assert!(clip(&ctl, 300).len() < 330);
        assert!(clip_display(&ctl, 300).len() < 330);
        assert_eq!(clip_display(&"x\ny", 10), "x\\ny");
    }

    #[test]
    fn display_is_cut_while_formatting() {
        struct Endless;
        impl fmt::Display for Endless {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                loop {
                    f.write_str("xy")?;
                }
            }
        }
        assert_eq!(clip_display(&Endless, 5), "xyxyx… (cut)");
        assert_eq!(clip_display(&"short", 5), "short");
    }
}
