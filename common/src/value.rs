//! Conversions between runq's in-memory value (`serde_json::Value`) and pickle values.
//! Decoding never executes anything: a pickle that names a Python class fails with a
//! message naming what could not be decoded. `from_pickle` uses its own stack, not the
//! thread's, and refuses values nested deeper than `budget::MAX_DEPTH`.

use crate::budget::MAX_DEPTH;
use crate::echo;
use serde_json::{Map, Number, Value};
use serde_pickle::{HashableValue, Value as PValue};

/// Converts a decoded pickle value to a JSON-like value. `what` names the part being
/// decoded for error messages (e.g. `argument 2`). Iterative (an explicit stack, not
/// the thread's), and values nested deeper than [`MAX_DEPTH`] are refused; errors
/// quote no more than a short head of the value.
pub fn from_pickle(v: PValue, what: &str) -> Result<Value, String> {
    /// A container being converted: what is done, what is left.
    enum Frame {
        Seq(Vec<Value>, std::vec::IntoIter<PValue>),
        Set(
            Vec<Value>,
            std::collections::btree_set::IntoIter<HashableValue>,
        ),
        Dict(
            Map<String, Value>,
            String,
            std::collections::btree_map::IntoIter<HashableValue, PValue>,
        ),
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut next = v;
    loop {
        // Descend: `next` is either done at once or opens a container.
        let open = |stack: &Vec<Frame>| {
            if stack.len() >= MAX_DEPTH {
                Err(format!("{what}: nested deeper than {MAX_DEPTH} levels"))
            } else {
                Ok(())
            }
        };
        let mut done = match next {
            PValue::List(items) | PValue::Tuple(items) => {
                open(&stack)?;
                stack.push(Frame::Seq(
                    Vec::with_capacity(items.len()),
                    items.into_iter(),
                ));
                None
            }
            PValue::Set(items) | PValue::FrozenSet(items) => {
                open(&stack)?;
                stack.push(Frame::Set(
                    Vec::with_capacity(items.len()),
                    items.into_iter(),
                ));
                None
            }
            PValue::Dict(map) => {
                open(&stack)?;
                stack.push(Frame::Dict(Map::new(), String::new(), map.into_iter()));
                None
            }
            scalar => Some(from_scalar(scalar, what)?),
        };
        // Ascend: hand finished values to their container, find the next child.
        loop {
            let Some(top) = stack.last_mut() else {
                return Ok(done.expect("a finished value when the stack is empty"));
            };
            let child = match top {
                Frame::Seq(out, rest) => {
                    out.extend(done.take());
                    rest.next()
                }
                Frame::Set(out, rest) => {
                    out.extend(done.take());
                    rest.next().map(HashableValue::into_value)
                }
                Frame::Dict(out, key, rest) => {
                    if let Some(v) = done.take() {
                        out.insert(std::mem::take(key), v);
                    }
                    match rest.next() {
                        Some((k, v)) => {
                            *key = key_text(k, what)?;
                            Some(v)
                        }
                        None => None,
                    }
                }
            };
            match child {
                Some(c) => {
                    next = c;
                    break;
                }
                None => {
                    done = Some(match stack.pop().expect("top exists") {
                        Frame::Seq(out, _) | Frame::Set(out, _) => Value::Array(out),
                        Frame::Dict(out, _, _) => Value::Object(out),
                    });
                }
            }
        }
    }
}

/// A value that is not a container.
fn from_scalar(v: PValue, what: &str) -> Result<Value, String> {
    Ok(match v {
        PValue::None => Value::Null,
        PValue::Bool(b) => Value::Bool(b),
        PValue::I64(i) => Value::from(i),
        // Never through decimal text: that is quadratic in the number's length.
        PValue::Int(big) => match (i64::try_from(&big), u64::try_from(&big)) {
            (Ok(i), _) => Value::from(i),
            (_, Ok(u)) => Value::from(u),
            _ => {
                return Err(format!(
                    "{what}: integer of {} bits is too large",
                    big.bits()
                ))
            }
        },
        PValue::F64(f) => Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| format!("{what}: float {f} has no JSON form"))?,
        PValue::Bytes(b) => Value::String(
            String::from_utf8(b)
                .map_err(|_| format!("{what}: non-UTF-8 bytes are not supported"))?,
        ),
        PValue::String(s) => Value::String(s),
        PValue::List(_)
        | PValue::Tuple(_)
        | PValue::Set(_)
        | PValue::FrozenSet(_)
        | PValue::Dict(_) => unreachable!("containers are converted by from_pickle"),
    })
}

fn key_text(k: HashableValue, what: &str) -> Result<String, String> {
    Ok(match k {
        HashableValue::String(s) => s,
        HashableValue::I64(i) => i.to_string(),
        HashableValue::Int(i) => i.to_string(),
        HashableValue::Bool(b) => if b { "True" } else { "False" }.to_string(),
        HashableValue::None => "None".to_string(),
        HashableValue::F64(f) => f.to_string(),
        HashableValue::Bytes(b) => {
            String::from_utf8(b).map_err(|_| format!("{what}: non-UTF-8 bytes dict key"))?
        }
        other => {
            return Err(format!(
                "{what}: unsupported dict key {}",
                echo::clip_display(&format_args!("{other:?}"), echo::ECHO_CHARS)
            ))
        }
    })
}

/// Converts a JSON-like value to a pickle value (arrays become lists).
pub fn to_pickle(v: &Value) -> PValue {
    match v {
        Value::Null => PValue::None,
        Value::Bool(b) => PValue::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                PValue::I64(i)
            } else if let Some(u) = n.as_u64() {
                PValue::Int(u.into())
            } else {
                PValue::F64(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => PValue::String(s.clone()),
        Value::Array(items) => PValue::List(items.iter().map(to_pickle).collect()),
        Value::Object(map) => PValue::Dict(
            map.iter()
                .map(|(k, v)| (HashableValue::String(k.clone()), to_pickle(v)))
                .collect(),
        ),
    }
}
