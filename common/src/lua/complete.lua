-- Record the end of one execution in one atomic step: result, registries, TTLs,
-- worker counters and state, retries, and dependents.
-- ARGV: prefix, now_text, now_epoch, now_secs, id, exec_id, worker, origin, outcome,
--       payload, started_epoch, working_secs, default_result_ttl, default_failure_ttl
-- outcome: ok | fail | fail_final (no retry) | stop | requeue
-- Returns what happened: finished, deleted, retried, scheduled, failed, stopped,
-- requeued, or lost (the execution was no longer ours: nothing but worker state changed).
local now, now_epoch, now_secs = ARGV[2], ARGV[3], tonumber(ARGV[4])
local id, ex, w, origin, outcome = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local payload, started_epoch, working = ARGV[10], ARGV[11], ARGV[12]
local default_rt, default_ft = tonumber(ARGV[13]), tonumber(ARGV[14])
local jk = k_job(id)
local member = id .. ':' .. ex
local wk = k_worker(w)

redis.call('SREM', wk .. ':executions', member)
redis.call('HDEL', wk, 'current_job', 'current_job_working_time')
redis.call('HSET', wk, 'state', 'idle', 'last_heartbeat', now)
redis.call('DEL', P .. ':execution:' .. id .. ':' .. ex)
redis.call('ZREM', P .. ':executions:' .. id, ex)
if redis.call('ZREM', P .. ':wip:' .. origin, member) == 0 then return 'lost' end
redis.call('HINCRBYFLOAT', wk, 'total_working_time', working)

if outcome == 'ok' then
  redis.call('HINCRBY', wk, 'successful_job_count', 1)
  local rt = tonumber(redis.call('HGET', jk, 'result_ttl') or '') or default_rt
  redis.call('HSET', jk, 'status', 'finished', 'ended_at', now, 'last_heartbeat', now)
  release_dependents(id, now)
  if rt == 0 then
    redis.call('DEL', jk, k_dependents(id), k_dependencies(id), P .. ':executions:' .. id)
    return 'deleted'
  end
  local rk = P .. ':results:' .. id
  local fields = {'type', '1', 'worker_name', w}
  if payload ~= '' then
    fields[#fields + 1] = 'return_value'
    fields[#fields + 1] = payload
  end
  for _, v in ipairs({'execution_id', ex, 'execution_started_at', started_epoch, 'execution_ended_at', now_epoch}) do
    fields[#fields + 1] = v
  end
  redis.call('XADD', rk, 'MAXLEN', '~', '10', '*', unpack(fields))
  if rt > 0 then
    redis.call('EXPIRE', rk, rt)
    redis.call('ZADD', P .. ':finished:' .. origin, now_secs + rt, id)
    redis.call('EXPIRE', jk, rt)
    redis.call('EXPIRE', k_dependents(id), rt)
    redis.call('EXPIRE', k_dependencies(id), rt)
  else
    redis.call('PERSIST', rk)
    redis.call('ZADD', P .. ':finished:' .. origin, '+inf', id)
  end
  return 'finished'
end

if outcome == 'requeue' then
  push_queued(id, origin, now, true)
  return 'requeued'
end

redis.call('HINCRBY', wk, 'failed_job_count', 1)
redis.call('HSET', jk, 'ended_at', now, 'last_heartbeat', now)
if outcome == 'fail' then
  local retried = retry_job(id, origin, now, now_secs)
  if retried then return retried end
end
local status = 'failed'
if outcome == 'stop' then status = 'stopped' end
fail_job(id, origin, status, now, now_secs, default_ft, {'worker_name', w, 'exc_string', payload,
  'execution_id', ex, 'execution_started_at', started_epoch, 'execution_ended_at', now_epoch})
return status
