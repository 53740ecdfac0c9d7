//! RQ's key layout under a configurable prefix (RQ's `RQ_KEY_PREFIX`, default `rq`), and
//! the started-registry member `<job id>:<execution id>`. The Lua scripts build the same
//! names in `scripts/prelude.lua` (`K.*`); `tests/scripts.rs` checks both agree.

/// Builds every RQ key and channel name for one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Keys::new("rq")
    }
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_string(),
        }
    }
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// One builder per key: `name => "suffix"` is `<prefix>:suffix`, and
/// `name(arg) => "before", "after"` is `<prefix>:before<arg>after`.
macro_rules! key_builders {
    ($($(#[$doc:meta])* $name:ident $(($arg:ident))? => $before:literal $(, $after:literal)?;)*) => {
        impl Keys {
            $(
                $(#[$doc])*
                pub fn $name(&self $(, $arg: &str)?) -> String {
                    [self.prefix.as_str(), ":", $before $(, $arg)? $(, $after)?].concat()
                }
            )*
        }
    };
}

key_builders! {
    queues => "queues";
    queue(q) => "queue:";
    /// The prefix that `rq:queues` members carry before the queue name.
    queue_key_prefix => "queue:";
    intermediate(q) => "queue:", ":intermediate";
    job(id) => "job:";
    dependents(id) => "job:", ":dependents";
    /// RQ's dependencies key, with its double colon.
    dependencies(id) => "job::", ":dependencies";
    results(id) => "results:";
    started(q) => "wip:";
    finished(q) => "finished:";
    failed(q) => "failed:";
    deferred(q) => "deferred:";
    scheduled(q) => "scheduled:";
    canceled(q) => "canceled:";
    workers => "workers";
    queue_workers(q) => "workers:";
    worker(name) => "worker:";
    worker_key_prefix => "worker:";
    worker_executions(name) => "worker:", ":executions";
    pubsub(worker) => "pubsub:";
    suspended => "suspended";
    executions(id) => "executions:";
    scheduler_lock(q) => "scheduler-lock:";
    clean_registries(q) => "clean_registries:";
    scheduler(name) => "scheduler:";
    /// runq's own: when a runq process last beat (Redis clock), for stall detection.
    clock => "runq:clock";
    /// runq's own: the periodic jobs' state (name → JSON with `next`, `last`, ...).
    cron => "runq:cron";
    /// runq's own: the lock of the process that fires periodic jobs.
    cron_lock => "runq:cron-lock";
    /// runq's own: until when abandoned-job recovery waits after a Redis stall.
    stall => "runq:stall-until";
}

impl Keys {
    pub fn execution(&self, id: &str, exec: &str) -> String {
        format!("{}:execution:{id}:{exec}", self.prefix)
    }
}

/// The started-registry (and worker executions set) member of one execution.
pub fn execution_member(id: &str, exec_id: &str) -> String {
    format!("{id}:{exec_id}")
}

/// Splits a member into job id and execution id at the last colon (execution ids never
/// contain one; job ids may). A member without a colon is a bare job id.
pub fn split_execution_member(member: &str) -> (&str, Option<&str>) {
    match member.rfind(':') {
        Some(at) => (&member[..at], Some(&member[at + 1..])),
        None => (member, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_rq() {
        let k = Keys::default();
        assert_eq!(k.queue("default"), "rq:queue:default");
        assert_eq!(k.dependencies("a"), "rq:job::a:dependencies");
        assert_eq!(k.started("q"), "rq:wip:q");
        assert_eq!(Keys::new("x").worker("w"), "x:worker:w");
        assert_eq!(k.queues(), "rq:queues");
        assert_eq!(k.worker_executions("w"), "rq:worker:w:executions");
        assert_eq!(k.execution("j", "e"), "rq:execution:j:e");
    }

    #[test]
    fn members_split_at_the_last_colon() {
        assert_eq!(split_execution_member("a:b:c"), ("a:b", Some("c")));
        assert_eq!(split_execution_member("plain"), ("plain", None));
        assert_eq!(execution_member("j", "e"), "j:e");
    }
}
