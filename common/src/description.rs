//! RQ's default job description: the call string `func(repr(arg), …, k=repr(v))` with
//! kwargs sorted and each repr cut to 75 characters plus `...`.

use serde_json::{Map, Value};

const MAX_REPR: usize = 75;

/// `mymod.add(2, 3)`-style call string, as `Job.get_call_string()` renders it.
pub fn call_string(func_name: &str, args: &[Value], kwargs: &Map<String, Value>) -> String {
    let mut parts: Vec<String> = args.iter().map(|a| truncate(py_repr(a))).collect();
    let mut keys: Vec<&String> = kwargs.keys().collect();
    keys.sort();
    for k in keys {
        parts.push(format!("{k}={}", truncate(py_repr(&kwargs[k]))));
    }
    format!("{func_name}({})", parts.join(", "))
}

fn truncate(s: String) -> String {
    if s.chars().count() > MAX_REPR {
        let cut: String = s.chars().take(MAX_REPR).collect();
        format!("{cut}...")
    } else {
        s
    }
}

/// Python's `repr()` of a JSON-like value.
pub fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => {
            if n.is_f64() {
                py_float_repr(n.as_f64().unwrap_or(0.0))
            } else {
                n.to_string()
            }
        }
        Value::String(s) => py_str_repr(s),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(py_repr).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", py_str_repr(k), py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Python's float `repr`: shortest round-trip digits, exponent form below 1e-4 and from 1e16.
fn py_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let a = f.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        let e = format!("{f:e}");
        let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mant}e{sign}{:02}", exp.abs());
    }
    if f.fract() == 0.0 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

fn py_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_rq_call_strings() {
        let kw = json!({"k": [1, 2]});
        assert_eq!(
            call_string(
                "mymod.echo",
                &[json!(1), json!("x")],
                kw.as_object().unwrap()
            ),
            "mymod.echo(1, 'x', k=[1, 2])"
        );
        assert_eq!(call_string("mymod.fail", &[], &Map::new()), "mymod.fail()");
        assert_eq!(
            py_repr(&json!({"a": null, "b": true, "c": 1.0})),
            "{'a': None, 'b': True, 'c': 1.0}"
        );
        assert_eq!(py_repr(&json!("it's")), "\"it's\"");
        assert_eq!(py_repr(&json!(1e20)), "1e+20");
        assert_eq!(py_repr(&json!(1e-5)), "1e-05");
        assert_eq!(py_repr(&json!(1.5e300)), "1.5e+300");
        assert_eq!(py_repr(&json!(0.5)), "0.5");
    }

    #[test]
    fn long_reprs_are_cut() {
        let long = "x".repeat(100);
        let s = call_string("f", &[json!(long)], &Map::new());
        assert_eq!(s, format!("f('{}...)", "x".repeat(74)));
    }
}
