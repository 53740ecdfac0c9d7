//! Reading MessagePack into runq's value (`serde_json::Value`) with an explicit stack:
//! rmp-serde recurses through serde's visitors (several KiB of thread stack per level
//! in a debug build), this does not. It reads what rmp-serde reads into a
//! `serde_json::Value` and refuses what it refuses (binary, extension types, non-string
//! map keys, invalid UTF-8); bytes after the first value are ignored, as rmp-serde
//! ignores them. Writing stays with rmp-serde.

use serde_json::{Map, Number, Value};

enum Open {
    Array(Vec<Value>, u64),
    /// Entries left, and the key waiting for its value.
    Map(Map<String, Value>, u64, Option<String>),
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: u64) -> Result<&[u8], String> {
        let at = self.pos;
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| at.checked_add(n))
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| format!("unexpected end of data at byte {at}"))?;
        self.pos = end;
        Ok(&self.b[at..end])
    }

    fn uint(&mut self, n: u64) -> Result<u64, String> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |a, &b| (a << 8) | u64::from(b)))
    }

    fn text(&mut self, n: u64) -> Result<String, String> {
        let at = self.pos;
        let s = self.take(n)?;
        std::str::from_utf8(s)
            .map(str::to_owned)
            .map_err(|_| format!("string at byte {at} is not valid UTF-8"))
    }
}

/// What one marker starts.
enum Item {
    Value(Value),
    Array(u64),
    Map(u64),
}

fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

fn item(r: &mut Reader<'_>) -> Result<Item, String> {
    let at = r.pos;
    let m = r.take(1)?[0];
    let refused = |what: &str| Err(format!("{what} at byte {at} has no JSON form"));
    Ok(Item::Value(match m {
        0x00..=0x7f => Value::from(m),
        0xe0..=0xff => Value::from(m as i8),
        0xc0 => Value::Null,
        0xc2 => Value::Bool(false),
        0xc3 => Value::Bool(true),
        0x80..=0x8f => return Ok(Item::Map(u64::from(m & 0x0f))),
        0x90..=0x9f => return Ok(Item::Array(u64::from(m & 0x0f))),
        0xdc => return Ok(Item::Array(r.uint(2)?)),
        0xdd => return Ok(Item::Array(r.uint(4)?)),
        0xde => return Ok(Item::Map(r.uint(2)?)),
        0xdf => return Ok(Item::Map(r.uint(4)?)),
        0xa0..=0xbf => Value::String(r.text(u64::from(m & 0x1f))?),
        0xd9 => {
            let n = r.uint(1)?;
            Value::String(r.text(n)?)
        }
        0xda => {
            let n = r.uint(2)?;
            Value::String(r.text(n)?)
        }
        0xdb => {
            let n = r.uint(4)?;
            Value::String(r.text(n)?)
        }
        0xcc => Value::from(r.uint(1)?),
        0xcd => Value::from(r.uint(2)?),
        0xce => Value::from(r.uint(4)?),
        0xcf => Value::from(r.uint(8)?),
        0xd0 => Value::from(r.uint(1)? as u8 as i8),
        0xd1 => Value::from(r.uint(2)? as u16 as i16),
        0xd2 => Value::from(r.uint(4)? as u32 as i32),
        0xd3 => Value::from(r.uint(8)? as i64),
        0xca => float(f64::from(f32::from_bits(r.uint(4)? as u32))),
        0xcb => float(f64::from_bits(r.uint(8)?)),
        0xc4..=0xc6 => return refused("binary data"),
        0xc7..=0xc9 | 0xd4..=0xd8 => return refused("an extension type"),
        0xc1 => return Err(format!("reserved marker 0xc1 at byte {at}")),
    }))
}

/// Decodes the first MessagePack value in `bytes`.
pub fn to_value(bytes: &[u8]) -> Result<Value, String> {
    let mut r = Reader { b: bytes, pos: 0 };
    let mut stack: Vec<Open> = Vec::new();
    loop {
        // A map waiting for a key reads a string, nothing else.
        if let Some(Open::Map(_, left, key @ None)) = stack.last_mut() {
            if *left > 0 {
                let at = r.pos;
                let m = r.take(1)?[0];
                let n = match m {
                    0xa0..=0xbf => u64::from(m & 0x1f),
                    0xd9 => r.uint(1)?,
                    0xda => r.uint(2)?,
                    0xdb => r.uint(4)?,
                    _ => return Err(format!("map key at byte {at} is not a string")),
                };
                *key = Some(r.text(n)?);
                continue;
            }
        }
        let mut done = match item(&mut r)? {
            Item::Value(v) => Some(v),
            Item::Array(0) => Some(Value::Array(Vec::new())),
            Item::Map(0) => Some(Value::Object(Map::new())),
            Item::Array(n) => {
                stack.push(Open::Array(Vec::with_capacity(n.min(4096) as usize), n));
                None
            }
            Item::Map(n) => {
                stack.push(Open::Map(Map::new(), n, None));
                None
            }
        };
        // Hand finished values to their containers; close the full ones.
        loop {
            let full = match stack.last_mut() {
                None => return Ok(done.expect("a finished value when the stack is empty")),
                Some(Open::Array(items, left)) => {
                    if let Some(v) = done.take() {
                        items.push(v);
                        *left -= 1;
                    }
                    *left == 0
                }
                Some(Open::Map(map, left, key)) => {
                    if let Some(v) = done.take() {
                        map.insert(key.take().expect("a key before its value"), v);
                        *left -= 1;
                    }
                    *left == 0
                }
            };
            if !full {
                break;
            }
            done = Some(match stack.pop().expect("top exists") {
                Open::Array(items, _) => Value::Array(items),
                Open::Map(map, _, _) => Value::Object(map),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn agrees_with_rmp_serde() {
        for v in [
            json!(null),
            json!([
                1,
                -1,
                -200,
                70000,
                -70000,
                u64::MAX,
                i64::MIN,
                1.5,
                "x",
                true
            ]),
            json!({"a": {"b": [[], {}, ""]}, "long": "y".repeat(300)}),
            json!([[[[1]]], {"k": [2, {"z": null}]}]),
            json!([{}, [], {"e": {}}, [[]]]),
        ] {
            let b = rmp_serde::to_vec(&v).unwrap();
            assert_eq!(to_value(&b).unwrap(), v);
            let theirs: Value = rmp_serde::from_slice(&b).unwrap();
            assert_eq!(to_value(&b).unwrap(), theirs);
        }
        // f32 and NaN as rmp-serde reads them into a Value
        for b in [
            &b"\xca\x3f\xc0\x00\x00"[..],
            b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00",
        ] {
            let theirs: Value = rmp_serde::from_slice(b).unwrap();
            assert_eq!(to_value(b).unwrap(), theirs);
        }
    }

    #[test]
    fn refuses_what_rmp_serde_refuses() {
        for b in [
            &b"\xc4\x01a"[..], // binary
            b"\xd4\x01\x02",   // fixext1
            b"\x81\x01\x02",   // integer key
            b"\xa2\xff\xfe",   // invalid UTF-8
            b"\x92\x01",       // truncated
            b"\xc1",           // reserved
            b"",
        ] {
            assert!(to_value(b).is_err(), "{b:?}");
            assert!(rmp_serde::from_slice::<Value>(b).is_err(), "{b:?}");
        }
    }
}
