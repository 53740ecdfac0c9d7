-- One maintenance pass over one queue, atomic: trims expired finished/failed entries,
-- recovers abandoned jobs (started-registry deadline passed: the owning process died),
-- clears stale intermediate-list entries left by Python workers and drops dead worker
-- records. Skips the queue while Python RQ's own cleanup holds rq:clean_registries:<q>.
-- ARGV: prefix, now_text, now_secs, now_epoch, queue, policy (fail|requeue),
--       default_failure_ttl, abandoned_exc_b64, stuck_exc_b64
-- Returns {abandoned_failed, abandoned_requeued, abandoned_retried, intermediate_cleared, dead_workers}
-- or {'busy'}.
local now, now_secs, now_epoch, q = ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local policy, default_ft = ARGV[6], tonumber(ARGV[7])
local abandoned_exc, stuck_exc = ARGV[8], ARGV[9]
if redis.call('EXISTS', P .. ':clean_registries:' .. q) == 1 then return {'busy'} end
redis.call('ZREMRANGEBYSCORE', P .. ':finished:' .. q, 0, now_secs)
redis.call('ZREMRANGEBYSCORE', P .. ':failed:' .. q, 0, now_secs)

local function fail(id, exc)
  fail_job(id, q, 'failed', now, now_secs, default_ft, {'worker_name', '', 'exc_string', exc})
end

-- Retry (per retries_left/retry_intervals), requeue or fail one abandoned job.
local function recover(id, exc)
  if retry_job(id, q, now, now_secs) then return 'retried' end
  if policy == 'requeue' then
    push_queued(id, q, now, true)
    return 'requeued'
  end
  fail(id, exc)
  return 'failed'
end

local failed, requeued, retried, stuck, dead = 0, 0, 0, 0, 0
local wip = P .. ':wip:' .. q
for _, member in ipairs(redis.call('ZRANGEBYSCORE', wip, 0, now_secs)) do
  redis.call('ZREM', wip, member)
  local sep = string.find(member, ':', 1, true)
  local id, ex = member, nil
  if sep then id = string.sub(member, 1, sep - 1); ex = string.sub(member, sep + 1) end
  if ex then
    local exk = P .. ':execution:' .. id .. ':' .. ex
    local w = redis.call('HGET', exk, 'worker_name')
    if w then redis.call('SREM', k_worker(w) .. ':executions', member) end
    redis.call('DEL', exk)
    redis.call('ZREM', P .. ':executions:' .. id, ex)
  end
  if redis.call('HGET', k_job(id), 'status') == 'started' then
    local r = recover(id, abandoned_exc)
    if r == 'failed' then failed = failed + 1 elseif r == 'requeued' then requeued = requeued + 1 else retried = retried + 1 end
  end
end

-- Ids left in the intermediate list by a Python worker that died between LMOVE and start.
local ikey = k_queue(q) .. ':intermediate'
local ids = redis.call('LRANGE', ikey, 0, -1)
if #ids > 0 then
  local running = {}
  for _, member in ipairs(redis.call('ZRANGE', wip, 0, -1)) do
    local sep = string.find(member, ':', 1, true)
    running[sep and string.sub(member, 1, sep - 1) or member] = true
  end
  for _, id in ipairs(ids) do
    if not running[id] then
      if redis.call('EXISTS', k_job(id)) == 0 then
        redis.call('LREM', ikey, 1, id)
      else
        local fk = ikey .. ':first_seen:' .. id
        local seen = redis.call('GET', fk)
        if not seen then
          redis.call('SET', fk, now_epoch, 'EX', 86400)
        elseif tonumber(now_epoch) - tonumber(seen) > 60 then
          fail(id, stuck_exc)
          redis.call('LREM', ikey, 1, id)
          redis.call('DEL', fk)
          stuck = stuck + 1
        end
      end
    end
  end
end

for _, wk in ipairs(redis.call('SMEMBERS', P .. ':workers:' .. q)) do
  if redis.call('EXISTS', wk) == 0 then
    redis.call('SREM', P .. ':workers:' .. q, wk)
    redis.call('SREM', P .. ':workers', wk)
    dead = dead + 1
  end
end
return {failed, requeued, retried, stuck, dead}
