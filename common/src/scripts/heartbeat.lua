-- One batched heartbeat for every slot of a process (common/src/scripts/heartbeat.rs is
-- its typed boundary). Deadlines come from Redis's clock: now + lease.
-- ARGV: prefix, now_text, now_epoch, lease_secs, stall_gap_secs,
--       nw, (worker_name, finished, failed, working_secs)*nw, nj, (id, exec_id, origin)*nj
-- The counters are what each slot did since its last beat (RQ's successful_job_count,
-- failed_job_count, total_working_time), so completions need not write them per job.
-- Returns {missing_workers, lost_executions}: worker keys that no longer exist or are
-- stubs (to register again) and executions whose started-registry entry is gone (to cancel:
-- someone else now owns the job).
local now_text, now_epoch, lease = ARGV[2], ARGV[3], tonumber(ARGV[4])
local now = server_now()
local deadline = num_text(now + lease)
local executions_deadline = num_text(now + lease + 60)
local lease_text, lease_and_minute_text = num_text(lease), num_text(lease + 60)
observe_clock(now, lease, tonumber(ARGV[5]))
local nw = tonumber(ARGV[6])
local missing, lost = {}, {}
for i = 1, nw do
  local at = 6 + 4 * (i - 1)
  local w = ARGV[at + 1]
  local finished, failed, working = ARGV[at + 2], ARGV[at + 3], ARGV[at + 4]
  local wk = K.worker(w)
  -- A registered slot has a whole worker hash (`birth` is written only by registration)
  -- and is listed in rq:workers. A hash that a state or counter write re-created after
  -- the key expired is a stub RQ's readers cannot show: registered again, like a
  -- missing one.
  if redis.call('HEXISTS', wk, 'birth') == 1 and redis.call('SISMEMBER', K.workers(), wk) == 1 then
    redis.call('HSET', wk, 'last_heartbeat', now_text)
    redis.call('EXPIRE', wk, lease_text)
    redis.call('EXPIRE', K.worker_executions(w), lease_and_minute_text)
  else
    missing[#missing + 1] = w
  end
  if finished ~= '0' then redis.call('HINCRBY', wk, 'successful_job_count', finished) end
  if failed ~= '0' then redis.call('HINCRBY', wk, 'failed_job_count', failed) end
  if working ~= '0' then redis.call('HINCRBYFLOAT', wk, 'total_working_time', working) end
end
local base = 7 + 4 * nw
local nj = tonumber(ARGV[base])
for i = 1, nj do
  local id, ex, origin = ARGV[base + 3 * i - 2], ARGV[base + 3 * i - 1], ARGV[base + 3 * i]
  local wip = K.started(origin)
  local m = member(id, ex)
  if redis.call('ZADD', wip, 'XX', 'CH', deadline, m) == 1 or redis.call('ZSCORE', wip, m) then
    if redis.call('EXISTS', K.job(id)) == 1 then
      redis.call('HSET', K.job(id), 'last_heartbeat', now_text)
    end
    local exk = K.execution(id, ex)
    redis.call('HSET', exk, 'last_heartbeat', now_epoch)
    redis.call('EXPIRE', exk, lease_text)
    redis.call('ZADD', K.executions(id), executions_deadline, ex)
    redis.call('EXPIRE', K.executions(id), lease_and_minute_text)
  else
    lost[#lost + 1] = m
  end
end
return {missing, lost}
