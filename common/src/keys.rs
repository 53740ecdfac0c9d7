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
    pub fn queues(&self) -> String {
        format!("{}:queues", self.prefix)
    }
    pub fn queue(&self, q: &str) -> String {
        format!("{}:queue:{q}", self.prefix)
    }
    /// The prefix that `rq:queues` members carry before the queue name.
    pub fn queue_key_prefix(&self) -> String {
        format!("{}:queue:", self.prefix)
    }
    pub fn intermediate(&self, q: &str) -> String {
        format!("{}:queue:{q}:intermediate", self.prefix)
    }
    pub fn job(&self, id: &str) -> String {
        format!("{}:job:{id}", self.prefix)
    }
    pub fn dependents(&self, id: &str) -> String {
        format!("{}:job:{id}:dependents", self.prefix)
    }
    /// RQ's dependencies key, with its double colon.
    pub fn dependencies(&self, id: &str) -> String {
        format!("{}:job::{id}:dependencies", self.prefix)
    }
    pub fn results(&self, id: &str) -> String {
        format!("{}:results:{id}", self.prefix)
    }
    pub fn started(&self, q: &str) -> String {
        format!("{}:wip:{q}", self.prefix)
    }
    pub fn finished(&self, q: &str) -> String {
        format!("{}:finished:{q}", self.prefix)
    }
    pub fn failed(&self, q: &str) -> String {
        format!("{}:failed:{q}", self.prefix)
    }
    pub fn deferred(&self, q: &str) -> String {
        format!("{}:deferred:{q}", self.prefix)
    }
    pub fn scheduled(&self, q: &str) -> String {
        format!("{}:scheduled:{q}", self.prefix)
    }
    pub fn canceled(&self, q: &str) -> String {
        format!("{}:canceled:{q}", self.prefix)
    }
    pub fn workers(&self) -> String {
        format!("{}:workers", self.prefix)
    }
    pub fn queue_workers(&self, q: &str) -> String {
        format!("{}:workers:{q}", self.prefix)
    }
    pub fn worker(&self, name: &str) -> String {
        format!("{}:worker:{name}", self.prefix)
    }
    pub fn worker_key_prefix(&self) -> String {
        format!("{}:worker:", self.prefix)
    }
    pub fn worker_executions(&self, name: &str) -> String {
        format!("{}:worker:{name}:executions", self.prefix)
    }
    pub fn pubsub(&self, worker: &str) -> String {
        format!("{}:pubsub:{worker}", self.prefix)
    }
    pub fn suspended(&self) -> String {
        format!("{}:suspended", self.prefix)
    }
    pub fn execution(&self, id: &str, exec: &str) -> String {
        format!("{}:execution:{id}:{exec}", self.prefix)
    }
    pub fn executions(&self, id: &str) -> String {
        format!("{}:executions:{id}", self.prefix)
    }
    pub fn scheduler_lock(&self, q: &str) -> String {
        format!("{}:scheduler-lock:{q}", self.prefix)
    }
    pub fn clean_registries(&self, q: &str) -> String {
        format!("{}:clean_registries:{q}", self.prefix)
    }
    pub fn scheduler(&self, name: &str) -> String {
        format!("{}:scheduler:{name}", self.prefix)
    }
    /// runq's own: when a runq process last beat (Redis clock), for stall detection.
    pub fn clock(&self) -> String {
        format!("{}:runq:clock", self.prefix)
    }
    /// runq's own: the periodic jobs' state (name → JSON with `next`, `last`, ...).
    pub fn cron(&self) -> String {
        format!("{}:runq:cron", self.prefix)
    }
    /// runq's own: the lock of the process that fires periodic jobs.
    pub fn cron_lock(&self) -> String {
        format!("{}:runq:cron-lock", self.prefix)
    }
    /// runq's own: until when abandoned-job recovery waits after a Redis stall.
    pub fn stall(&self) -> String {
        format!("{}:runq:stall-until", self.prefix)
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
    }

    #[test]
    fn members_split_at_the_last_colon() {
        assert_eq!(split_execution_member("a:b:c"), ("a:b", Some("c")));
        assert_eq!(split_execution_member("plain"), ("plain", None));
        assert_eq!(execution_member("j", "e"), "j:e");
    }
}
