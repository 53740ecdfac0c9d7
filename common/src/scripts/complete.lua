-- Record the end of one execution in one atomic step: result, registries, TTLs,
-- worker counters and state, retries, and dependents (common/src/scripts/complete.rs is
-- its typed boundary). Every value it reads is validated before anything is written.
-- ARGV: prefix, now_text, now_epoch, id, exec_id, worker, origin, outcome, payload,
--       started_epoch, working_secs, default_result_ttl, default_failure_ttl
-- outcome: ok | fail (retry if retries are left) | fail_final (never retried) | stop | requeue
-- Returns what happened: finished, deleted, retried, scheduled, failed, stopped,
-- requeued, or lost (the execution was no longer ours: nothing but worker state changed).
local now_text, now_epoch = ARGV[2], ARGV[3]
local id, ex, w, origin, outcome = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local payload, started_epoch, working = ARGV[9], ARGV[10], ARGV[11]
local default_rt, default_ft = tonumber(ARGV[12]), tonumber(ARGV[13])
local now = server_now()
local jk = K.job(id)
local m = member(id, ex)
local wk = K.worker(w)

redis.call('SREM', K.worker_executions(w), m)
redis.call('HDEL', wk, 'current_job', 'current_job_working_time')
redis.call('HSET', wk, 'state', IDLE, 'last_heartbeat', now_text)
redis.call('DEL', K.execution(id, ex))
redis.call('ZREM', K.executions(id), ex)
if redis.call('ZREM', K.started(origin), m) == 0 then return 'lost' end
redis.call('HINCRBYFLOAT', wk, 'total_working_time', working)

if outcome == 'ok' then
  redis.call('HINCRBY', wk, 'successful_job_count', 1)
  local rt = ttl_field(jk, 'result_ttl', default_rt)
  redis.call('HSET', jk, 'status', 'finished', 'ended_at', now_text, 'last_heartbeat', now_text)
  release_dependents(id, now_text)
  if rt == 0 then
    redis.call('DEL', jk, K.dependents(id), K.dependencies(id), K.executions(id))
    return 'deleted'
  end
  local rk = K.results(id)
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
    redis.call('ZADD', K.finished(origin), math.floor(now) + rt, id)
    redis.call('EXPIRE', jk, rt)
    redis.call('EXPIRE', K.dependents(id), rt)
    redis.call('EXPIRE', K.dependencies(id), rt)
  else
    redis.call('PERSIST', rk)
    redis.call('ZADD', K.finished(origin), '+inf', id)
  end
  return 'finished'
end

if outcome == 'requeue' then
  push_queued(id, origin, now_text, true)
  return 'requeued'
end

redis.call('HINCRBY', wk, 'failed_job_count', 1)
if outcome == 'stop' then
  redis.call('HSET', jk, 'last_heartbeat', now_text)
else
  redis.call('HSET', jk, 'ended_at', now_text, 'last_heartbeat', now_text)
end
if outcome == 'fail' then
  local retried = retry_job(id, origin, now_text, now)
  if retried then return retried end
end
local status = 'failed'
if outcome == 'stop' then status = 'stopped' end
fail_job(id, origin, status, now_text, now, default_ft, {'worker_name', w, 'exc_string', payload,
  'execution_id', ex, 'execution_started_at', started_epoch, 'execution_ended_at', now_epoch})
return status
