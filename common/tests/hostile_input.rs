//! The reported attacks on decoding ("Hostile input never takes a worker down"), each
//! answered with a typed one-line error, fast and without large allocation; and proof
//! that decoding at the depth limit fits a 256 KiB thread stack.

use runq_common::budget::{Limit, MAX_DEPTH};
use runq_common::payload::{self, PayloadError, MAX_FUNC_NAME_BYTES};
use runq_common::serializer::LoadError;
use runq_common::SerializerKind;
use std::time::{Duration, Instant};

/// Runs `f` and checks it took well under a second (debug build, shared machine).
fn quick<T>(f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = f();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    out
}

fn one_line(e: &impl std::fmt::Display) -> String {
    let s = e.to_string();
    assert!(!s.contains('\n'), "{s}");
    assert!(s.len() < 600, "{} bytes: {}", s.len(), &s[..600]);
    s
}

fn limit_of(e: &PayloadError) -> &Limit {
    match e {
        PayloadError::Limit(l) => &l.limit,
        other => panic!("not a limit error: {other}"),
    }
}

#[test]
fn pickle_nested_1600_deep_is_refused() {
    let mut p = b"\x80\x02".to_vec();
    p.extend([b']'; 1600]);
    p.extend([b'a'; 1599]);
    p.push(b'.');
    assert_eq!(p.len(), 3202);
    let e = quick(|| payload::decode(&p)).unwrap_err();
    assert_eq!(limit_of(&e), &Limit::Depth { max: MAX_DEPTH });
    assert_eq!(
        one_line(&e),
        "DeserializationError: job payload refused: pickle nested deeper than 100 levels at byte 1701"
    );
    // The same bytes as a return value (`runq job ID`).
    let e = quick(|| SerializerKind::Pickle.loads_bounded(&p, "return value")).unwrap_err();
    assert!(matches!(e, LoadError::Limit(_)));
    assert_eq!(
        one_line(&e),
        "return value: pickle nested deeper than 100 levels at byte 1701"
    );
}

#[test]
fn mark_flood_zlib_bomb_is_refused() {
    let data = payload::deflate(&[b'('; 1_000_000]);
    assert!(data.len() < 2000, "{}", data.len());
    let e = quick(|| payload::decode(&data)).unwrap_err();
    assert_eq!(limit_of(&e), &Limit::Depth { max: MAX_DEPTH });
    one_line(&e);
}

#[test]
fn dup_append_doubling_is_refused() {
    // l = []; 26 × (DUP, APPEND): 2^26 copies in serde-pickle
    let mut p = b"\x80\x02]".to_vec();
    for _ in 0..26 {
        p.extend(b"2a");
    }
    p.push(b'.');
    let e = quick(|| payload::decode(&payload::deflate(&p))).unwrap_err();
    assert!(matches!(limit_of(&e), Limit::Size { .. }), "{e}");
    assert!(one_line(&e).contains("would decode to more than 1048576 bytes"));
}

#[test]
fn memo_get_doubling_is_refused() {
    // l0 = []; l(k+1) = [lk, lk]: shared references become 2^k copies
    let mut p = b"\x80\x02]q\x00".to_vec();
    for k in 0u8..60 {
        p.extend([b'(', b'h', k, b'h', k, b'l', b'q', k + 1]);
    }
    p.push(b'.');
    let e = quick(|| SerializerKind::Pickle.loads_bounded(&p, "meta")).unwrap_err();
    assert!(one_line(&e).starts_with("meta: pickle would decode to more than"));
}

#[test]
fn deep_json_is_refused_naming_the_argument() {
    let n = 100_000;
    let p = format!(
        r#"["f", null, [1, 2, {}{}], {{}}]"#,
        "[".repeat(n),
        "]".repeat(n)
    );
    let e = quick(|| payload::decode(p.as_bytes())).unwrap_err();
    assert_eq!(limit_of(&e), &Limit::Depth { max: MAX_DEPTH });
    assert_eq!(
        one_line(&e),
        "DeserializationError: job payload refused: argument 2: json nested deeper than 100 levels at byte 117"
    );
}

#[test]
fn deep_msgpack_is_refused_naming_the_argument() {
    let mut p = b"\x94\xa1f\xc0\x91".to_vec();
    p.extend(std::iter::repeat_n(0x91u8, 100_000));
    p.push(0xc0);
    p.push(0x80);
    let e = quick(|| payload::decode(&p)).unwrap_err();
    assert_eq!(limit_of(&e), &Limit::Depth { max: MAX_DEPTH });
    assert!(
        one_line(&e).starts_with("DeserializationError: job payload refused: argument 0: msgpack nested deeper than 100 levels"),
        "{e}"
    );
}

#[test]
fn huge_declared_lengths_are_refused() {
    // pickle BINUNICODE8 of 2^63 bytes; msgpack str32 and array32 of 4 Gi
    for p in [
        &b"\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\x7fabc."[..],
        b"\x94\xdb\xff\xff\xff\xffabc",
        b"\x94\xa1f\xc0\xdd\xff\xff\xff\xff\x01",
    ] {
        let e = quick(|| payload::decode(p)).unwrap_err();
        assert!(matches!(limit_of(&e), Limit::DeclaredLength { .. }), "{e}");
        one_line(&e);
    }
}

#[test]
fn corrupt_zlib_is_reported_as_zlib() {
    let mut data = payload::deflate(br#"["f", null, [], {}]"#);
    let last = data.len() - 3;
    data[last] ^= 0xff; // break the checksum
    let e = payload::decode(&data).unwrap_err();
    assert!(matches!(e, PayloadError::BadZlib(_)), "{e}");
    assert!(
        one_line(&e).starts_with("DeserializationError: job payload is not valid zlib data: "),
        "{e}"
    );
    let e = payload::decode(b"\x78\x9c\x00garbage, not deflate").unwrap_err();
    assert!(matches!(e, PayloadError::BadZlib(_)), "{e}");
    // A truncated stream too.
    let data = payload::deflate(&[b'x'; 10_000]);
    let e = payload::decode(&data[..data.len() / 2]).unwrap_err();
    assert!(matches!(e, PayloadError::BadZlib(_)), "{e}");
    // Bytes that are no zlib header at all keep RQ's raw fallback.
    assert!(payload::decode(br#"["f", null, [], {}]"#).is_ok());
    let e = payload::decode(b"\x78garbage").unwrap_err();
    assert!(matches!(e, PayloadError::Unrecognised(0x78)), "{e}");
}

#[test]
fn zlib_bomb_stops_at_the_limit() {
    use flate2::write::ZlibEncoder;
    use std::io::Write;
    let mut enc = ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..8 {
        enc.write_all(&zeros).unwrap();
    }
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < 10_000, "{}", bomb.len());
    let e = quick(|| payload::inflate_limited(&bomb, 1 << 20)).unwrap_err();
    assert_eq!(
        one_line(&e),
        "DeserializationError: job payload inflates to more than 1048576 bytes (the limit)"
    );
    assert_eq!(
        payload::inflate_limited(&bomb, 8 << 20).unwrap().len(),
        8 << 20
    );
}

#[test]
fn ten_megabyte_function_name_is_clipped() {
    let name = "a".repeat(10 * 1024 * 1024);
    let json = format!(r#"["{name}", null, [], {{}}]"#);
    let e = quick(|| payload::decode(json.as_bytes())).unwrap_err();
    assert!(matches!(e, PayloadError::FuncNameTooLong { len, .. } if len == name.len()));
    let text = one_line(&e);
    assert!(text.starts_with(&format!("DeserializationError: function name is 10485760 bytes, above the {MAX_FUNC_NAME_BYTES}-byte limit: `aaaa")), "{text}");
    // pickle protocol 4: BINUNICODE8 name
    let mut p = b"\x80\x04(\x8d".to_vec();
    p.extend((name.len() as u64).to_le_bytes());
    p.extend(name.as_bytes());
    p.extend(b"N)}t.");
    let e = quick(|| payload::decode(&p)).unwrap_err();
    assert!(matches!(e, PayloadError::FuncNameTooLong { .. }), "{e}");
    one_line(&e);
    // A bound method with a long name: the echo is clipped.
    let long = "m".repeat(MAX_FUNC_NAME_BYTES);
    let e = payload::decode(format!(r#"["{long}", {{"x": 1}}, [], {{}}]"#).as_bytes()).unwrap_err();
    assert!(matches!(e, PayloadError::HasInstance { .. }), "{e}");
    one_line(&e);
    // A line break in the name stays escaped (found by runq-fuzz, msgpack payload).
    let e = payload::decode(b"\x94\xa3a\nb\x81\xa1x\x01\x90\x80").unwrap_err();
    assert_eq!(
        one_line(&e),
        "UnsupportedJob: a\\nb is a bound method or callable object (the job has an `instance`); runq-worker runs plain functions only"
    );
}

#[test]
fn decoder_errors_quoting_input_are_clipped() {
    // APPEND onto a 1 MiB string: serde-pickle's error prints the stack top.
    let mut p = b"\x80\x04(\x8d".to_vec();
    p.extend((1u64 << 20).to_le_bytes());
    p.extend(vec![b's'; 1 << 20]);
    p.extend(b"Na.");
    let e = payload::decode(&p).unwrap_err();
    assert!(matches!(e, PayloadError::Undecodable { .. }), "{e}");
    one_line(&e);
}

/// A payload `("f", None, (v,), {})` whose `v` makes the whole value `depth` deep.
fn pickle_at_depth(depth: usize) -> Vec<u8> {
    let inner = depth - 2; // the call tuple and the args tuple
    let mut p = b"\x80\x02(X\x01\x00\x00\x00fN".to_vec();
    p.extend(std::iter::repeat_n(b']', inner));
    p.extend(std::iter::repeat_n(b'a', inner - 1));
    p.extend(b"\x85}t.");
    p
}

fn json_at_depth(depth: usize) -> Vec<u8> {
    let inner = depth - 2;
    format!(
        r#"["f", null, [{}{}], {{}}]"#,
        "[".repeat(inner),
        "]".repeat(inner)
    )
    .into_bytes()
}

fn msgpack_at_depth(depth: usize) -> Vec<u8> {
    let inner = depth - 2;
    let mut p = b"\x94\xa1f\xc0\x91".to_vec();
    p.extend(std::iter::repeat_n(0x91u8, inner - 1));
    p.push(0x90);
    p.push(0x80);
    p
}

fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(f)
        .unwrap()
        .join()
        .expect("decoding at the depth limit overflowed a 256 KiB stack")
}

#[test]
fn decoding_at_the_depth_limit_fits_a_small_stack() {
    on_small_stack(|| {
        for (name, p) in [
            ("pickle", pickle_at_depth(MAX_DEPTH)),
            ("json", json_at_depth(MAX_DEPTH)),
            ("msgpack", msgpack_at_depth(MAX_DEPTH)),
        ] {
            let (_, call) = payload::decode(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
            let mut depth = 2;
            let mut v = &call.args[0];
            while let Some(first) = v.as_array().and_then(|a| a.first()) {
                depth += 1;
                v = first;
            }
            assert_eq!(depth + 1, MAX_DEPTH, "{name}");
            // One level more is refused, with the same error for all three.
            let deeper = match name {
                "pickle" => pickle_at_depth(MAX_DEPTH + 1),
                "json" => json_at_depth(MAX_DEPTH + 1),
                _ => msgpack_at_depth(MAX_DEPTH + 1),
            };
            let e = payload::decode(&deeper).unwrap_err();
            assert_eq!(limit_of(&e), &Limit::Depth { max: MAX_DEPTH }, "{name}");
            assert!(e.to_string().contains("argument 0: "), "{name}: {e}");
            // Dropping the decoded value recurses too.
            drop(call);
        }
    });
}

#[test]
fn value_conversion_at_the_depth_limit_fits_a_small_stack() {
    on_small_stack(|| {
        use serde_pickle::Value as P;
        let nest = |n: usize| {
            let mut v = P::None;
            for _ in 0..n {
                v = P::List(vec![v]);
            }
            v
        };
        let v = runq_common::value::from_pickle(nest(MAX_DEPTH), "argument 0").unwrap();
        let back = runq_common::value::to_pickle(&v);
        drop(back);
        let e = runq_common::value::from_pickle(nest(MAX_DEPTH + 1), "argument 0").unwrap_err();
        assert_eq!(e, "argument 0: nested deeper than 100 levels");
    });
}
