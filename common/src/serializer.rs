//! The three payload serializers (pickle, JSON, MessagePack): chosen per queue for
//! writing, recognised from the bytes on read, and read back within a decoding budget
//! (`budget`), so a hostile return value or `meta` gets an error, not a crash.

use crate::budget::{self, Budget, LimitError};
use crate::echo;
use crate::pyjson;
use crate::value;
use serde::Deserialize;
use serde_json::Value;
use std::fmt;
use std::str::FromStr;

/// How much of a decoder's error text (which may quote the input) is kept.
pub const DETAIL_CHARS: usize = 300;

/// Why a single value could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// Refused by the decoding budget before decoding.
    #[error("{0}")]
    Limit(LimitError),
    /// The decoder's own error, `<what>: <serializer>: <detail>`.
    #[error("{0}")]
    Undecodable(String),
}

/// A serializer as RQ's `Queue(serializer=…)` would use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerializerKind {
    /// RQ's DefaultSerializer; runq writes protocol 3, reads 0–5.
    #[default]
    Pickle,
    /// RQ's JSONSerializer, byte for byte.
    Json,
    /// MessagePack.
    Msgpack,
}

impl SerializerKind {
    /// Recognises the serializer from (decompressed) payload bytes.
    pub fn detect(bytes: &[u8]) -> Option<SerializerKind> {
        match bytes.first()? {
            0x80 => Some(SerializerKind::Pickle),
            // Protocol 0/1 pickles of a tuple start with MARK, or a list/dict opcode.
            b'(' | b']' | b'}' | b')' => Some(SerializerKind::Pickle),
            b'[' | b'{' | b'"' | b' ' | b'\n' | b'\t' | b'\r' | b'n' | b't' | b'f' => {
                Some(SerializerKind::Json)
            }
            b'0'..=b'9' | b'-' => Some(SerializerKind::Json),
            0x90..=0x9f | 0xdc | 0xdd | 0x80..=0x8f => Some(SerializerKind::Msgpack),
            _ => None,
        }
    }

    /// Serializes a single value (a return value, `meta`).
    pub fn dumps(self, v: &Value) -> Result<Vec<u8>, String> {
        match self {
            SerializerKind::Pickle => {
                serde_pickle::value_to_vec(&value::to_pickle(v), serde_pickle::SerOptions::new())
                    .map_err(|e| e.to_string())
            }
            SerializerKind::Json => pyjson::to_vec(v).map_err(|e| e.to_string()),
            SerializerKind::Msgpack => rmp_serde::to_vec(v).map_err(|e| e.to_string()),
        }
    }

    /// Deserializes a single value; `what` names it in errors. Bounded like
    /// [`SerializerKind::loads_bounded`], the error as text.
    pub fn loads(self, bytes: &[u8], what: &str) -> Result<Value, String> {
        self.loads_bounded(bytes, what).map_err(|e| e.to_string())
    }

    /// Deserializes a single value (a return value, `meta`) within the decoding budget
    /// for its size ([`Budget::for_input`]): a value nested too deep, too large once
    /// decoded, or declaring lengths beyond the input is refused with
    /// [`LoadError::Limit`] before the decoder runs.
    pub fn loads_bounded(self, bytes: &[u8], what: &str) -> Result<Value, LoadError> {
        budget::check(self, bytes, &Budget::for_input(bytes.len()))
            .map_err(|e| LoadError::Limit(e.in_value(self, what)))?;
        self.loads_prechecked(bytes, what)
            .map_err(LoadError::Undecodable)
    }

    /// The decoder alone, for bytes `budget::check` has passed.
    pub(crate) fn loads_prechecked(self, bytes: &[u8], what: &str) -> Result<Value, String> {
        let what = echo::short(what);
        let detail = |e: &dyn fmt::Display| echo::clip_display(e, DETAIL_CHARS);
        match self {
            SerializerKind::Pickle => {
                let v = serde_pickle::value_from_slice(bytes, serde_pickle::DeOptions::new())
                    .map_err(|e| format!("{what}: pickle: {}", detail(&e)))?;
                value::from_pickle(v, &what)
            }
            SerializerKind::Json => {
                serde_json::from_slice(bytes).map_err(|e| format!("{what}: json: {}", detail(&e)))
            }
            SerializerKind::Msgpack => crate::msgpack::to_value(bytes)
                .map_err(|e| format!("{what}: msgpack: {}", detail(&e))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SerializerKind::Pickle => "pickle",
            SerializerKind::Json => "json",
            SerializerKind::Msgpack => "msgpack",
        }
    }
}

impl fmt::Display for SerializerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SerializerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pickle" => Ok(SerializerKind::Pickle),
            "json" => Ok(SerializerKind::Json),
            "msgpack" | "messagepack" => Ok(SerializerKind::Msgpack),
            other => Err(format!(
                "unknown serializer `{other}` (pickle, json or msgpack)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pickle_return_value_python_can_read() {
        // Python: pickle.loads(b'\x80\x03J\x05\x00\x00\x00.') == 5 (protocol 3, BININT)
        assert_eq!(
            SerializerKind::Pickle.dumps(&json!(5)).unwrap(),
            b"\x80\x03J\x05\x00\x00\x00."
        );
    }

    #[test]
    fn reads_python_protocol5_values() {
        let b = b"\x80\x05\x95\x0e\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x05slept\x94K\x03s.";
        assert_eq!(
            SerializerKind::Pickle.loads(b, "v").unwrap(),
            json!({"slept": 3})
        );
    }

    #[test]
    fn json_matches_rq() {
        let v = json!({"args": [1, "x"], "kwargs": {"k": [1, 2]}});
        assert_eq!(
            SerializerKind::Json.dumps(&v).unwrap(),
            br#"{"args": [1, "x"], "kwargs": {"k": [1, 2]}}"#.to_vec()
        );
    }

    #[test]
    fn msgpack_round_trip() {
        let v = json!({"a": [1, 2.5, null, "s"]});
        let b = SerializerKind::Msgpack.dumps(&v).unwrap();
        assert_eq!(SerializerKind::detect(&b), Some(SerializerKind::Msgpack));
        assert_eq!(SerializerKind::Msgpack.loads(&b, "v").unwrap(), v);
    }

    #[test]
    fn class_instances_are_refused_without_executing() {
        // pickle.dumps(datetime.date(2020,1,1), protocol=2)
        let b = b"\x80\x02cdatetime\ndate\nq\x00C\x04\x07\xe4\x01\x01q\x01\x85q\x02Rq\x03.";
        let err = SerializerKind::Pickle.loads(b, "argument 0").unwrap_err();
        assert!(err.starts_with("argument 0: pickle:"), "{err}");
    }
}
