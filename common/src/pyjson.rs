//! JSON bytes exactly as Python's `json.dumps` writes them (RQ's `JSONSerializer`):
//! `", "` and `": "` separators and `ensure_ascii` escapes for non-ASCII text.

use serde::Serialize;
use serde_json::ser::Formatter;
use std::io::{self, Write};

/// A serde_json formatter reproducing Python's default `json.dumps` layout.
struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        if fragment.is_ascii() {
            return w.write_all(fragment.as_bytes());
        }
        let mut units = [0u16; 2];
        for c in fragment.chars() {
            if c.is_ascii() {
                w.write_all(&[c as u8])?;
            } else {
                for unit in c.encode_utf16(&mut units) {
                    write!(w, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

/// Serializes `value` as Python's `json.dumps(value)` would.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(64);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    value.serialize(&mut ser)?;
    Ok(out)
}

/// Same as [`to_vec`], as a `String`.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    to_vec(value).map(|v| String::from_utf8(v).expect("ensure_ascii output is ASCII"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_python_layout() {
        let v = json!(["mymod.add", null, [2, 3], {}]);
        assert_eq!(to_string(&v).unwrap(), r#"["mymod.add", null, [2, 3], {}]"#);
        let v = json!({"args": [1, "x"], "kwargs": {"k": [1, 2]}});
        assert_eq!(
            to_string(&v).unwrap(),
            r#"{"args": [1, "x"], "kwargs": {"k": [1, 2]}}"#
        );
    }

    #[test]
    fn escapes_non_ascii_like_ensure_ascii() {
        assert_eq!(to_string(&json!("é😀")).unwrap(), r#""\u00e9\ud83d\ude00""#);
    }
}
