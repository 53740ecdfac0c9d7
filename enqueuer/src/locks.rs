//! `runq locks RUNID`: a run's NoDb locks (owner, age, TTL left, legacy flag), and the
//! operator actions: `--clear [SCOPE]` (wepppy's `clear_locks`), `--force-unlock RELPATH`,
//! and `--unlock RELPATH --token TOKEN` (refused unless the token is the holder's).
//! A holder whose lock is cleared finds out at its next renewal and fails cleanly.

use crate::CliError;
use clap::Args;
use runq_common::nodb::lock::{self, LockStatus, TokenCheck};
use runq_common::nodb::rundir;
use runq_common::Config;

#[derive(Args, Debug)]
pub struct LocksArgs {
    pub runid: String,
    /// Delete every lock of the run (or only SCOPE: a relpath or a subtree) and lower
    /// every `locked:*` flag.
    #[arg(long, value_name = "SCOPE", num_args = 0..=1, default_missing_value = ".")]
    pub clear: Option<String>,
    /// Delete one lock whoever holds it.
    #[arg(long, value_name = "RELPATH", conflicts_with = "clear")]
    pub force_unlock: Option<String>,
    /// Release one lock with its token (compare-and-delete): refused for a stale token.
    #[arg(long, value_name = "RELPATH", requires = "token", conflicts_with_all = ["clear", "force_unlock"])]
    pub unlock: Option<String>,
    #[arg(long)]
    pub token: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(config: &Config, a: LocksArgs) -> Result<(), CliError> {
    rundir::validate_runid(&a.runid).map_err(CliError::Usage)?;
    let mut conn = runq_common::connect::ping(config, config.redis.db.lock).await?;
    if let Some(scope) = &a.clear {
        let cleared = lock::clear_locks(&mut conn, &a.runid, Some(scope)).await?;
        println!(
            "cleared {} lock(s) of run {}{}",
            cleared.len(),
            a.runid,
            if cleared.is_empty() {
                String::new()
            } else {
                format!(": {}", cleared.join(", "))
            }
        );
        return Ok(());
    }
    if let Some(rel) = &a.force_unlock {
        let holder = lock::holder(&mut conn, &lock::lock_key(&a.runid, rel))
            .await?
            .map(|s| s.describe());
        let deleted = lock::force_unlock(&mut conn, &a.runid, rel).await?;
        match (deleted, holder) {
            (true, Some(h)) => println!("force-unlocked {} ({h})", lock::lock_key(&a.runid, rel)),
            (true, None) => println!("force-unlocked {}", lock::lock_key(&a.runid, rel)),
            (false, _) => println!(
                "{} was not locked; its flag is lowered",
                lock::lock_key(&a.runid, rel)
            ),
        }
        return Ok(());
    }
    if let (Some(rel), Some(token)) = (&a.unlock, &a.token) {
        return match lock::release_token(&mut conn, &a.runid, rel, token).await? {
            TokenCheck::Ok => {
                println!("unlocked {}", lock::lock_key(&a.runid, rel));
                Ok(())
            }
            TokenCheck::Gone => {
                println!("{} was not locked", lock::lock_key(&a.runid, rel));
                Ok(())
            }
            TokenCheck::Held(owner) => Err(CliError::Other(format!(
                "unlock of {} refused: the token does not match (held by {owner}); use --force-unlock",
                lock::lock_key(&a.runid, rel)
            ))),
        };
    }
    let statuses = lock::statuses(&mut conn, &a.runid).await?;
    if a.json {
        let rows: Vec<_> = statuses.iter().map(to_json).collect();
        println!("{}", serde_json::Value::Array(rows));
    } else {
        print!("{}", render(&a.runid, &statuses));
    }
    Ok(())
}

fn to_json(s: &LockStatus) -> serde_json::Value {
    serde_json::json!({
        "relpath": s.relpath,
        "locked": s.stored.is_some(),
        "owner": s.stored.as_ref().and_then(|p| p.owner.clone()),
        "token": s.stored.as_ref().map(|p| p.token.clone()),
        "acquired_at": s.stored.as_ref().and_then(|p| p.acquired_at),
        "expires_at": s.stored.as_ref().and_then(|p| p.expires_at),
        "ttl_left_ms": s.pttl,
        "flag": s.flag,
    })
}

fn render(runid: &str, statuses: &[LockStatus]) -> String {
    if statuses.is_empty() {
        return format!("run {runid}: no locks\n");
    }
    let now = lock::now_secs();
    let mut out = format!(
        "{:<32} {:<8} {:<28} {:>8} {:>9}  FLAG\n",
        "RELPATH", "STATE", "OWNER", "AGE", "TTL LEFT"
    );
    for s in statuses {
        let (state, owner, age, left) = match &s.stored {
            Some(p) => (
                "locked",
                p.owner
                    .clone()
                    .unwrap_or_else(|| format!("token {}", p.token)),
                p.acquired_at
                    .map(|t| format!("{}s", now - t))
                    .unwrap_or_else(|| "-".into()),
                match s.pttl {
                    Some(ms) if ms >= 0 => format!("{:.1}s", ms as f64 / 1000.0),
                    Some(_) => "no expiry".into(),
                    None => "-".into(),
                },
            ),
            None => ("free", "-".into(), "-".into(), "-".into()),
        };
        let flag = match (&s.flag, s.stored.is_some()) {
            (Some(f), true) if f != "true" => format!("{f} (stale)"),
            (Some(f), false) if f == "true" => format!("{f} (stale: no lock key)"),
            (Some(f), _) => f.clone(),
            (None, _) => "-".into(),
        };
        out.push_str(&format!(
            "{:<32} {:<8} {:<28} {:>8} {:>9}  {flag}\n",
            s.relpath, state, owner, age, left
        ));
    }
    out
}
