//! The key layout is written twice — `common/src/keys.rs` for Rust and the prelude's `K.*`
//! for every Lua script — and this test runs the prelude on a real Redis to check that
//! both build the same name for every key they share, under a non-default prefix. It also
//! checks the prelude's `num_text` against what Redis makes of a Lua number itself.

use runq_common::scripts::prelude_source;
use runq_common::Keys;
use runq_tests::*;

#[test]
fn lua_and_rust_build_the_same_keys() {
    let redis = RedisServer::start();
    let keys = Keys::new("pfx");
    // (Lua call, Rust name) for every key both sides build; arguments contain colons and
    // dots, as job ids and queue names may.
    let pairs: Vec<(&str, String)> = vec![
        ("K.job('a:b.c')", keys.job("a:b.c")),
        ("K.queue('q.1')", keys.queue("q.1")),
        ("K.queues()", keys.queues()),
        ("K.intermediate('q')", keys.intermediate("q")),
        ("K.dependents('j')", keys.dependents("j")),
        ("K.dependencies('j')", keys.dependencies("j")),
        ("K.results('j')", keys.results("j")),
        ("K.started('q')", keys.started("q")),
        ("K.finished('q')", keys.finished("q")),
        ("K.failed('q')", keys.failed("q")),
        ("K.deferred('q')", keys.deferred("q")),
        ("K.scheduled('q')", keys.scheduled("q")),
        ("K.canceled('q')", keys.canceled("q")),
        ("K.workers()", keys.workers()),
        ("K.queue_workers('q')", keys.queue_workers("q")),
        ("K.worker('w.1')", keys.worker("w.1")),
        ("K.worker_executions('w')", keys.worker_executions("w")),
        ("K.execution('j', 'e')", keys.execution("j", "e")),
        ("K.executions('j')", keys.executions("j")),
        ("K.suspended()", keys.suspended()),
        ("K.scheduler_lock('q')", keys.scheduler_lock("q")),
        ("K.clean_registries('q')", keys.clean_registries("q")),
        ("K.clock()", keys.clock()),
        ("K.cron()", keys.cron()),
        ("K.cron_lock()", keys.cron_lock()),
        ("K.stall()", keys.stall()),
    ];
    let calls: Vec<&str> = pairs.iter().map(|(lua, _)| *lua).collect();
    let script = format!("{}\nreturn {{{}}}", prelude_source(), calls.join(", "));
    let lua_names: Vec<String> = redis::cmd("EVAL")
        .arg(&script)
        .arg(0)
        .arg("pfx")
        .query(&mut redis.conn())
        .expect("EVAL of the prelude");
    assert_eq!(lua_names.len(), pairs.len(), "{lua_names:?}");
    for ((lua, rust), from_lua) in pairs.iter().zip(&lua_names) {
        assert_eq!(from_lua, rust, "{lua} in Lua and Keys in Rust differ");
    }
}

/// The scripts pass numbers to Redis as `num_text` text (formatted once per call). Redis
/// must store exactly what it stores for the Lua number itself: the same registry score
/// for fractional deadlines, and integer text that EXPIRE accepts for TTLs.
#[test]
fn num_text_stores_what_the_number_itself_stores() {
    let redis = RedisServer::start();
    let script = format!(
        "{}\n{}",
        prelude_source(),
        r#"
local out = {}
local values = {1733175600.123456, 1733175660.999999, 0.1 + 0.2, 1733175600, 315360000, -1, 0}
for i, v in ipairs(values) do
  redis.call('ZADD', 'from_number', v, 'm' .. i)
  redis.call('ZADD', 'from_text', num_text(v), 'm' .. i)
  out[#out + 1] = redis.call('ZSCORE', 'from_number', 'm' .. i)
  out[#out + 1] = redis.call('ZSCORE', 'from_text', 'm' .. i)
end
redis.call('SET', 'ttl_key', 'x')
out[#out + 1] = tostring(redis.call('EXPIRE', 'ttl_key', num_text(315360000)))
out[#out + 1] = num_text(86400)
return out
"#
    );
    let out: Vec<String> = redis::cmd("EVAL")
        .arg(&script)
        .arg(0)
        .arg("pfx")
        .query(&mut redis.conn())
        .expect("EVAL of num_text");
    let (scores, tail) = out.split_at(out.len() - 2);
    assert_eq!(scores.len(), 14, "{out:?}");
    for pair in scores.chunks(2) {
        assert_eq!(pair[0], pair[1], "score from the number vs from num_text");
    }
    assert_eq!(
        scores[0], "1733175600.123456",
        "a fractional deadline keeps its digits"
    );
    assert_eq!(
        tail,
        ["1", "86400"],
        "integer TTLs are plain digits EXPIRE accepts"
    );
}
