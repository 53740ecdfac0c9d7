//! Bounding what job data is echoed into error texts and logs: a 10 MB function name
//! must not become a 10 MB failure result.

use std::borrow::Cow;

/// `text` when it has at most `max_chars` characters; otherwise its first `max_chars`
/// characters and a note of how long the whole was.
pub fn clip(text: &str, max_chars: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max_chars) {
        None => Cow::Borrowed(text),
        Some((at, _)) => Cow::Owned(format!("{}… ({} bytes in all)", &text[..at], text.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_with_its_size() {
        assert_eq!(clip("short", 10), "short");
        let long = "é".repeat(100);
        assert_eq!(clip(&long, 3), "ééé… (200 bytes in all)");
    }
}
