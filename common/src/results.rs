//! The results stream `rq:results:<id>`: entry types and the `exc_string` encoding
//! (`base64(zlib(text))`), inflated within `payload::MAX_PAYLOAD_BYTES`. Return values
//! are decoded with `SerializerKind::loads`, which is bounded by the decoding budget.

use crate::payload;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::collections::HashMap;

/// RQ's `Result.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultType {
    Successful = 1,
    Failed = 2,
    Stopped = 3,
    Retried = 4,
    MaxRetriesExceeded = 5,
}

impl ResultType {
    pub fn from_code(code: &str) -> Option<ResultType> {
        Some(match code {
            "1" => ResultType::Successful,
            "2" => ResultType::Failed,
            "3" => ResultType::Stopped,
            "4" => ResultType::Retried,
            "5" => ResultType::MaxRetriesExceeded,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            ResultType::Successful => "SUCCESSFUL",
            ResultType::Failed => "FAILED",
            ResultType::Stopped => "STOPPED",
            ResultType::Retried => "RETRIED",
            ResultType::MaxRetriesExceeded => "MAX_RETRIES_EXCEEDED",
        }
    }
}

/// Encodes failure text as the stream's `exc_string`.
pub fn encode_exc_string(text: &str) -> String {
    B64.encode(payload::deflate(text.as_bytes()))
}

/// Decodes an `exc_string` (zlib with raw fallback, as RQ reads it). Inflating stops
/// at `payload::MAX_PAYLOAD_BYTES` (then `None`); a stream with a zlib header that is
/// not valid zlib is taken raw, as RQ does.
pub fn decode_exc_string(b64: &[u8]) -> Option<String> {
    let bytes = B64.decode(b64).ok()?;
    let raw = match payload::inflate(&bytes) {
        Ok(raw) => raw,
        Err(payload::PayloadError::BadZlib(_)) => bytes,
        Err(_) => return None,
    };
    Some(String::from_utf8_lossy(&raw).into_owned())
}

/// Base64 of an already-serialized return value.
pub fn encode_return_value(serialized: &[u8]) -> String {
    B64.encode(serialized)
}

pub fn decode_base64(b64: &[u8]) -> Option<Vec<u8>> {
    B64.decode(b64).ok()
}

/// One stream entry as read back.
#[derive(Debug, Clone)]
pub struct ResultEntry {
    pub stream_id: String,
    pub kind: Option<ResultType>,
    pub fields: HashMap<String, Vec<u8>>,
}

impl ResultEntry {
    /// Milliseconds since the epoch at which the entry was written (from the stream id).
    pub fn created_ms(&self) -> Option<i64> {
        self.stream_id.split('-').next()?.parse().ok()
    }
    pub fn exc_text(&self) -> Option<String> {
        self.fields
            .get("exc_string")
            .and_then(|b| decode_exc_string(b))
    }
    pub fn return_value_bytes(&self) -> Option<Vec<u8>> {
        self.fields
            .get("return_value")
            .and_then(|b| decode_base64(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_captured_exc_strings() {
        let s = decode_exc_string(
            b"eJzzyk9SKC7JLyhITVFIqlQoLU4t0lEozy/K1s3ILypOVShJLcrNzEssSU3RAwBbIQ/t",
        )
        .unwrap();
        assert_eq!(s, "Job stopped by user, work-horse terminated.");
        let round = decode_exc_string(encode_exc_string("boom").as_bytes()).unwrap();
        assert_eq!(round, "boom");
    }

    #[test]
    fn exc_string_bombs_and_corrupt_streams() {
        // Corrupt zlib is taken raw (RQ's fallback), not lost.
        let s = decode_exc_string(B64.encode(b"\x78\x9cnot zlib").as_bytes()).unwrap();
        assert_eq!(s, "x\u{fffd}not zlib");
        assert_eq!(decode_exc_string(b"!!!"), None);
    }

    #[test]
    fn return_value_matches_captured_bytes() {
        assert_eq!(encode_return_value(b"\x80\x05K\x05."), "gAVLBS4=");
    }
}
