-- Shared helpers for every runq script. ARGV[1] is always the RQ key prefix.
-- Keys are built from the prefix inside the scripts (standalone Redis, as RQ itself).
local P = ARGV[1]
local function k_job(id) return P .. ':job:' .. id end
local function k_queue(q) return P .. ':queue:' .. q end
local function k_dependents(id) return P .. ':job:' .. id .. ':dependents' end
local function k_dependencies(id) return P .. ':job::' .. id .. ':dependencies' end
local function k_worker(w) return P .. ':worker:' .. w end

-- Put an existing job hash onto its queue with status `queued` (RQ 1.x/2.10 style,
-- readable by every RQ version).
local function push_queued(id, origin, now_text, at_front)
  redis.call('SADD', P .. ':queues', k_queue(origin))
  redis.call('HSET', k_job(id), 'status', 'queued', 'enqueued_at', now_text)
  if at_front then
    redis.call('LPUSH', k_queue(origin), id)
  else
    redis.call('RPUSH', k_queue(origin), id)
  end
end

-- Is a parent with status `ps` a met dependency? A parent that no longer exists is met (RQ).
local function dependency_met(ps, allow_failures)
  if not ps then return true end
  if ps == 'finished' then return true end
  if allow_failures and (ps == 'failed' or ps == 'stopped') then return true end
  return false
end

-- Moves every deferred dependent of `parent_id` whose dependencies are all met onto its
-- queue, in the same atomic step as the parent's own transition.
local function release_dependents(parent_id, now_text)
  local dkey = k_dependents(parent_id)
  local released = 0
  for _, dep in ipairs(redis.call('SMEMBERS', dkey)) do
    local f = redis.call('HMGET', k_job(dep), 'status', 'origin', 'allow_dependency_failures', 'enqueue_at_front')
    local st, origin = f[1], f[2]
    if not st then
      redis.call('SREM', dkey, dep)
    elseif st == 'deferred' and origin then
      local allow = f[3] == '1'
      local ok = true
      for _, parent in ipairs(redis.call('SMEMBERS', k_dependencies(dep))) do
        if not dependency_met(redis.call('HGET', k_job(parent), 'status'), allow) then
          ok = false
          break
        end
      end
      if ok then
        redis.call('ZREM', P .. ':deferred:' .. origin, dep)
        push_queued(dep, origin, now_text, f[4] == '1')
        redis.call('SREM', dkey, dep)
        released = released + 1
      end
    end
  end
  return released
end

-- Retries a failed job per `retries_left`/`retry_intervals` (RQ's get_retry_interval):
-- back onto its queue, or into the scheduled registry when an interval applies.
-- Returns 'retried', 'scheduled', or nil when no retries are left.
local function retry_job(id, origin, now, now_secs)
  local jk = k_job(id)
  local left = tonumber(redis.call('HGET', jk, 'retries_left') or '')
  if not left or left <= 0 then return nil end
  local raw = redis.call('HGET', jk, 'retry_intervals')
  local intervals = {}
  if raw and raw ~= '' then
    local okd, decoded = pcall(cjson.decode, raw)
    if okd and type(decoded) == 'table' then intervals = decoded end
  end
  local interval = 0
  if #intervals > 0 then
    interval = tonumber(intervals[math.max(#intervals - left, 0) + 1]) or 0
  end
  redis.call('HSET', jk, 'retries_left', left - 1)
  if interval > 0 then
    redis.call('SADD', P .. ':queues', k_queue(origin))
    redis.call('HSET', jk, 'status', 'scheduled')
    redis.call('ZADD', P .. ':scheduled:' .. origin, now_secs + interval, id)
    return 'scheduled'
  end
  push_queued(id, origin, now, redis.call('HGET', jk, 'enqueue_at_front_on_retry') == '1')
  return 'retried'
end

-- Records a final failure as RQ does: status (`failed` or `stopped`), failure TTLs,
-- failed registry (a negative TTL is stored as the score), a FAILED result entry with
-- `result_fields`, and the release of dependents that allow failures.
local function fail_job(id, origin, status, now, now_secs, default_ft, result_fields)
  local jk = k_job(id)
  local ft_raw = redis.call('HGET', jk, 'failure_ttl')
  local ft = tonumber(ft_raw or '') or default_ft
  redis.call('HSET', jk, 'status', status, 'ended_at', now)
  local score = ft
  if ft > 0 then
    score = now_secs + ft
    redis.call('EXPIRE', jk, ft)
    redis.call('EXPIRE', k_dependents(id), ft)
    redis.call('EXPIRE', k_dependencies(id), ft)
  end
  redis.call('ZADD', P .. ':failed:' .. origin, score, id)
  local rk = P .. ':results:' .. id
  redis.call('XADD', rk, 'MAXLEN', '~', '10', '*', 'type', '2', unpack(result_fields))
  if tonumber(ft_raw or '') and ft > 0 then redis.call('EXPIRE', rk, ft) end
  release_dependents(id, now)
end
