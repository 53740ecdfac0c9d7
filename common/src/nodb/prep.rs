//! The RedisPrep run hash in DB 0 (key = runid): `rq:<key>` job ids, `timestamps:<task>`
//! epoch seconds, `attrs:<name>` booleans, and its `redisprep.dump` snapshot in the run
//! directory. Every write is a plain hash command so keyspace notifications (`Kh`) fire
//! for preflight. Also the preflight checklist, computed from the hash as preflight2 does.

use redis::aio::ConnectionLike;
use std::path::Path;

/// File name of the snapshot in the run directory.
pub const DUMP_FILE: &str = "redisprep.dump";

/// `rq:<key>`: the job id of a task's latest enqueue.
pub fn rq_field(key: &str) -> String {
    format!("rq:{key}")
}

/// `timestamps:<task>`: when a step last succeeded (epoch seconds).
pub fn timestamp_field(task: &str) -> String {
    format!("timestamps:{task}")
}

/// `HSET <runid> timestamps:<task> <epoch seconds>`.
pub async fn stamp<C: ConnectionLike + Send>(
    conn: &mut C,
    runid: &str,
    task: &str,
    epoch: i64,
) -> redis::RedisResult<()> {
    hset_field(conn, runid, &timestamp_field(task), epoch).await
}

/// `HSET <runid> attrs:<name> true|false`.
pub async fn set_attr<C: ConnectionLike + Send>(
    conn: &mut C,
    runid: &str,
    name: &str,
    value: bool,
) -> redis::RedisResult<()> {
    let value = if value { "true" } else { "false" };
    hset_field(conn, runid, &format!("attrs:{name}"), value).await
}

/// `HSET <runid> last_modified <epoch seconds>` after a document write.
pub async fn set_last_modified<C: ConnectionLike + Send>(
    conn: &mut C,
    runid: &str,
    epoch: i64,
) -> redis::RedisResult<()> {
    hset_field(conn, runid, "last_modified", epoch).await
}

async fn hset_field<C: ConnectionLike + Send>(
    conn: &mut C,
    runid: &str,
    field: &str,
    value: impl redis::ToRedisArgs + Send + Sync,
) -> redis::RedisResult<()> {
    redis::cmd("HSET")
        .arg(runid)
        .arg(field)
        .arg(value)
        .query_async(conn)
        .await
}

/// The whole run hash, field order as Redis returns it.
pub async fn fields<C: ConnectionLike + Send>(
    conn: &mut C,
    runid: &str,
) -> redis::RedisResult<Vec<(String, String)>> {
    redis::cmd("HGETALL").arg(runid).query_async(conn).await
}

/// Writes `<wd>/redisprep.dump`: the hash minus `locked:*` as a flat JSON object, via a
/// temp file and rename so readers never see a partial file.
pub fn write_dump(wd: &Path, fields: &[(String, String)]) -> std::io::Result<()> {
    let map: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .filter(|(k, _)| !k.starts_with("locked:"))
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let text = crate::pyjson::to_vec(&map).map_err(std::io::Error::other)?;
    super::atomic::write(&wd.join(DUMP_FILE), &text).map(|_| ())
}

/// Snapshot now: reads the hash and rewrites the dump (the file work off the async
/// threads).
pub async fn dump<C: ConnectionLike + Send>(
    conn: &mut C,
    runid: &str,
    wd: &Path,
) -> Result<(), String> {
    let f = fields(conn, runid)
        .await
        .map_err(|e| format!("redis: {e}"))?;
    let dir = wd.to_path_buf();
    tokio::task::spawn_blocking(move || write_dump(&dir, &f))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{}: {e}", wd.join(DUMP_FILE).display()))
}

/// preflight2's checklist over the run hash, in its order.
pub fn checklist(fields: &[(String, String)]) -> Vec<(&'static str, bool)> {
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| *k == timestamp_field(name))
            .map(|(_, v)| v.as_str())
    };
    let ts = |name: &str| get(name).and_then(|v| v.trim().parse::<i64>().ok());
    let gt = |a: Option<i64>, b: Option<i64>| matches!((a, b), (Some(a), Some(b)) if a > b);
    let non_empty = |name: &str| get(name).is_some_and(|v| !v.is_empty());
    let has_sbs = fields
        .iter()
        .any(|(k, v)| k == "attrs:has_sbs" && v == "true");
    let channels = ts("build_channels");
    let outlet = ts("set_outlet").max(ts("find_outlet"));
    let abstract_ws = ts("abstract_watershed");
    let (landuse, soils, climate) = (ts("build_landuse"), ts("build_soils"), ts("build_climate"));
    let rangeland = ts("build_rangeland_cover");
    let run_wepp = ts("run_wepp_watershed").or(ts("run_wepp"));
    let after_inputs = |x: Option<i64>| gt(x, landuse) && gt(x, soils) && gt(x, climate);
    vec![
        ("sbs_map", has_sbs),
        ("channels", get("build_channels").is_some()),
        ("outlet", gt(outlet, channels)),
        ("subcatchments", gt(abstract_ws, channels)),
        ("landuse", gt(landuse, abstract_ws)),
        (
            "soils",
            gt(soils, abstract_ws) && (gt(soils, landuse) || gt(soils, rangeland)),
        ),
        ("rangeland_cover", non_empty("build_rangeland_cover")),
        ("climate", gt(climate, abstract_ws)),
        ("rap_ts", gt(ts("build_rap_ts"), climate)),
        ("wepp", after_inputs(run_wepp)),
        (
            "observed",
            after_inputs(ts("run_observed")) && gt(ts("run_observed"), run_wepp),
        ),
        (
            "debris",
            after_inputs(ts("run_debris")) && gt(ts("run_debris"), run_wepp),
        ),
        (
            "watar",
            after_inputs(ts("run_watar")) && gt(ts("run_watar"), run_wepp),
        ),
        ("omni_scenarios", gt(ts("run_omni_scenarios"), run_wepp)),
        ("rhem", non_empty("run_rhem")),
        ("dss_export", gt(ts("dss_export"), run_wepp)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn checklist_follows_preflight_rules() {
        let fields = f(&[
            ("timestamps:build_climate", "110"),
            ("timestamps:build_soils", "120"),
            ("timestamps:build_landuse", "115"),
            ("timestamps:run_wepp_watershed", "130"),
        ]);
        let c: std::collections::HashMap<_, _> = checklist(&fields).into_iter().collect();
        assert!(c["wepp"]);
        assert!(!c["climate"], "no abstract_watershed stamp yet");
        let stale = f(&[
            ("timestamps:build_climate", "140"),
            ("timestamps:run_wepp_watershed", "130"),
        ]);
        let c: std::collections::HashMap<_, _> = checklist(&stale).into_iter().collect();
        assert!(!c["wepp"]);
    }

    #[test]
    fn dump_skips_lock_flags() {
        let dir = std::env::temp_dir().join(format!("runq-prep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write_dump(
            &dir,
            &f(&[
                ("locked:climate.nodb", "true"),
                ("timestamps:build_climate", "5"),
            ]),
        )
        .unwrap();
        let text = std::fs::read_to_string(dir.join(DUMP_FILE)).unwrap();
        assert_eq!(text, r#"{"timestamps:build_climate": "5"}"#);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
