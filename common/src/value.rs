//! Conversions between runq's in-memory value (`serde_json::Value`) and pickle values.
//! Decoding never executes anything: a pickle that names a Python class fails with a
//! message naming what could not be decoded.

use serde_json::{Map, Number, Value};
use serde_pickle::{HashableValue, Value as PValue};

/// Converts a decoded pickle value to a JSON-like value. `what` names the part being
/// decoded for error messages (e.g. `argument 2`).
pub fn from_pickle(v: PValue, what: &str) -> Result<Value, String> {
    Ok(match v {
        PValue::None => Value::Null,
        PValue::Bool(b) => Value::Bool(b),
        PValue::I64(i) => Value::from(i),
        PValue::Int(big) => match big.to_string().parse::<i64>() {
            Ok(i) => Value::from(i),
            Err(_) => match big.to_string().parse::<u64>() {
                Ok(u) => Value::from(u),
                Err(_) => return Err(format!("{what}: integer {big} is too large")),
            },
        },
        PValue::F64(f) => Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| format!("{what}: float {f} has no JSON form"))?,
        PValue::Bytes(b) => Value::String(
            String::from_utf8(b)
                .map_err(|_| format!("{what}: non-UTF-8 bytes are not supported"))?,
        ),
        PValue::String(s) => Value::String(s),
        PValue::List(items) | PValue::Tuple(items) => Value::Array(
            items
                .into_iter()
                .map(|i| from_pickle(i, what))
                .collect::<Result<_, _>>()?,
        ),
        PValue::Set(items) | PValue::FrozenSet(items) => Value::Array(
            items
                .into_iter()
                .map(|i| from_pickle(i.into_value(), what))
                .collect::<Result<_, _>>()?,
        ),
        PValue::Dict(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                out.insert(key_text(k, what)?, from_pickle(v, what)?);
            }
            Value::Object(out)
        }
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
        other => return Err(format!("{what}: unsupported dict key {other:?}")),
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
