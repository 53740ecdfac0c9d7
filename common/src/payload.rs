//! The job `data` field: `zlib(serializer.dumps((func_name, instance, args, kwargs)))`,
//! read with RQ's raw-bytes fallback when the zlib stream is absent. Decoding is
//! bounded: inflate stops at [`MAX_PAYLOAD_BYTES`], and every serializer's bytes pass
//! the `budget` pre-scan (depth, decoded size, declared lengths) before a decoder
//! sees them; each refusal is a one-line [`PayloadError`].

use crate::budget::{self, Budget, LimitError};
use crate::echo;
use crate::serializer::{SerializerKind, DETAIL_CHARS};
use crate::value;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use serde_json::{Map, Value};

/// Payloads larger than this (after decompression) are refused rather than decoded.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024 * 1024;

/// Longest function name accepted (dotted import paths are far shorter); a longer one
/// is refused, echoing only its head.
pub const MAX_FUNC_NAME_BYTES: usize = 1024;

/// A function call as RQ stores it (runq supports only `instance = None`).
#[derive(Debug, Clone, PartialEq)]
pub struct JobCall {
    pub func_name: String,
    pub args: Vec<Value>,
    pub kwargs: Map<String, Value>,
}

/// Why a payload could not be turned into a call. The text is what lands in the job's
/// failure result: one line, quoting at most a short head of anything job-provided.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PayloadError {
    #[error(
        "DeserializationError: job payload is {0} bytes, above the {MAX_PAYLOAD_BYTES}-byte limit"
    )]
    TooLarge(usize),
    /// A zlib stream that inflates past the limit; inflating stopped there.
    #[error("DeserializationError: job payload inflates to more than {limit} bytes (the limit)")]
    InflatesTooLarge { limit: usize },
    /// Starts with a zlib header but is not a valid zlib stream.
    #[error("DeserializationError: job payload is not valid zlib data: {0}")]
    BadZlib(String),
    #[error("DeserializationError: job payload is not pickle, JSON or MessagePack (first byte {0:#04x})")]
    Unrecognised(u8),
    #[error("DeserializationError: job payload is empty")]
    Empty,
    /// Refused by the decoding budget (depth, size, declared lengths) before decoding.
    #[error("DeserializationError: job payload refused: {0}")]
    Limit(LimitError),
    #[error("DeserializationError: cannot decode {kind} job payload: {detail}")]
    Undecodable {
        kind: SerializerKind,
        detail: String,
    },
    #[error("DeserializationError: {kind} job payload is not a (func_name, instance, args, kwargs) 4-tuple: {detail}")]
    Shape {
        kind: SerializerKind,
        detail: String,
    },
    /// `head` is the start of the name, clipped.
    #[error("DeserializationError: function name is {len} bytes, above the {MAX_FUNC_NAME_BYTES}-byte limit: `{head}`")]
    FuncNameTooLong { len: usize, head: String },
    /// `func_name` is clipped to a short head.
    #[error("UnsupportedJob: {func_name} is a bound method or callable object (the job has an `instance`); runq-worker runs plain functions only")]
    HasInstance { func_name: String },
}

/// True for bytes that start like a stream from `zlib.compress`: a deflate header
/// with a 32 KiB window (0x78) whose check bits hold.
pub fn is_zlib_header(data: &[u8]) -> bool {
    data.len() >= 2 && data[0] == 0x78 && (u16::from(data[0]) * 256 + u16::from(data[1])) % 31 == 0
}

/// Inflates `data`, falling back to the raw bytes as RQ does when they are not zlib.
/// At most [`MAX_PAYLOAD_BYTES`]: see [`inflate_limited`].
pub fn inflate(data: &[u8]) -> Result<Vec<u8>, PayloadError> {
    inflate_limited(data, MAX_PAYLOAD_BYTES)
}

/// Inflates `data` to at most `limit` bytes, never allocating past the limit: bytes
/// with a zlib header must be a whole valid stream ([`PayloadError::BadZlib`]); anything
/// else is taken raw (RQ's fallback), up to `limit` too. The inflater's state (tens of
/// KiB) is kept per thread and reset for each payload, and output goes straight into
/// the result: a job costs no fresh buffers beyond its own bytes.
pub fn inflate_limited(data: &[u8], limit: usize) -> Result<Vec<u8>, PayloadError> {
    if !is_zlib_header(data) {
        if data.len() > limit {
            return Err(PayloadError::TooLarge(data.len()));
        }
        return Ok(data.to_vec());
    }
    thread_local! {
        static INFLATER: std::cell::RefCell<Decompress> = std::cell::RefCell::new(Decompress::new(true));
    }
    INFLATER.with_borrow_mut(|inflater| {
        inflater.reset(true);
        inflate_into(inflater, data, limit)
    })
}

fn inflate_into(
    inflater: &mut Decompress,
    data: &[u8],
    limit: usize,
) -> Result<Vec<u8>, PayloadError> {
    let bad = |detail: &dyn std::fmt::Display| {
        PayloadError::BadZlib(echo::clip_display(detail, DETAIL_CHARS))
    };
    let mut out: Vec<u8> =
        Vec::with_capacity(data.len().saturating_mul(3).clamp(64, limit.max(64)));
    loop {
        if out.len() == out.capacity() {
            if out.len() >= limit {
                return Err(PayloadError::InflatesTooLarge { limit });
            }
            // Double, but never past the limit (plus one byte, to see whether more comes).
            let want = (out.capacity() * 2).min(limit + 1);
            out.reserve_exact(want - out.len());
        }
        let read = inflater.total_in() as usize;
        let written = out.len();
        let status = inflater
            .decompress_vec(&data[read..], &mut out, FlushDecompress::None)
            .map_err(|e| bad(&e))?;
        if out.len() > limit {
            return Err(PayloadError::InflatesTooLarge { limit });
        }
        match status {
            Status::StreamEnd => return Ok(out),
            // No progress with room to spare: the input ended inside the stream.
            _ if out.len() == written
                && inflater.total_in() as usize == read
                && out.len() < out.capacity() =>
            {
                return Err(bad(&"the stream is truncated"));
            }
            _ => {}
        }
    }
}

/// zlib at the default level, as Python's `zlib.compress`. The compressor's state
/// (hundreds of KiB, zeroed when made) is kept per thread and reset for each payload.
pub fn deflate(bytes: &[u8]) -> Vec<u8> {
    thread_local! {
        static DEFLATER: std::cell::RefCell<Compress> =
            std::cell::RefCell::new(Compress::new(Compression::default(), true));
    }
    DEFLATER.with_borrow_mut(|deflater| {
        deflater.reset();
        let mut out = Vec::with_capacity(bytes.len() / 2 + 64);
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(64));
            }
            let read = deflater.total_in() as usize;
            let status = deflater
                .compress_vec(&bytes[read..], &mut out, FlushCompress::Finish)
                .expect("compressing into a Vec cannot fail");
            if status == Status::StreamEnd {
                return out;
            }
        }
    })
}

/// Decodes a stored `data` field into the serializer it used and the call.
pub fn decode(data: &[u8]) -> Result<(SerializerKind, JobCall), PayloadError> {
    parse(&inflate(data)?, false)
}

/// Decodes an inflated payload. `lenient` is for handlers that pass the payload on
/// untouched (raw exec tasks): arguments that name Python classes or cannot be
/// represented become `null` instead of failing. Nothing is imported or executed.
/// The bytes are pre-scanned first with [`Budget::for_input`] ([`PayloadError::Limit`]).
pub fn parse(raw: &[u8], lenient: bool) -> Result<(SerializerKind, JobCall), PayloadError> {
    let first = *raw.first().ok_or(PayloadError::Empty)?;
    let kind = SerializerKind::detect(raw).ok_or(PayloadError::Unrecognised(first))?;
    budget::check(kind, raw, &Budget::for_input(raw.len()))
        .map_err(|e| PayloadError::Limit(e.in_payload(kind)))?;
    let call = match kind {
        SerializerKind::Pickle => decode_pickle(raw, lenient)?,
        other => {
            let v = other.loads_prechecked(raw, "payload").map_err(|detail| {
                PayloadError::Undecodable {
                    kind: other,
                    detail,
                }
            })?;
            call_from_value(v, other)?
        }
    };
    Ok((kind, call))
}

/// The function name, refused when absurdly long.
fn checked_name(func_name: String) -> Result<String, PayloadError> {
    if func_name.len() > MAX_FUNC_NAME_BYTES {
        return Err(PayloadError::FuncNameTooLong {
            len: func_name.len(),
            head: echo::short(&func_name).into_owned(),
        });
    }
    Ok(func_name)
}

fn has_instance(func_name: &str) -> PayloadError {
    PayloadError::HasInstance {
        func_name: echo::short(func_name).into_owned(),
    }
}

fn decode_pickle(raw: &[u8], lenient: bool) -> Result<JobCall, PayloadError> {
    use serde_pickle::Value as P;
    let kind = SerializerKind::Pickle;
    let options = if lenient {
        serde_pickle::DeOptions::new().replace_unresolved_globals()
    } else {
        serde_pickle::DeOptions::new()
    };
    let v =
        serde_pickle::value_from_slice(raw, options).map_err(|e| PayloadError::Undecodable {
            kind,
            detail: format!(
                "{} (runq decodes plain Python values only; it never imports classes)",
                echo::clip_display(&e, DETAIL_CHARS)
            ),
        })?;
    let shape = |detail: &str| PayloadError::Shape {
        kind,
        detail: detail.to_string(),
    };
    let parts = match v {
        P::Tuple(p) | P::List(p) if p.len() == 4 => p,
        _ => return Err(shape("top level is not a 4-tuple")),
    };
    let mut it = parts.into_iter();
    let func_name = match it.next() {
        Some(P::String(s)) => checked_name(s)?,
        _ => return Err(shape("func_name is not a string")),
    };
    if !matches!(it.next(), Some(P::None)) {
        return Err(has_instance(&func_name));
    }
    let args = match it.next() {
        Some(P::Tuple(a)) | Some(P::List(a)) => a
            .into_iter()
            .enumerate()
            .map(
                |(i, a)| match value::from_pickle(a, &format!("argument {i}")) {
                    Err(_) if lenient => Ok(Value::Null),
                    other => other,
                },
            )
            .collect::<Result<Vec<_>, _>>()
            .map_err(|detail| PayloadError::Undecodable { kind, detail })?,
        _ => return Err(shape("args is not a tuple")),
    };
    let kwargs = match it.next() {
        Some(P::Dict(d)) if lenient => d
            .into_iter()
            .filter_map(|(k, v)| match k {
                serde_pickle::HashableValue::String(k) => {
                    Some((k.clone(), value::from_pickle(v, &k).unwrap_or(Value::Null)))
                }
                _ => None,
            })
            .collect(),
        Some(d @ P::Dict(_)) => match value::from_pickle(d, "kwargs") {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(shape("kwargs is not a dict")),
            Err(detail) => return Err(PayloadError::Undecodable { kind, detail }),
        },
        _ => return Err(shape("kwargs is not a dict")),
    };
    Ok(JobCall {
        func_name,
        args,
        kwargs,
    })
}

fn call_from_value(v: Value, kind: SerializerKind) -> Result<JobCall, PayloadError> {
    let shape = |detail: &str| PayloadError::Shape {
        kind,
        detail: detail.to_string(),
    };
    let parts = match v {
        Value::Array(p) if p.len() == 4 => p,
        _ => return Err(shape("top level is not a 4-element array")),
    };
    let mut it = parts.into_iter();
    let func_name = match it.next() {
        Some(Value::String(s)) => checked_name(s)?,
        _ => return Err(shape("func_name is not a string")),
    };
    if !matches!(it.next(), Some(Value::Null)) {
        return Err(has_instance(&func_name));
    }
    let args = match it.next() {
        Some(Value::Array(a)) => a,
        _ => return Err(shape("args is not an array")),
    };
    let kwargs = match it.next() {
        Some(Value::Object(m)) => m,
        _ => return Err(shape("kwargs is not an object")),
    };
    Ok(JobCall {
        func_name,
        args,
        kwargs,
    })
}

/// Encodes a call with `kind` and compresses it, ready for the `data` field.
pub fn encode(kind: SerializerKind, call: &JobCall) -> Result<Vec<u8>, String> {
    let raw = match kind {
        SerializerKind::Pickle => {
            use serde_pickle::{HashableValue as H, Value as P};
            let v = P::Tuple(vec![
                P::String(call.func_name.clone()),
                P::None,
                P::Tuple(call.args.iter().map(value::to_pickle).collect()),
                P::Dict(
                    call.kwargs
                        .iter()
                        .map(|(k, v)| (H::String(k.clone()), value::to_pickle(v)))
                        .collect(),
                ),
            ]);
            serde_pickle::value_to_vec(&v, serde_pickle::SerOptions::new())
                .map_err(|e| e.to_string())?
        }
        other => other.dumps(&Value::Array(vec![
            Value::String(call.func_name.clone()),
            Value::Null,
            Value::Array(call.args.clone()),
            Value::Object(call.kwargs.clone()),
        ]))?,
    };
    if raw.len() > MAX_PAYLOAD_BYTES {
        // Every worker refuses it; refuse it before it is written.
        return Err(format!(
            "the job's payload is {} bytes, above the {MAX_PAYLOAD_BYTES}-byte (64 MiB) limit every runq worker applies",
            raw.len()
        ));
    }
    Ok(deflate(&raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn add_call() -> JobCall {
        JobCall {
            func_name: "mymod.add".into(),
            args: vec![json!(2), json!(3)],
            kwargs: Map::new(),
        }
    }

    #[test]
    fn decodes_captured_pickle_data() {
        let data =
            hex("789c6b609d2ac900011a3d9cb995b9f9297a89292953fcbc99bc99dba6d44e2999a207009afc0a4c");
        let (kind, call) = decode(&data).unwrap();
        assert_eq!(kind, SerializerKind::Pickle);
        assert_eq!(call, add_call());
    }

    #[test]
    fn decodes_captured_json_data() {
        let data =
            hex("789c8b56caadcccd4fd14b4c4951d251c82bcdc9d1518836d251308ed551a8ae8d05009df3097a");
        let (kind, call) = decode(&data).unwrap();
        assert_eq!(kind, SerializerKind::Json);
        assert_eq!(call, add_call());
    }

    #[test]
    fn json_encoding_is_byte_for_byte_rq() {
        let data = encode(SerializerKind::Json, &add_call()).unwrap();
        assert_eq!(
            inflate(&data).unwrap(),
            br#"["mymod.add", null, [2, 3], {}]"#.to_vec()
        );
    }

    #[test]
    fn raw_uncompressed_payload_is_accepted() {
        let (_, call) = decode(br#"["mymod.add", null, [2, 3], {}]"#).unwrap();
        assert_eq!(call, add_call());
    }

    #[test]
    fn every_serializer_round_trips() {
        for kind in [
            SerializerKind::Pickle,
            SerializerKind::Json,
            SerializerKind::Msgpack,
        ] {
            let mut call = add_call();
            call.kwargs
                .insert("k".into(), json!({"nested": [1, "x", null, true, 2.5]}));
            let data = encode(kind, &call).unwrap();
            assert_eq!(decode(&data).unwrap(), (kind, call), "{kind}");
        }
    }

    #[test]
    fn instance_is_refused() {
        let err = decode(br#"["__call__", {"x": 1}, [], {}]"#).unwrap_err();
        assert!(matches!(err, PayloadError::HasInstance { .. }));
        assert!(err.to_string().contains("__call__"));
    }

    #[test]
    fn garbage_is_refused_clearly() {
        let err = decode(b"\x07garbage").unwrap_err().to_string();
        assert!(err.contains("not pickle, JSON or MessagePack"), "{err}");
        let err = decode(b"\x80\x05garbage").unwrap_err().to_string();
        assert!(
            err.starts_with("DeserializationError: cannot decode pickle"),
            "{err}"
        );
    }

    #[test]
    fn inflate_is_exact_at_the_limit_and_refuses_past_it() {
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let zipped = deflate(&bytes);
        assert_eq!(inflate_limited(&zipped, bytes.len()).unwrap(), bytes);
        assert_eq!(
            inflate_limited(&zipped, bytes.len() - 1).unwrap_err(),
            PayloadError::InflatesTooLarge {
                limit: bytes.len() - 1
            }
        );
        // The reused inflater starts clean after a refusal.
        assert_eq!(inflate(&zipped).unwrap(), bytes);
    }

    #[test]
    fn truncated_and_corrupt_zlib_are_bad_zlib() {
        let zipped = deflate(&vec![7u8; 10_000]);
        let cut = &zipped[..zipped.len() - 3];
        let err = inflate(cut).unwrap_err();
        assert!(matches!(err, PayloadError::BadZlib(_)), "{err}");
        let mut corrupt = zipped.clone();
        corrupt[4] ^= 0xff;
        corrupt[5] ^= 0xff;
        let err = inflate(&corrupt).unwrap_err();
        assert!(matches!(err, PayloadError::BadZlib(_)), "{err}");
        assert_eq!(inflate(&zipped).unwrap(), vec![7u8; 10_000]);
    }
}
