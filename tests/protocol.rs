//! Wire compatibility with Python RQ 3.0: jobs `runq enqueue` writes, and results
//! `runq-worker` writes, read back through RQ's own API; job hashes compared field by
//! field with the ones RQ's `Queue.enqueue` writes (protocol reference §3, §5, §7.1).

use runq_tests::*;
use serde_json::json;
use std::collections::BTreeSet;

/// RQ's datetime text: `%Y-%m-%dT%H:%M:%S.%fZ`, six fractional digits, literal `Z`.
fn is_rq_datetime(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b[i].is_ascii_digit());
    b.len() == 27
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..26)
        && b[26] == b'Z'
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 field")
}

#[test]
fn pickle_job_is_read_by_rq3_job_fetch() {
    let redis = RedisServer::start();
    let id = enqueue(
        &redis,
        &[
            "runq.tasks.echo",
            "1",
            "x",
            "2.5",
            "null",
            "true",
            "--kwarg",
            "k=[1,2]",
            "--kwarg",
            "name=\"bob\"",
            "--queue",
            "proto",
            "--job-id",
            "pickle-1",
            "--timeout",
            "90s",
        ],
    );
    assert_eq!(id, "pickle-1");
    let v = python_json(
        Py::Rq3,
        &redis,
        r#"
        from rq.job import Job
        from rq.queue import Queue
        j = Job.fetch('pickle-1', connection=conn)
        out({
            'func_name': j.func_name,
            'args': list(j.args),
            'args_is_tuple': isinstance(j.args, tuple),
            'kwargs': j.kwargs,
            'description': j.description,
            'call_string': j.get_call_string(),
            'timeout': j.timeout,
            'origin': j.origin,
            'status': j.get_status().value,
            'created_at_tz': str(j.created_at.tzinfo),
            'enqueued_at_tz': str(j.enqueued_at.tzinfo),
            'started_at': j.started_at,
            'queue_job_ids': Queue('proto', connection=conn).job_ids,
            'queues': sorted(q.name for q in Queue.all(connection=conn)),
        })
        "#,
    );
    assert_eq!(
        v,
        json!({
            "func_name": "runq.tasks.echo",
            "args": [1, "x", 2.5, null, true],
            "args_is_tuple": true,
            "kwargs": {"k": [1, 2], "name": "bob"},
            "description": "runq.tasks.echo(1, 'x', 2.5, None, True, k=[1, 2], name='bob')",
            "call_string": "runq.tasks.echo(1, 'x', 2.5, None, True, k=[1, 2], name='bob')",
            "timeout": 90,
            "origin": "proto",
            "status": "queued",
            "created_at_tz": "UTC",
            "enqueued_at_tz": "UTC",
            "started_at": null,
            "queue_job_ids": ["pickle-1"],
            "queues": ["proto"],
        })
    );
}

#[test]
fn json_job_data_is_rq_bytes_and_reads_in_python() {
    let redis = RedisServer::start();
    let id = enqueue(
        &redis,
        &[
            "mymod.add",
            "2",
            "3",
            "--serializer",
            "json",
            "--job-id",
            "json-1",
        ],
    );
    assert_eq!(id, "json-1");

    // The stored `data` is a zlib stream of RQ's JSONSerializer bytes, exactly.
    let data = redis
        .hgetall("rq:job:json-1")
        .remove("data")
        .expect("data field");
    assert_eq!(
        &data[..2],
        b"\x78\x9c",
        "data is not a default-level zlib stream"
    );
    let raw = runq_common::payload::inflate(&data).expect("inflate");
    assert_eq!(text(&raw), r#"["mymod.add", null, [2, 3], {}]"#);

    let v = python_json(
        Py::Rq3,
        &redis,
        r#"
        import zlib
        from rq.job import Job
        from rq.serializers import JSONSerializer
        raw = zlib.decompress(conn.hget('rq:job:json-1', 'data')).decode()
        j = Job.fetch('json-1', connection=conn, serializer=JSONSerializer)
        out({'raw': raw, 'func_name': j.func_name, 'args': j.args, 'kwargs': j.kwargs,
             'description': j.description, 'timeout': j.timeout, 'origin': j.origin,
             'status': j.get_status().value})
        "#,
    );
    assert_eq!(
        v,
        json!({
            "raw": "[\"mymod.add\", null, [2, 3], {}]",
            "func_name": "mymod.add",
            "args": [2, 3],
            "kwargs": {},
            "description": "mymod.add(2, 3)",
            "timeout": 180,
            "origin": "default",
            "status": "queued",
        })
    );
}

#[test]
fn msgpack_job_reads_in_python_with_a_msgpack_serializer() {
    let redis = RedisServer::start();
    let id = enqueue(
        &redis,
        &[
            "runq.tasks.echo",
            "7",
            "y",
            "--kwarg",
            "k={\"a\":[1,null]}",
            "--serializer",
            "msgpack",
            "--queue",
            "mp",
        ],
    );
    let snippet = format!(
        r#"
        import msgpack
        from rq.job import Job
        class MsgPack:
            dumps = staticmethod(lambda o: msgpack.packb(o))
            loads = staticmethod(lambda b: msgpack.unpackb(b))
        j = Job.fetch('{id}', connection=conn, serializer=MsgPack)
        status = j.get_status().value
        rv = j.return_value() if status == 'finished' else None
        # A pickle client still reads everything but the payload.
        p = Job.fetch('{id}', connection=conn)
        out({{'func_name': j.func_name, 'args': list(j.args), 'kwargs': j.kwargs, 'status': status,
              'description': j.description, 'origin': p.origin, 'pickle_status': p.get_status().value,
              'return_value': rv}})
        "#
    );
    let before = python_json(Py::Rq3, &redis, &snippet);
    assert_eq!(
        before,
        json!({
            "func_name": "runq.tasks.echo",
            "args": [7, "y"],
            "kwargs": {"k": {"a": [1, null]}},
            "status": "queued",
            "description": "runq.tasks.echo(7, 'y', k={'a': [1, None]})",
            "origin": "mp",
            "pickle_status": "queued",
            "return_value": null,
        })
    );
    WorkerCmd::new(&redis).args(&["--queues", "mp"]).run_burst();
    let after = python_json(Py::Rq3, &redis, &snippet);
    assert_eq!(after["status"], "finished");
    assert_eq!(
        after["return_value"],
        json!({"args": [7, "y"], "kwargs": {"k": {"a": [1, null]}}})
    );
}

#[test]
fn enqueue_writes_the_hash_rq_writes() {
    let redis = RedisServer::start();
    // Python RQ and runq enqueue the same calls onto one queue.
    python(
        Py::Rq3,
        &redis,
        r#"
        from rq import Queue
        q = Queue('cmp', connection=conn)
        q.enqueue('mymod.add', 2, 3, job_id='py-1')
        q.enqueue('mymod.add', 2, 3, job_id='py-2', result_ttl=60, failure_ttl=120, ttl=300,
                  meta={'k': 'v'}, description='custom', job_timeout=45, at_front=True)
        "#,
    );
    enqueue(
        &redis,
        &["mymod.add", "2", "3", "--queue", "cmp", "--job-id", "rq-1"],
    );
    enqueue(
        &redis,
        &[
            "mymod.add",
            "2",
            "3",
            "--queue",
            "cmp",
            "--job-id",
            "rq-2",
            "--result-ttl",
            "60",
            "--failure-ttl",
            "120",
            "--ttl",
            "5m",
            "--meta",
            r#"{"k": "v"}"#,
            "--description",
            "custom",
            "--timeout",
            "45",
            "--at-front",
        ],
    );

    for (py_id, rq_id) in [("py-1", "rq-1"), ("py-2", "rq-2")] {
        let py = redis.hgetall(&format!("rq:job:{py_id}"));
        let rq = redis.hgetall(&format!("rq:job:{rq_id}"));
        let py_fields: BTreeSet<&String> = py.keys().collect();
        let rq_fields: BTreeSet<&String> = rq.keys().collect();
        assert_eq!(
            rq_fields, py_fields,
            "{rq_id}: field set differs from RQ's {py_id}"
        );
        for (field, value) in &py {
            match field.as_str() {
                "created_at" | "enqueued_at" => {
                    assert!(
                        is_rq_datetime(&text(&rq[field])),
                        "{rq_id}.{field} = {:?}",
                        text(&rq[field])
                    );
                }
                // Serializer bytes may differ (pickle protocol); compared through Python below.
                "data" | "meta" => {}
                _ => assert_eq!(
                    text(&rq[field]),
                    text(value),
                    "{rq_id}.{field} differs from {py_id}"
                ),
            }
        }
    }
    assert_eq!(text(&redis.hgetall("rq:job:rq-1")["timeout"]), "180");
    assert_eq!(text(&redis.hgetall("rq:job:rq-1")["status"]), "queued");

    // Same decoded payload and meta, as Python sees them.
    let v = python_json(
        Py::Rq3,
        &redis,
        r#"
        import pickle, zlib
        from rq.job import Job
        def payload(i):
            return list(pickle.loads(zlib.decompress(conn.hget('rq:job:' + i, 'data'))))
        out({i: {'payload': payload(i), 'meta': Job.fetch(i, connection=conn).meta}
             for i in ['py-1', 'rq-1', 'py-2', 'rq-2']})
        "#,
    );
    for i in ["py-1", "rq-1", "py-2", "rq-2"] {
        assert_eq!(
            v[i]["payload"],
            json!(["mymod.add", null, [2, 3], {}]),
            "{i}"
        );
    }
    assert_eq!(v["py-1"]["meta"], json!({}));
    assert_eq!(v["rq-1"]["meta"], json!({}));
    assert_eq!(v["rq-2"]["meta"], json!({"k": "v"}));

    // `rq:queues` holds the full queue key; at_front pushes on the left.
    assert_eq!(
        redis.smembers("rq:queues"),
        vec!["rq:queue:cmp".to_string()]
    );
    assert_eq!(
        redis.lrange("rq:queue:cmp"),
        vec!["rq-2", "py-2", "py-1", "rq-1"]
    );
    assert_eq!(redis.ttl("rq:job:rq-1"), -1);
    let ttl = redis.ttl("rq:job:rq-2");
    assert!(
        (290..=300).contains(&ttl),
        "rq:job:rq-2 TTL {ttl}, expected the --ttl of 300 s"
    );
}

#[test]
fn results_written_by_runq_worker_decode_in_python() {
    let redis = RedisServer::start();
    let echo = [
        "runq.tasks.echo",
        "1",
        "x",
        "--kwarg",
        "k=[1,2]",
        "--queue",
        "res",
    ];
    enqueue(&redis, &[&echo[..], &["--job-id", "res-p"]].concat());
    enqueue(
        &redis,
        &[&echo[..], &["--job-id", "res-j", "--serializer", "json"]].concat(),
    );
    enqueue(
        &redis,
        &[
            "runq.tasks.fail",
            "boom",
            "--queue",
            "res",
            "--job-id",
            "res-f",
        ],
    );
    enqueue(
        &redis,
        &["runq.tasks.noop", "--queue", "res", "--job-id", "res-n"],
    );
    WorkerCmd::new(&redis)
        .args(&["--queues", "res", "--name", "resw", "--concurrency", "1"])
        .run_burst();

    let v = python_json(
        Py::Rq3,
        &redis,
        r#"
        import datetime
        from rq.job import Job
        from rq.serializers import JSONSerializer
        from rq.registry import FinishedJobRegistry, FailedJobRegistry, StartedJobRegistry
        def info(i, serializer=None):
            j = Job.fetch(i, connection=conn, serializer=serializer)
            r = j.latest_result()
            stamps = [j.created_at, j.enqueued_at, j.started_at, j.ended_at, j.last_heartbeat]
            return {
                'status': j.get_status().value,
                'return_value': j.return_value(),
                'type': r.type.name,
                'exc_string': r.exc_string,
                'worker_name': j.worker_name,
                'results': len(j.results()),
                'stamps_utc': all(s is not None and s.utcoffset() == datetime.timedelta(0) for s in stamps),
                'ordered': j.created_at <= j.enqueued_at <= j.started_at <= j.ended_at,
                'result_created_at': isinstance(r.created_at, datetime.datetime),
            }
        q = 'res'
        out({
            'res-p': info('res-p'),
            'res-j': info('res-j', JSONSerializer),
            'res-f': info('res-f'),
            'res-n': info('res-n'),
            'finished': sorted(FinishedJobRegistry(q, connection=conn).get_job_ids()),
            'failed': FailedJobRegistry(q, connection=conn).get_job_ids(),
            'started': StartedJobRegistry(q, connection=conn).get_job_ids(),
        })
        "#,
    );
    let ok = |rv| {
        json!({"status": "finished", "return_value": rv, "type": "SUCCESSFUL", "exc_string": null,
               "worker_name": "resw", "results": 1, "stamps_utc": true, "ordered": true, "result_created_at": true})
    };
    let echoed = json!({"args": [1, "x"], "kwargs": {"k": [1, 2]}});
    assert_eq!(v["res-p"], ok(echoed.clone()));
    assert_eq!(v["res-j"], ok(echoed));
    assert_eq!(v["res-n"], ok(json!(null)));
    assert_eq!(
        v["res-f"],
        json!({"status": "failed", "return_value": null, "type": "FAILED", "exc_string": "RuntimeError: boom",
               "worker_name": "resw", "results": 1, "stamps_utc": true, "ordered": true, "result_created_at": true})
    );
    assert_eq!(v["finished"], json!(["res-j", "res-n", "res-p"]));
    assert_eq!(v["failed"], json!(["res-f"]));
    assert_eq!(v["started"], json!([]));

    // Raw encodings: datetime text, float epochs, registry scores and TTLs (§1, §5, §13.D/E).
    let now = redis.now_secs();
    for id in ["res-p", "res-j", "res-f", "res-n"] {
        let h = redis.hgetall(&format!("rq:job:{id}"));
        for f in [
            "created_at",
            "enqueued_at",
            "started_at",
            "ended_at",
            "last_heartbeat",
        ] {
            assert!(is_rq_datetime(&text(&h[f])), "{id}.{f} = {:?}", text(&h[f]));
        }
        let entries = redis.results(id);
        assert_eq!(entries.len(), 1, "{id}: one result entry");
        let e = &entries[0];
        assert_eq!(text(&e["worker_name"]), "resw");
        let exec = text(&e["execution_id"]);
        assert!(
            exec.len() == 32 && exec.chars().all(|c| c.is_ascii_hexdigit()),
            "execution_id {exec}"
        );
        let started: f64 = text(&e["execution_started_at"])
            .parse()
            .expect("float epoch");
        let ended: f64 = text(&e["execution_ended_at"]).parse().expect("float epoch");
        assert!(
            started <= ended && (ended - now as f64).abs() < 600.0,
            "{id}: {started} {ended} vs now {now}"
        );
    }
    assert!(
        !redis.results("res-n")[0].contains_key("return_value"),
        "None return value must be omitted"
    );
    for (id, score) in redis.zrange("rq:finished:res") {
        let ahead = score - now as f64;
        assert!(
            (400.0..=501.0).contains(&ahead),
            "{id}: finished score {score} is not now+500"
        );
    }
    let job_ttl = redis.ttl("rq:job:res-p");
    assert!(
        (400..=500).contains(&job_ttl),
        "finished job TTL {job_ttl}, expected result_ttl 500"
    );
    assert!((400..=500).contains(&redis.ttl("rq:results:res-p")));
    let failed = redis.zrange("rq:failed:res");
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].1 - now as f64 > 31_535_000.0,
        "failed score {}",
        failed[0].1
    );
    assert!(redis.ttl("rq:job:res-f") > 31_535_000);
    assert_eq!(
        redis.ttl("rq:results:res-f"),
        -1,
        "failure results get no TTL without an explicit failure_ttl"
    );
}

/// runq's default description against Python's `Job.get_call_string()` for the same job.
fn description_vs_python(args: &[&str]) -> (String, String) {
    let redis = RedisServer::start();
    let mut full = vec!["runq.tasks.echo"];
    full.extend_from_slice(args);
    let id = enqueue(&redis, &full);
    let v = python_json(
        Py::Rq3,
        &redis,
        &format!("from rq.job import Job\nj = Job.fetch('{id}', connection=conn)\nout([j.description, j.get_call_string()])"),
    );
    (
        v[0].as_str().unwrap().to_string(),
        v[1].as_str().unwrap().to_string(),
    )
}

#[test]
fn description_matches_python_call_string() {
    let long = "y".repeat(100);
    let (ours, python) = description_vs_python(&[
        "-3",
        "0.1",
        "2.0",
        "123456.789",
        "it's \"x\"",
        "tab\tx",
        "ü€",
        &long,
        "[1, \"a\", null, true, 1.5]",
        "{\"b\": {\"c\": false}}",
        "--kwarg",
        "z=1",
        "--kwarg",
        "a=\"s\"",
    ]);
    assert_eq!(ours, python);
}

// Product bug: common/src/description.rs `py_repr` prints floats with Rust's `{}` where
// Python's repr switches to exponent form (exponent < -4 or >= 16): runq writes
// `100000000000000000000` and `0.00001` where RQ writes `1e+20` and `1e-05`.
// Failing command: `runq enqueue runq.tasks.echo 1e20 1e-05`, then compare the job's
// `description` with Python's `Job.fetch(id).get_call_string()`.
#[test]
fn description_of_exponent_floats_matches_python_call_string() {
    let (ours, python) = description_vs_python(&["1e20", "1e-05", "1.5e300"]);
    assert_eq!(ours, python);
}

#[test]
fn json_return_value_bytes_are_python_json_dumps() {
    let redis = RedisServer::start();
    let id = enqueue(&redis, &["runq.tasks.echo", "ü€", "--serializer", "json"]);
    WorkerCmd::new(&redis)
        .args(&["--concurrency", "1"])
        .run_burst();
    let entries = redis.results(&id);
    assert_eq!(entries.len(), 1);
    let raw = runq_common::results::decode_base64(&entries[0]["return_value"]).expect("base64");
    let python = python(
        Py::Rq3,
        &redis,
        "print(json.dumps({'args': ['ü€'], 'kwargs': {}}))",
    );
    assert_eq!(text(&raw), python.trim_end());
    assert_eq!(text(&raw), r#"{"args": ["\u00fc\u20ac"], "kwargs": {}}"#);
}
