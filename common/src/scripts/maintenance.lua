-- One maintenance pass over one queue, atomic (common/src/scripts/maintenance.rs is its
-- typed boundary): trims expired finished/failed entries, recovers abandoned jobs
-- (started-registry deadline passed on Redis's clock: the owning process died; at most
-- 1000 per pass) giving back their rate-limit slots, pushes what a crashed Python 3.0
-- worker left in the ready registry, clears stale intermediate-list entries left by
-- Python workers and drops dead worker records.
-- Skips the queue while Python RQ's own cleanup holds rq:clean_registries:<q>.
-- After a stall (no runq process beat for longer than `stall_gap`: Redis was paused or
-- unreachable for everyone), recovery waits one `lease` so live workers can beat first.
-- ARGV: prefix, now_text, queue, policy (fail|requeue), default_failure_ttl,
--       abandoned_exc_b64, stuck_exc_b64, lease_secs, stall_gap_secs
-- Each job is handled under pcall: one whose own key refuses a write (a key of the wrong
-- type) is failed alone as far as its keys allow (unrecordable.lua), and the pass goes on.
-- Returns {abandoned_failed, abandoned_requeued, abandoned_retried, intermediate_cleared,
-- dead_workers, deferred_by_stall, ready_moved, {failed job id...}, {{id, reason}...}}
-- (the last: the jobs failed that way), or {'busy'}.
local now_text, q = ARGV[2], ARGV[3]
local policy, default_ft = ARGV[4], tonumber(ARGV[5])
local abandoned_exc, stuck_exc = ARGV[6], ARGV[7]
local lease, stall_gap = tonumber(ARGV[8]), tonumber(ARGV[9])
if redis.call('EXISTS', K.clean_registries(q)) == 1 then return {'busy'} end
local now = server_now()
other_failure_ttl = default_ft
observe_clock(now, lease, stall_gap)
local stall_until = tonumber(redis.call('GET', K.stall()) or '') or 0
redis.call('ZREMRANGEBYSCORE', K.finished(q), 0, math.floor(now))
redis.call('ZREMRANGEBYSCORE', K.failed(q), 0, math.floor(now))

local failed_ids = {}
-- Fails one job for good (its failure callback and webhooks are the worker's, after).
local function fail(id, exc)
  local k = rate_limit_of(id)
  fail_job(id, q, 'failed', now_text, now, default_ft, {'worker_name', '', 'exc_string', exc})
  rl_settle(k, id, 'failed', now, now_text)
  failed_ids[#failed_ids + 1] = id
end

-- Retry (per retries_left/retry_intervals), requeue or fail one abandoned job.
local function recover(id, exc)
  local r = retry_job(id, q, now_text, now)
  if r then
    if r == 'scheduled' then rl_settle(rate_limit_of(id), id, 'scheduled', now, now_text) end
    return 'retried'
  end
  if policy == 'requeue' then
    requeue_front(id, q, now, now_text)
    return 'requeued'
  end
  fail(id, exc)
  return 'failed'
end

local failed, requeued, retried, stuck, dead, deferred = 0, 0, 0, 0, 0, 0
local wip = K.started(q)
local expired = redis.call('ZRANGEBYSCORE', wip, '-inf', '(' .. now, 'LIMIT', 0, 1000)
if now < stall_until then
  deferred = #expired
  expired = {}
end
local damaged = {}
-- Runs fn(...) for job `id` (see for_one_job): its result, or nil when the job was failed
-- because one of its keys refused a write.
local function guarded(id, fn, ...)
  return for_one_job(damaged, id, q, '', '', now_text, now, default_ft, fn, ...)
end

-- One expired started-registry member: its execution records dropped, and the job
-- recovered if it is still `started`. Returns what recover did, or 'gone'.
local function recover_member(m, id, ex)
  if ex then
    local exk = K.execution(id, ex)
    local w = redis.call('HGET', exk, 'worker_name')
    if w then redis.call('SREM', K.worker_executions(w), m) end
    redis.call('DEL', exk)
    redis.call('ZREM', K.executions(id), ex)
  end
  if redis.call('HGET', K.job(id), 'status') == 'started' then return recover(id, abandoned_exc) end
  return 'gone'
end

for _, m in ipairs(expired) do
  redis.call('ZREM', wip, m)
  local id, ex = split_member(m)
  local r = guarded(id, recover_member, m, id, ex)
  if r == 'failed' or r == nil then failed = failed + 1
  elseif r == 'requeued' then requeued = requeued + 1
  elseif r == 'retried' then retried = retried + 1 end
end

-- Jobs a crashed Python 3.0 worker left between its two dependent-release steps (RQ's
-- ReadyJobRegistry.cleanup): still `ready_to_enqueue` → onto the queue (through the
-- limiter when rate-limited); anything else only leaves the registry.
local ready_moved = 0
local function push_ready(id)
  local f = redis.call('HMGET', K.job(id), 'status', 'origin', 'enqueue_at_front')
  if f[1] ~= 'ready_to_enqueue' then return false end
  enqueue_job(id, f[2] or q, now, now_text, f[3] == '1')
  return true
end
for _, id in ipairs(redis.call('ZRANGE', K.ready(q), 0, 999)) do
  redis.call('ZREM', K.ready(q), id)
  if guarded(id, push_ready, id) then ready_moved = ready_moved + 1 end
end

-- Ids left in the intermediate list by a Python worker that died between LMOVE and start.
local ikey = K.intermediate(q)
local ids = redis.call('LRANGE', ikey, 0, -1)
if #ids > 0 then
  local running = {}
  for _, m in ipairs(redis.call('ZRANGE', wip, 0, -1)) do
    running[(split_member(m))] = true
  end
  for _, id in ipairs(ids) do
    if not running[id] then
      if redis.call('EXISTS', K.job(id)) == 0 then
        redis.call('LREM', ikey, 1, id)
      else
        -- (A first-seen key of the wrong type leaves the id for a later pass: it is
        -- Python RQ's key as much as ours, and says nothing about the job.)
        local fk = K.first_seen(q, id)
        local got, raw = pcall(redis.call, 'GET', fk)
        local seen = got and tonumber(raw or '')
        if got and not seen then
          redis.call('SET', fk, now, 'EX', 86400)
        elseif seen and now - seen > 60 then
          -- Failed as stuck, or failed alone when one of its keys refuses that.
          guarded(id, fail, id, stuck_exc)
          redis.call('LREM', ikey, 1, id)
          redis.call('DEL', fk)
          stuck = stuck + 1
        end
      end
    end
  end
end

for _, wk in ipairs(redis.call('SMEMBERS', K.queue_workers(q))) do
  if redis.call('EXISTS', wk) == 0 then
    redis.call('SREM', K.queue_workers(q), wk)
    redis.call('SREM', K.workers(), wk)
    dead = dead + 1
  end
end
for _, d in ipairs(damaged_others) do damaged[#damaged + 1] = d end
return {failed, requeued, retried, stuck, dead, deferred, ready_moved, failed_ids, damaged}
