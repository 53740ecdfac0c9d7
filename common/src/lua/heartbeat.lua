-- One batched heartbeat for every slot of a process.
-- ARGV: prefix, now_text, now_epoch, deadline, ttl, nw, worker_name*nw,
--       nj, (id, exec_id, origin)*nj
-- Returns {missing_workers, lost_jobs}: worker keys that no longer exist (to register
-- again) and executions whose started-registry entry is gone (to cancel: someone else
-- now owns the job).
local now, now_epoch = ARGV[2], ARGV[3]
local deadline, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local nw = tonumber(ARGV[6])
local missing, lost = {}, {}
for i = 1, nw do
  local w = ARGV[6 + i]
  local wk = k_worker(w)
  if redis.call('EXISTS', wk) == 1 then
    redis.call('HSET', wk, 'last_heartbeat', now)
    redis.call('EXPIRE', wk, ttl)
    redis.call('EXPIRE', wk .. ':executions', ttl + 60)
  else
    missing[#missing + 1] = w
  end
end
local base = 7 + nw
local nj = tonumber(ARGV[base])
for i = 1, nj do
  local id, ex, origin = ARGV[base + 3 * i - 2], ARGV[base + 3 * i - 1], ARGV[base + 3 * i]
  local wip = P .. ':wip:' .. origin
  local member = id .. ':' .. ex
  if redis.call('ZSCORE', wip, member) then
    redis.call('ZADD', wip, 'XX', deadline, member)
    if redis.call('EXISTS', k_job(id)) == 1 then
      redis.call('HSET', k_job(id), 'last_heartbeat', now)
    end
    local exk = P .. ':execution:' .. id .. ':' .. ex
    redis.call('HSET', exk, 'last_heartbeat', now_epoch)
    redis.call('EXPIRE', exk, ttl)
    redis.call('ZADD', P .. ':executions:' .. id, deadline + 60, ex)
    redis.call('EXPIRE', P .. ':executions:' .. id, ttl + 60)
  else
    lost[#lost + 1] = member
  end
end
return {missing, lost}
