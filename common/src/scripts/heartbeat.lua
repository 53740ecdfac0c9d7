-- One batched heartbeat for every slot of a process (common/src/scripts/heartbeat.rs is
-- its typed boundary). Deadlines come from Redis's clock: now + lease.
-- ARGV: prefix, now_text, now_epoch, lease_secs, stall_gap_secs,
--       nw, (worker_name, finished, failed, working_secs)*nw, nj, (id, exec_id, origin)*nj
-- The counters are what each slot did since its last beat (RQ's successful_job_count,
-- failed_job_count, total_working_time), so completions need not write them per job.
-- Each slot and each job is beaten under pcall, so a key of the wrong type (left by hand
-- or by hostile input) costs only its own writes, not the whole beat.
-- Returns {missing_workers, lost_executions, damaged}: worker keys that no longer exist or
-- are stubs (to register again), executions whose started-registry entry is gone (to
-- cancel: someone else now owns the job), and {name or member, reason} of the slots and
-- executions a key refused a write.
local now_text, now_epoch, lease = ARGV[2], ARGV[3], tonumber(ARGV[4])
local now = server_now()
local deadline = num_text(now + lease)
local executions_deadline = num_text(now + lease + 60)
local lease_text, lease_and_minute_text = num_text(lease), num_text(lease + 60)
observe_clock(now, lease, tonumber(ARGV[5]))
local nw = tonumber(ARGV[6])
local missing, lost, damaged = {}, {}, {}

-- One slot's worker key: refreshed, with its counters added; whether it is missing.
local function beat_worker(w, finished, failed, working)
  local wk = K.worker(w)
  local is_missing = false
  -- A registered slot has a whole worker hash (`birth` is written only by registration)
  -- and is listed in rq:workers. A hash that a state or counter write re-created after
  -- the key expired is a stub RQ's readers cannot show: registered again, like a
  -- missing one.
  if redis.call('HEXISTS', wk, 'birth') == 1 and redis.call('SISMEMBER', K.workers(), wk) == 1 then
    redis.call('HSET', wk, 'last_heartbeat', now_text)
    redis.call('EXPIRE', wk, lease_text)
    redis.call('EXPIRE', K.worker_executions(w), lease_and_minute_text)
  else
    is_missing = true
  end
  if finished ~= '0' then redis.call('HINCRBY', wk, 'successful_job_count', finished) end
  if failed ~= '0' then redis.call('HINCRBY', wk, 'failed_job_count', failed) end
  if working ~= '0' then redis.call('HINCRBYFLOAT', wk, 'total_working_time', working) end
  return is_missing
end

-- One running execution's deadline and heartbeat fields: whether it is still ours.
local function beat_job(id, ex, origin)
  local wip = K.started(origin)
  local m = member(id, ex)
  if redis.call('ZADD', wip, 'XX', 'CH', deadline, m) == 0 and not redis.call('ZSCORE', wip, m) then
    return false
  end
  if redis.call('EXISTS', K.job(id)) == 1 then
    redis.call('HSET', K.job(id), 'last_heartbeat', now_text)
  end
  local exk = K.execution(id, ex)
  redis.call('HSET', exk, 'last_heartbeat', now_epoch)
  redis.call('EXPIRE', exk, lease_text)
  redis.call('ZADD', K.executions(id), executions_deadline, ex)
  redis.call('EXPIRE', K.executions(id), lease_and_minute_text)
  return true
end

for i = 1, nw do
  local at = 6 + 4 * (i - 1)
  local w = ARGV[at + 1]
  local ok, is_missing = pcall(beat_worker, w, ARGV[at + 2], ARGV[at + 3], ARGV[at + 4])
  if not ok then
    raise_if_transient(is_missing)
    damaged[#damaged + 1] = {w, 'the key ' .. K.worker(w) .. ': ' .. error_text(is_missing)}
  elseif is_missing then
    missing[#missing + 1] = w
  end
end
local base = 7 + 4 * nw
local nj = tonumber(ARGV[base])
for i = 1, nj do
  local id, ex, origin = ARGV[base + 3 * i - 2], ARGV[base + 3 * i - 1], ARGV[base + 3 * i]
  local ok, ours = pcall(beat_job, id, ex, origin)
  if not ok then
    -- Not reported lost: whether the job is still ours is not known.
    raise_if_transient(ours)
    damaged[#damaged + 1] = {member(id, ex), unrecordable_reason(id, origin, ours)}
  elseif not ours then
    lost[#lost + 1] = member(id, ex)
  end
end
return {missing, lost, damaged}
