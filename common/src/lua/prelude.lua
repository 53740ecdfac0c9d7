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
