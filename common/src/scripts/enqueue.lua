-- Save and enqueue (or defer, or schedule) one job atomically (common/src/scripts/
-- enqueue.rs is its typed boundary; the work is the prelude's `enqueue_from`).
-- ARGV: prefix, id, queue, mode (back|front|schedule), schedule_at, now_text,
--       ttl ('' = none), allow_dependency_failures (0|1), nd, dep_id*nd, nf, (field, value)*nf
-- Returns the status the job got: queued, deferred or scheduled.
return enqueue_from(ARGV, 2)
