//! The Lua scripts behind every job state change. Each runs as one round trip
//! (EVALSHA, falling back to EVAL once per connection) and is atomic in Redis.

use redis::Script;
use std::sync::OnceLock;

const PRELUDE: &str = include_str!("lua/prelude.lua");

fn with_prelude(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}\n{body}"))
}

/// All scripts, compiled once per process.
pub struct Scripts {
    /// Claim jobs for idle slots (pop + record as started).
    pub claim: Script,
    /// Finish, fail, stop, retry or requeue one execution.
    pub complete: Script,
    /// Batched heartbeat for every slot of a process.
    pub heartbeat: Script,
    /// Save and enqueue / defer / schedule a job.
    pub enqueue: Script,
    /// Per-queue maintenance: abandoned jobs, expired registry entries, dead workers.
    pub maintenance: Script,
    /// Scheduler tick: renew owned locks, move due jobs to their queues.
    pub scheduler: Script,
    /// Requeue failed jobs.
    pub requeue: Script,
    /// Cancel a job that has not started.
    pub cancel: Script,
    /// Empty a queue.
    pub empty: Script,
}

/// The process-wide script set.
pub fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        claim: with_prelude(include_str!("lua/claim.lua")),
        complete: with_prelude(include_str!("lua/complete.lua")),
        heartbeat: with_prelude(include_str!("lua/heartbeat.lua")),
        enqueue: with_prelude(include_str!("lua/enqueue.lua")),
        maintenance: with_prelude(include_str!("lua/maintenance.lua")),
        scheduler: with_prelude(include_str!("lua/scheduler.lua")),
        requeue: with_prelude(include_str!("lua/requeue.lua")),
        cancel: with_prelude(include_str!("lua/cancel.lua")),
        empty: with_prelude(include_str!("lua/empty.lua")),
    })
}
