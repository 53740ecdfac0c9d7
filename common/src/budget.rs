//! Decoding budgets for untrusted bytes: the limits (nesting depth, estimated decoded
//! size, work), the typed error that names the limit hit and where, and the
//! pre-scans for JSON and MessagePack. The pickle pre-scan is in `pickle_budget`.
//!
//! Every decoder runs only after its pre-scan has walked the bytes without building
//! values and found them within budget, so neither the thread's stack nor the
//! allocator is the limit: hostile input gets a one-line error.

use crate::serializer::SerializerKind;
use std::fmt;

/// Deepest container nesting any decoded value may have (`[]` is 1, `[[]]` is 2; the
/// RQ call tuple counts, so a job argument may nest 98 levels). Below serde_json's own
/// fixed limit (127 levels), so all three serializers refuse at the same depth with
/// the same error; real payloads nest a handful of levels.
pub const MAX_DEPTH: usize = 100;

/// The decoded-size estimate may be this many times the input…
pub const SIZE_FACTOR: u64 = 64;
/// …or this much for small inputs…
pub const MIN_SIZE_BUDGET: u64 = 1 << 20;
/// …but never more than this.
pub const MAX_SIZE_BUDGET: u64 = 256 << 20;

/// Bytes one decoded value counts for in the estimate (`size_of::<serde_json::Value>()`);
/// strings and bytes add their length.
pub const NODE_BYTES: u64 = 32;

/// Decoding steps per input byte (opcodes plus copied values, one per [`NODE_BYTES`]).
pub const STEPS_FACTOR: u64 = 16;

/// Longest decimal integer text (pickle `LONG`) accepted: Python's own
/// `sys.int_info.default_max_str_digits`. Longer ones cost quadratic time to convert.
pub const MAX_INT_DIGITS: usize = 4300;

/// The limits one decode runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub max_depth: usize,
    /// Estimated decoded size, shared references counted as full copies.
    pub max_bytes: u64,
    /// Opcodes plus copied values.
    pub max_steps: u64,
}

impl Budget {
    /// The budget for decoding `input_len` bytes: depth ≤ [`MAX_DEPTH`], decoded size ≤
    /// max(64 × input, 1 MiB) and ≤ 256 MiB.
    pub fn for_input(input_len: usize) -> Budget {
        let len = input_len as u64;
        Budget {
            max_depth: MAX_DEPTH,
            max_bytes: len
                .saturating_mul(SIZE_FACTOR)
                .clamp(MIN_SIZE_BUDGET, MAX_SIZE_BUDGET),
            max_steps: len
                .saturating_mul(STEPS_FACTOR)
                .clamp(MIN_SIZE_BUDGET, MAX_SIZE_BUDGET),
        }
    }
}

/// Which limit a decode hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limit {
    /// Containers nested deeper than `max` levels.
    Depth { max: usize },
    /// The decoded value (or what decoding allocates) would exceed `max` bytes.
    Size { max: u64 },
    /// More decoding steps than `max`.
    Work { max: u64 },
    /// A length prefix larger than what follows it.
    DeclaredLength { declared: u64, remaining: u64 },
    /// A decimal integer text longer than [`MAX_INT_DIGITS`].
    Digits { digits: usize, max: usize },
    /// A pickle changes a memoized value after referencing it (only recursive
    /// structures do; serde-pickle cannot decode them either).
    SharedMutation { memo: u32 },
    /// A pickle stores two values under one memo id (Python never does).
    MemoReuse { memo: u32 },
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Depth { max } => write!(f, "nested deeper than {max} levels"),
            Limit::Size { max } => write!(
                f,
                "would decode to more than {max} bytes (estimated, shared references counted as copies)"
            ),
            Limit::Work { max } => write!(f, "takes more than {max} decoding steps"),
            Limit::DeclaredLength { declared, remaining } => write!(
                f,
                "declares a length of {declared} with only {remaining} bytes left"
            ),
            Limit::Digits { digits, max } => {
                write!(f, "has a {digits}-digit integer (limit {max})")
            }
            Limit::SharedMutation { memo } => write!(
                f,
                "changes memo {memo} after sharing it (recursive structures are not supported)"
            ),
            Limit::MemoReuse { memo } => write!(f, "stores memo {memo} twice"),
        }
    }
}

/// Where in an RQ job payload `(func_name, instance, args, kwargs)` a limit was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Not inside one of the four parts (or not known).
    Whole,
    FuncName,
    Instance,
    /// The args container itself.
    Args,
    Argument(usize),
    Kwargs,
}

impl Place {
    /// From the position in the top-level 4-tuple and, inside args, the position there.
    pub fn from_path(top: Option<usize>, second: Option<usize>) -> Place {
        match (top, second) {
            (Some(0), _) => Place::FuncName,
            (Some(1), _) => Place::Instance,
            (Some(2), Some(i)) => Place::Argument(i),
            (Some(2), None) => Place::Args,
            (Some(3), _) => Place::Kwargs,
            _ => Place::Whole,
        }
    }

    fn describe(self) -> Option<String> {
        Some(match self {
            Place::Whole => return None,
            Place::FuncName => "func_name".into(),
            Place::Instance => "instance".into(),
            Place::Args => "args".into(),
            Place::Argument(i) => format!("argument {i}"),
            Place::Kwargs => "kwargs".into(),
        })
    }
}

/// A pre-scan's verdict: the limit, the byte offset where it was hit and (for job
/// payloads) which part of the call it was in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    pub limit: Limit,
    pub offset: usize,
    pub place: Place,
}

/// A decode refused by its budget. One line: `argument 2: pickle nested deeper than
/// 100 levels at byte 1603`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{serializer} {limit} at byte {offset}", place.as_deref().map(|p| format!("{p}: ")).unwrap_or_default())]
pub struct LimitError {
    pub serializer: SerializerKind,
    /// `argument 2`, `kwargs`, `return value`, `meta`; `None` for a whole job payload.
    pub place: Option<String>,
    pub offset: usize,
    pub limit: Limit,
}

impl Exceeded {
    /// The error for a job payload (the place comes from the scan).
    pub fn in_payload(self, serializer: SerializerKind) -> LimitError {
        LimitError {
            serializer,
            place: self.place.describe(),
            offset: self.offset,
            limit: self.limit,
        }
    }

    /// The error for a single value named `what` (`return value`, `meta`).
    pub fn in_value(self, serializer: SerializerKind, what: &str) -> LimitError {
        LimitError {
            serializer,
            place: Some(crate::echo::short(what).into_owned()),
            offset: self.offset,
            limit: self.limit,
        }
    }
}

/// Walks `bytes` as `kind` without building values; `Err` when a limit would be hit.
/// Malformed input is not reported here (the decoder reports it), only input that
/// would exceed the budget up to where it stops being well formed.
pub fn check(kind: SerializerKind, bytes: &[u8], budget: &Budget) -> Result<(), Exceeded> {
    match kind {
        SerializerKind::Pickle => crate::pickle_budget::scan(bytes, budget),
        SerializerKind::Json => scan_json(bytes, budget),
        SerializerKind::Msgpack => scan_msgpack(bytes, budget),
    }
}

/// Tracks the estimate and the position path while a scan walks containers.
struct Tally<'b> {
    budget: &'b Budget,
    bytes: u64,
}

impl Tally<'_> {
    fn add(&mut self, n: u64, offset: usize, place: impl Fn() -> Place) -> Result<(), Exceeded> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > self.budget.max_bytes {
            return Err(Exceeded {
                limit: Limit::Size {
                    max: self.budget.max_bytes,
                },
                offset,
                place: place(),
            });
        }
        Ok(())
    }
}

fn place_of(positions: &[usize]) -> Place {
    Place::from_path(positions.first().copied(), positions.get(1).copied())
}

/// JSON: nesting depth and the estimate (one node per value, plus string lengths).
/// serde_json's own limit (127 levels) would answer with its own message and its
/// documents have no length prefixes or references, so depth and size are all there is.
pub fn scan_json(bytes: &[u8], budget: &Budget) -> Result<(), Exceeded> {
    // Element index within each open container (objects count keys and values).
    let mut open: Vec<usize> = Vec::new();
    let mut tally = Tally { budget, bytes: 0 };
    let place = |open: &[usize]| {
        // Inside an object the index counts keys and values; only arrays' matter.
        place_of(open)
    };
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b':' => i += 1,
            b',' => {
                if let Some(n) = open.last_mut() {
                    *n += 1;
                }
                i += 1;
            }
            b'[' | b'{' => {
                tally.add(NODE_BYTES, i, || place(&open))?;
                if open.len() >= budget.max_depth {
                    return Err(Exceeded {
                        limit: Limit::Depth {
                            max: budget.max_depth,
                        },
                        offset: i,
                        place: place(&open),
                    });
                }
                open.push(0);
                i += 1;
            }
            b']' | b'}' => {
                if open.pop().is_none() {
                    return Ok(()); // malformed: serde_json says so
                }
                i += 1;
            }
            b'"' => {
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                let len = (i.min(bytes.len()) - start) as u64;
                tally.add(NODE_BYTES + len, start, || place(&open))?;
            }
            _ => {
                let start = i;
                while i < bytes.len()
                    && !matches!(
                        bytes[i],
                        b',' | b']'
                            | b'}'
                            | b':'
                            | b'"'
                            | b'['
                            | b'{'
                            | b' '
                            | b'\t'
                            | b'\n'
                            | b'\r'
                    )
                {
                    i += 1;
                }
                tally.add(NODE_BYTES, start, || place(&open))?;
            }
        }
    }
    Ok(())
}

/// MessagePack: nesting depth, declared lengths (a string, binary or extension longer
/// than the rest of the input, or an array/map with more elements than bytes left)
/// and the estimate. rmp-serde's own depth limit is 1024 levels of recursion, deep
/// enough to overflow a small thread stack, and it trusts declared lengths as far as
/// the input goes.
pub fn scan_msgpack(bytes: &[u8], budget: &Budget) -> Result<(), Exceeded> {
    // (declared elements, elements left) for each open array or map.
    let mut open: Vec<(u64, u64, bool)> = Vec::new();
    let mut tally = Tally { budget, bytes: 0 };
    let positions = |open: &[(u64, u64, bool)]| -> Place {
        let idx: Vec<usize> = open
            .iter()
            .map(|&(n, left, map)| {
                let i = (n - left) as usize;
                if map {
                    i / 2
                } else {
                    i
                }
            })
            .collect();
        place_of(&idx)
    };
    let mut i = 0usize;
    loop {
        let Some(&m) = bytes.get(i) else {
            return Ok(()); // truncated (or empty): rmp-serde says so
        };
        let at = i;
        let rest = |from: usize| (bytes.len().saturating_sub(from)) as u64;
        let be = |from: usize, n: usize| -> Option<u64> {
            let s = bytes.get(from..from + n)?;
            Some(s.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
        };
        let declared = |len: u64, from: usize| -> Result<(), Exceeded> {
            if len > rest(from) {
                return Err(Exceeded {
                    limit: Limit::DeclaredLength {
                        declared: len,
                        remaining: rest(from),
                    },
                    offset: at,
                    place: positions(&open),
                });
            }
            Ok(())
        };
        // (bytes of payload after the marker and its length field, container elements)
        let (skip, container): (u64, Option<(u64, bool)>) = match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => {
                i += 1;
                (0, None)
            }
            0x80..=0x8f => {
                i += 1;
                (0, Some((u64::from(m & 0x0f) * 2, true)))
            }
            0x90..=0x9f => {
                i += 1;
                (0, Some((u64::from(m & 0x0f), false)))
            }
            0xa0..=0xbf => {
                i += 1;
                (u64::from(m & 0x1f), None)
            }
            0xc4..=0xc6 | 0xd9..=0xdb => {
                let w = match m {
                    0xc4 | 0xd9 => 1,
                    0xc5 | 0xda => 2,
                    _ => 4,
                };
                let Some(len) = be(i + 1, w) else {
                    return Ok(());
                };
                i += 1 + w;
                (len, None)
            }
            0xc7..=0xc9 => {
                let w = match m {
                    0xc7 => 1,
                    0xc8 => 2,
                    _ => 4,
                };
                let Some(len) = be(i + 1, w) else {
                    return Ok(());
                };
                i += 1 + w;
                (len + 1, None) // the type byte
            }
            0xca | 0xce | 0xd2 => {
                i += 1;
                (4, None)
            }
            0xcb | 0xcf | 0xd3 => {
                i += 1;
                (8, None)
            }
            0xcc | 0xd0 => {
                i += 1;
                (1, None)
            }
            0xcd | 0xd1 => {
                i += 1;
                (2, None)
            }
            0xd4..=0xd8 => {
                i += 1;
                (1 + (1u64 << (m - 0xd4)), None)
            }
            0xdc..=0xdf => {
                let w = if m == 0xdc || m == 0xde { 2 } else { 4 };
                let Some(n) = be(i + 1, w) else {
                    return Ok(());
                };
                i += 1 + w;
                let map = m >= 0xde;
                (0, Some((if map { n * 2 } else { n }, map)))
            }
            0xc1 => return Ok(()), // never used: rmp-serde refuses it
        };
        declared(skip, i)?;
        tally.add(NODE_BYTES + skip, at, || positions(&open))?;
        i += skip as usize;
        if let Some((n, map)) = container {
            // Every element takes at least one byte.
            declared(n, i)?;
            if open.len() >= budget.max_depth {
                return Err(Exceeded {
                    limit: Limit::Depth {
                        max: budget.max_depth,
                    },
                    offset: at,
                    place: positions(&open),
                });
            }
            if n > 0 {
                open.push((n, n, map));
                continue;
            }
        }
        // One element complete: close every container it completes.
        loop {
            match open.last_mut() {
                None => return Ok(()),
                Some(top) => {
                    top.1 -= 1;
                    if top.1 > 0 {
                        break;
                    }
                    open.pop();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_scales_with_input_within_bounds() {
        assert_eq!(Budget::for_input(10).max_bytes, 1 << 20);
        assert_eq!(Budget::for_input(1 << 20).max_bytes, 64 << 20);
        assert_eq!(Budget::for_input(64 << 20).max_bytes, 256 << 20);
        assert_eq!(Budget::for_input(0).max_depth, MAX_DEPTH);
    }

    #[test]
    fn json_depth_and_place() {
        let b = Budget::for_input(1000);
        let ok = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(scan_json(ok.as_bytes(), &b).is_ok());
        let deep = format!(r#"["f", null, [1, {}], {{}}]"#, "[".repeat(99));
        let e = scan_json(deep.as_bytes(), &b).unwrap_err();
        assert_eq!(e.limit, Limit::Depth { max: 100 });
        assert_eq!(e.place, Place::Argument(1));
        // Strings with brackets and escaped quotes do not count.
        assert!(scan_json(br#"["[[[\"[[[", "]]]"]"#, &b).is_ok());
    }

    #[test]
    fn json_size_is_bounded() {
        let big = format!("[{}0]", "0,".repeat(40_000));
        let e = scan_json(big.as_bytes(), &Budget::for_input(1000)).unwrap_err();
        assert!(matches!(e.limit, Limit::Size { .. }), "{e:?}");
    }

    #[test]
    fn msgpack_declared_lengths_depth_and_place() {
        let b = Budget::for_input(100);
        // str32 claiming 4 GiB
        let e = scan_msgpack(b"\xdb\xff\xff\xff\xffab", &b).unwrap_err();
        assert_eq!(
            e.limit,
            Limit::DeclaredLength {
                declared: 0xffff_ffff,
                remaining: 2
            }
        );
        // array32 claiming 4 billion elements
        let e = scan_msgpack(b"\xdd\xff\xff\xff\xff\x01", &b).unwrap_err();
        assert!(matches!(e.limit, Limit::DeclaredLength { .. }));
        // ["f", nil, [[[[…]]]], {}]
        let mut deep = b"\x94\xa1f\xc0\x91".to_vec();
        deep.extend(std::iter::repeat_n(0x91u8, 200));
        let e = scan_msgpack(&deep, &Budget::for_input(deep.len())).unwrap_err();
        assert_eq!(e.limit, Limit::Depth { max: 100 });
        assert_eq!(e.place, Place::Argument(0));
        // A well-formed value passes.
        let v = rmp_serde::to_vec(&serde_json::json!(["f", null, [1, "x"], {"k": [1.5]}])).unwrap();
        assert!(scan_msgpack(&v, &b).is_ok());
    }
}
