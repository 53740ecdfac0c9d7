//! Structure-aware generators: pickle opcode streams (random and the known bombs: deep
//! nesting, MARK floods, DUP/APPEND and memo-GET doubling, huge declared lengths),
//! JSON and MessagePack documents (random, deep, wide, lying about lengths), zlib
//! streams (wrapped, corrupt, bombs), byte-level mutations, and the seed corpus of real
//! RQ payloads written by `corpus/make_corpus.py`.

use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::sync::OnceLock;

// ---- the corpus ----

/// The seed corpus (`fuzz/corpus/*.bin`): name and bytes, sorted by name.
pub fn corpus() -> &'static [(String, Vec<u8>)] {
    static CORPUS: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| {
                let p = e.ok()?.path();
                (p.extension()? == "bin").then(|| {
                    let name = p.file_name().unwrap().to_string_lossy().into_owned();
                    (name, std::fs::read(&p).unwrap())
                })
            })
            .collect();
        out.sort();
        out
    })
}

/// Corpus entries whose name starts with `prefix`.
pub fn corpus_with(prefix: &'static str) -> Vec<Vec<u8>> {
    corpus()
        .iter()
        .filter(|(n, _)| n.starts_with(prefix))
        .map(|(_, b)| b.clone())
        .collect()
}

/// The corpus payloads, inflated (the raw serializer bytes).
pub fn corpus_raw(prefix: &'static str) -> Vec<Vec<u8>> {
    corpus_with(prefix)
        .into_iter()
        .map(|b| runq_common::payload::inflate(&b).expect("corpus inflates"))
        .collect()
}

// ---- byte mutations ----

#[derive(Debug, Clone)]
pub enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    /// Repeat a range many times (amplifies nesting and copies).
    Repeat(usize, usize, usize),
    Truncate(usize),
    Splice(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        2 => (any::<usize>(), vec(any::<u8>(), 1..8)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => (any::<usize>(), 1..16usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
        2 => (any::<usize>(), 1..12usize, 2..2000usize).prop_map(|(i, n, k)| Mutation::Repeat(i, n, k)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        2 => (any::<usize>(), pickle_bomb()).prop_map(|(i, b)| Mutation::Splice(i, b)),
    ]
}

pub fn apply(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let len = b.len().max(1);
        match m {
            Mutation::Flip(i, x) => {
                if !b.is_empty() {
                    let i = i % b.len();
                    b[i] ^= x | 1;
                }
            }
            Mutation::Insert(i, x) => {
                let i = i % (b.len() + 1);
                b.splice(i..i, x.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let i = i % len;
                let end = (i + n).min(b.len());
                if i < end {
                    b.drain(i..end);
                }
            }
            Mutation::Repeat(i, n, k) => {
                let i = i % len;
                let end = (i + n).min(b.len());
                if i < end && b.len() < (4 << 20) {
                    let chunk: Vec<u8> = b[i..end].to_vec();
                    let rep: Vec<u8> = chunk.repeat(*k);
                    b.splice(i..i, rep);
                }
            }
            Mutation::Truncate(i) => b.truncate(i % len),
            Mutation::Splice(i, x) => {
                let i = i % (b.len() + 1);
                b.splice(i..i, x.iter().copied());
            }
        }
    }
    b
}

/// Mutated copies of `seeds`.
pub fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (prop::sample::select(seeds), vec(mutation(), 1..6)).prop_map(|(s, m)| apply(s, &m))
}

// ---- pickle ----

fn le(n: u64, width: usize) -> Vec<u8> {
    n.to_le_bytes()[..width].to_vec()
}

/// One opcode with its argument, any of those serde-pickle knows (and a few it does not).
pub fn pickle_op() -> impl Strategy<Value = Vec<u8>> {
    let text = "[0-9a-z._-]{0,12}";
    prop_oneof![
        // structure
        6 => prop::sample::select(vec![
            &b"("[..], b")", b"]", b"}", b"\x8f", b"t", b"l", b"d", b"\x85", b"\x86", b"\x87",
            b"a", b"e", b"s", b"u", b"\x90", b"\x91", b"0", b"1", b"2", b".", b"N", b"\x88",
            b"\x89", b"\x94", b"R", b"b", b"\x81", b"\x92", b"o", b"\x93",
        ]).prop_map(|b| b.to_vec()),
        // memo
        3 => (prop::sample::select(vec![b'q', b'h']), 0u8..8).prop_map(|(o, i)| vec![o, i]),
        1 => (prop::sample::select(vec![b'r', b'j']), 0u32..8).prop_map(|(o, i)| {
            let mut v = vec![o];
            v.extend(le(u64::from(i), 4));
            v
        }),
        1 => (prop::sample::select(vec![b'p', b'g']), 0u32..8).prop_map(|(o, i)| format!("{}{i}\n", o as char).into_bytes()),
        // numbers
        2 => any::<u8>().prop_map(|i| vec![b'K', i]),
        1 => any::<i32>().prop_map(|i| { let mut v = vec![b'J']; v.extend(i.to_le_bytes()); v }),
        1 => any::<u16>().prop_map(|i| { let mut v = vec![b'M']; v.extend(i.to_le_bytes()); v }),
        1 => any::<f64>().prop_map(|f| { let mut v = vec![b'G']; v.extend(f.to_be_bytes()); v }),
        1 => vec(any::<u8>(), 0..12).prop_map(|b| { let mut v = vec![b'\x8a', b.len() as u8]; v.extend(b); v }),
        1 => "-?[0-9]{1,30}".prop_map(|d| format!("I{d}\n").into_bytes()),
        1 => "-?[0-9]{1,60}L?".prop_map(|d| format!("L{d}\n").into_bytes()),
        1 => "-?[0-9.e]{1,12}".prop_map(|d| format!("F{d}\n").into_bytes()),
        // strings and bytes
        3 => text.prop_map(|s| { let mut v = vec![b'\x8c', s.len() as u8]; v.extend(s.bytes()); v }),
        1 => text.prop_map(|s| { let mut v = vec![b'X']; v.extend(le(s.len() as u64, 4)); v.extend(s.bytes()); v }),
        1 => vec(any::<u8>(), 0..8).prop_map(|b| { let mut v = vec![b'C', b.len() as u8]; v.extend(b); v }),
        1 => "[ -~]{0,10}".prop_map(|s| format!("V{s}\n").into_bytes()),
        1 => "[a-z\\\\']{0,10}".prop_map(|s| format!("S'{s}'\n").into_bytes()),
        1 => (text, text).prop_map(|(m, n)| format!("c{m}\n{n}\n").into_bytes()),
        1 => Just(b"c__builtin__\nset\n".to_vec()),
        // protocol and framing
        1 => (0u8..7).prop_map(|p| vec![b'\x80', p]),
        1 => (0u64..64).prop_map(|n| { let mut v = vec![b'\x95']; v.extend(le(n, 8)); v }),
        // anything
        1 => any::<u8>().prop_map(|b| vec![b]),
    ]
}

/// A random opcode stream, usually starting with PROTO and ending with STOP.
pub fn pickle_stream() -> impl Strategy<Value = Vec<u8>> {
    (0u8..6, vec(pickle_op(), 0..120), any::<bool>()).prop_map(|(proto, ops, stop)| {
        let mut p = if proto >= 2 {
            vec![b'\x80', proto]
        } else {
            Vec::new()
        };
        for op in ops {
            p.extend(op);
        }
        if stop {
            p.push(b'.');
        }
        p
    })
}

/// The known bombs, in many sizes.
pub fn pickle_bomb() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // deep lists, tuples, dicts
        (1usize..4000).prop_map(|n| {
            let mut p = vec![b']'; n];
            p.extend(vec![b'a'; n.saturating_sub(1)]);
            p
        }),
        (1usize..4000).prop_map(|n| {
            let mut p = vec![b'('; n];
            p.extend(vec![b't'; n]);
            p
        }),
        (1usize..2000).prop_map(|n| b"}K\x01"
            .repeat(n)
            .into_iter()
            .chain(b"s".repeat(n.saturating_sub(1)))
            .collect()),
        (1usize..2000).prop_map(|n| b"]q\x00".repeat(n)),
        // MARK floods
        (1usize..200_000).prop_map(|n| vec![b'('; n]),
        (1usize..50_000).prop_map(|n| b"(1".repeat(n)),
        // DUP/APPEND and DUP/TUPLE2 doubling
        (1usize..40).prop_map(|k| {
            let mut p = b"]".to_vec();
            p.extend(b"2a".repeat(k));
            p
        }),
        (1usize..40).prop_map(|k| {
            let mut p = b"N".to_vec();
            p.extend(b"2\x86".repeat(k));
            p
        }),
        (1usize..40).prop_map(|k| {
            let mut p = b"\x8c\x08abcdefgh".to_vec();
            p.extend(b"2\x86".repeat(k));
            p
        }),
        // memo GET chains: l(k+1) = [lk, lk]
        (1u8..80).prop_map(|k| {
            let mut p = b"]q\x00".to_vec();
            for i in 0..k {
                p.extend([b'(', b'h', i, b'h', i, b'l', b'q', i + 1]);
            }
            p
        }),
        (1u8..80).prop_map(|k| {
            let mut p = b"N\x94".to_vec();
            for i in 0..k {
                p.extend([b'h', i, b'h', i, b'\x86', b'\x94']);
            }
            p
        }),
        // many GETs of one big string
        (1usize..5000).prop_map(|n| {
            let mut p = vec![b'X'];
            p.extend(le(4096, 4));
            p.extend(vec![b'z'; 4096]);
            p.extend(b"q\x00(");
            p.extend(b"h\x00".repeat(n));
            p.push(b'l');
            p
        }),
        // huge declared lengths
        (
            prop::sample::select(vec![b'\x8d', b'\x8e', b'\x96', b'\x95']),
            any::<u64>(),
            vec(any::<u8>(), 0..16)
        )
            .prop_map(|(op, n, d)| {
                let mut p = vec![op];
                p.extend(n.to_le_bytes());
                p.extend(d);
                p
            }),
        (
            prop::sample::select(vec![b'X', b'B', b'T', b'\x8b']),
            any::<u32>(),
            vec(any::<u8>(), 0..16)
        )
            .prop_map(|(op, n, d)| {
                let mut p = vec![op];
                p.extend(n.to_le_bytes());
                p.extend(d);
                p
            }),
        // long decimal integers
        (1usize..20_000).prop_map(|n| {
            let mut p = b"L".to_vec();
            p.extend(vec![b'9'; n]);
            p.extend(b"L\n");
            p
        }),
        // a recursive list (l.append(l))
        Just(b"]q\x00(K\x01h\x00e".to_vec()),
    ]
}

/// A job payload whose `argument` (0, 1, or kwargs value) is `inner`, protocol 2–5.
pub fn pickle_call_around(inner: Vec<u8>, proto: u8, position: u8) -> Vec<u8> {
    let mut p = vec![b'\x80', proto.clamp(2, 5)];
    p.extend(b"(X\x03\x00\x00\x00f.gq\x00N");
    match position % 3 {
        0 => {
            p.extend(&inner);
            p.extend(b"\x85}t.");
        }
        1 => {
            p.extend(b"K\x01");
            p.extend(&inner);
            p.extend(b"\x86}t.");
        }
        _ => {
            p.extend(b")}X\x01\x00\x00\x00k");
            p.extend(&inner);
            p.extend(b"st.");
        }
    }
    p
}

/// Everything pickle: random streams, bombs (bare and inside a call), mutated corpus.
pub fn pickle_payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => pickle_stream(),
        3 => (pickle_bomb(), 2u8..6, any::<u8>()).prop_map(|(b, pr, pos)| pickle_call_around(b, pr, pos)),
        1 => pickle_bomb().prop_map(|mut b| { b.insert(0, b'\x80'); b.insert(1, 2); b.push(b'.'); b }),
        3 => mutated(corpus_raw("pickle-")),
        1 => (vec(pickle_op(), 0..40), 2u8..6, any::<u8>()).prop_map(|(ops, pr, pos)| pickle_call_around(ops.concat(), pr, pos)),
    ]
}

// ---- JSON ----

/// Random JSON values (nested a few levels).
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "\\PC{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Value::Array),
            vec(("[a-z]{0,6}", inner), 0..8).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A JSON call `[func, null, args, kwargs]` with random arguments.
pub fn json_call() -> impl Strategy<Value = Value> {
    (
        "[a-z._]{1,30}",
        vec(json_value(), 0..4),
        vec(("[a-z]{1,6}", json_value()), 0..3),
    )
        .prop_map(|(f, args, kwargs)| {
            json!([f, null, args, Value::Object(kwargs.into_iter().collect())])
        })
}

pub fn json_payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => json_call().prop_map(|v| runq_common::pyjson::to_vec(&v).unwrap()),
        // deep arrays / objects, closed or not, inside a call or bare
        2 => (1usize..20_000, any::<bool>(), any::<bool>()).prop_map(|(n, close, wrap)| {
            let mut s = "[".repeat(n);
            if close { s.push_str(&"]".repeat(n)); }
            if wrap { format!(r#"["f", null, [{s}], {{}}]"#) } else { s }.into_bytes()
        }),
        1 => (1usize..5000).prop_map(|n| format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n)).into_bytes()),
        // wide
        1 => (1usize..200_000).prop_map(|n| format!(r#"["f", null, [{}0], {{}}]"#, "0,".repeat(n)).into_bytes()),
        1 => (1usize..50_000).prop_map(|n| format!(r#"["f", null, [{}[]], {{}}]"#, "[],".repeat(n)).into_bytes()),
        // long strings and numbers
        1 => (1usize..100_000).prop_map(|n| format!(r#"["f", null, ["{}"], {{}}]"#, "\\u0041".repeat(n)).into_bytes()),
        1 => (1usize..100_000).prop_map(|n| format!(r#"["f", null, [{}], {{}}]"#, "9".repeat(n)).into_bytes()),
        3 => mutated(corpus_raw("json-")),
    ]
}

// ---- MessagePack ----

pub fn msgpack_payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => json_call().prop_map(|v| rmp_serde::to_vec(&v).unwrap()),
        2 => json_value().prop_map(|v| rmp_serde::to_vec(&v).unwrap()),
        // deep arrays and maps
        2 => (1usize..20_000, any::<bool>()).prop_map(|(n, wrap)| {
            let mut p = if wrap { b"\x94\xa1f\xc0\x91".to_vec() } else { Vec::new() };
            p.extend(vec![0x91u8; n]);
            p.push(0xc0);
            p
        }),
        1 => (1usize..5000).prop_map(|n| { let mut p = b"\x81\xa1a".repeat(n); p.push(1); p }),
        // declared lengths beyond the input
        2 => (prop::sample::select(vec![0xdcu8, 0xdd, 0xde, 0xdf, 0xd9, 0xda, 0xdb, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9]),
              any::<u32>(), vec(any::<u8>(), 0..24), any::<bool>())
            .prop_map(|(m, n, d, wrap)| {
                let mut p = if wrap { b"\x94\xa1f\xc0".to_vec() } else { Vec::new() };
                p.push(m);
                let w = match m { 0xd9 | 0xc4 | 0xc7 => 1, 0xdc | 0xde | 0xda | 0xc5 | 0xc8 => 2, _ => 4 };
                p.extend(&n.to_be_bytes()[4 - w..]);
                p.extend(d);
                p
            }),
        // wide
        1 => (1usize..100_000).prop_map(|n| {
            let mut p = b"\x94\xa1f\xc0\xdd".to_vec();
            p.extend((n as u32).to_be_bytes());
            p.extend(vec![0u8; n]);
            p.push(0x80);
            p
        }),
        // random bytes that look like an array
        1 => (0x90u8..0xa0, vec(any::<u8>(), 0..64)).prop_map(|(m, mut d)| { d.insert(0, m); d }),
        2 => (json_call(), vec(mutation(), 1..4)).prop_map(|(v, m)| apply(rmp_serde::to_vec(&v).unwrap(), &m)),
    ]
}

// ---- zlib ----

fn zeros_bomb() -> &'static [u8] {
    static BOMB: OnceLock<Vec<u8>> = OnceLock::new();
    BOMB.get_or_init(|| {
        use std::io::Write;
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..72 {
            enc.write_all(&zeros).unwrap(); // 72 MiB: past the 64 MiB payload limit
        }
        enc.finish().unwrap()
    })
}

fn mark_bomb() -> &'static [u8] {
    static BOMB: OnceLock<Vec<u8>> = OnceLock::new();
    BOMB.get_or_init(|| runq_common::payload::deflate(&vec![b'('; 4_000_000]))
}

/// Stored `data` fields: any raw payload deflated, corrupt or truncated zlib, bombs.
pub fn zlib_payload() -> impl Strategy<Value = Vec<u8>> {
    let raw = prop_oneof![pickle_payload(), json_payload(), msgpack_payload()];
    prop_oneof![
        4 => raw.clone().prop_map(|r| runq_common::payload::deflate(&r)),
        2 => (raw, vec(mutation(), 1..4)).prop_map(|(r, m)| {
            let mut z = runq_common::payload::deflate(&r);
            let keep = z[..2].to_vec();
            z = apply(z, &m);
            // keep a valid header so the stream is read as zlib
            if z.len() >= 2 { z[..2].copy_from_slice(&keep); }
            z
        }),
        1 => (any::<usize>()).prop_map(|cut| { let b = zeros_bomb(); b[..cut % b.len()].to_vec() }),
        1 => Just(zeros_bomb().to_vec()),
        1 => Just(mark_bomb().to_vec()),
        1 => vec(any::<u8>(), 0..64).prop_map(|mut d| { d.splice(0..0, [0x78, 0x9c]); d }),
        2 => mutated(corpus_with("pickle-").into_iter().chain(corpus_with("json-")).collect()),
    ]
}

/// Any serialized value, for `SerializerKind::loads` (return values, `meta`).
pub fn value_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => pickle_payload(),
        1 => pickle_bomb(),
        2 => json_payload(),
        2 => msgpack_payload(),
        2 => mutated(corpus_with("result-")),
        1 => vec(any::<u8>(), 0..64),
    ]
}
