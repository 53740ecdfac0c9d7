//! Bounded echoing of job-provided text (function names, decoder details) into error
//! messages and log lines, so a hostile 10 MB string never becomes a 10 MB failure text.

use std::borrow::Cow;
use std::fmt;

/// How many characters of a job-provided string an error text repeats.
pub const ECHO_CHARS: usize = 200;

/// Keeps at most `max_chars` characters of `text` (its head) and, when something was
/// cut, says how many bytes: `mymod.aaaa… (10485560 more bytes)`. Borrowed when `text`
/// is short enough; a cut never splits a character.
pub fn clip(text: &str, max_chars: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max_chars) {
        None => Cow::Borrowed(text),
        Some((cut, _)) => Cow::Owned(format!(
            "{}… ({} more bytes)",
            &text[..cut],
            text.len() - cut
        )),
    }
}

/// [`clip`] with the default [`ECHO_CHARS`].
pub fn short(text: &str) -> Cow<'_, str> {
    clip(text, ECHO_CHARS)
}

/// Formats `value` (an error from a decoder, which may quote the input) keeping at
/// most `max_chars` characters. Formatting stops as soon as the limit is reached, so a
/// `Debug` dump of a huge value is never built in full.
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
                if self.chars == self.max {
                    self.cut = true;
                    return Err(fmt::Error);
                }
                self.out.push(c);
                self.chars += 1;
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
