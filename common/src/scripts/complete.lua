-- Recording the end of one execution (the completion half of cycle.lua; its typed
-- boundary is common/src/scripts/cycle.rs): result, registries, TTLs, retries (also a
-- returned rq.Retry), repeats (RQ 3.0's Repeat), the job's rate-limit slot, and
-- dependents. Values the worker read from the job hash as claimed (result_ttl, rate
-- limit, repeat fields, whether it has dependencies) come with the execution, as RQ's
-- worker uses the job it fetched; each is validated here again under the shared rules
-- before anything is written. The worker's counters and state are not written per job:
-- the cycle sets the slot's state, the heartbeat its counters.
-- One completion is read from ARGV at `i`: id, ex, worker, origin, outcome, payload,
-- started_epoch, result_ttl, extra ('0', or '1' when these nine follow: rl_key,
-- rl_concurrency, repeats_left, repeat_intervals, ttl, has_dependencies, retry_max,
-- retry_intervals, retry_at_front). Most jobs have none of the nine, and every argument
-- costs Redis time, so they are sent only when one is set.
-- outcome: ok | fail (retry if retries are left) | fail_final (never retried) | stop |
--          requeue | lost | retry_value (the function returned rq.Retry; payload = it)
-- Returns what happened: finished, deleted, repeated, repeat_scheduled, retried,
-- scheduled, failed, stopped, requeued, or lost (the execution was no longer ours).

-- A JSON list of whole seconds (0 to MAX_TTL), or nil.
local function intervals_of(raw)
  if not raw or raw == '' then return {} end
  local ok, v = pcall(cjson.decode, raw)
  if not ok or type(v) ~= 'table' then return nil end
  for _, i in ipairs(v) do
    if type(i) ~= 'number' or i ~= math.floor(i) or i < 0 or i > MAX_TTL then return nil end
  end
  return v
end

-- Python's json.dumps of a list of ints: `[1, 3]`.
local function py_int_list(v)
  local parts = {}
  for i, n in ipairs(v) do parts[i] = string.format('%d', n) end
  return '[' .. table.concat(parts, ', ') .. ']'
end

-- RQ 3.0's Repeat.schedule, inside the success step: the next run at once or after the
-- first interval (the list shifts while it has more than one). Returns nil when no
-- repeats are left.
local function repeat_job(id, origin, x, now, now_text)
  local left = int_in(x.repeats_left, 0, MAX_RETRIES)
  if not left or left <= 0 then return nil end
  local jk = K.job(id)
  local intervals = intervals_of(x.repeat_intervals) or {}
  local interval = intervals[1] or 0
  if #intervals > 1 then
    table.remove(intervals, 1)
    redis.call('HSET', jk, 'repeat_intervals', py_int_list(intervals))
  end
  redis.call('HSET', jk, 'repeats_left', left - 1)
  local ttl = int_in(x.ttl, 1, MAX_TTL)
  if ttl then redis.call('EXPIRE', jk, ttl) end
  if interval > 0 then
    redis.call('SADD', K.queues(), K.queue(origin))
    redis.call('HSET', jk, 'status', 'scheduled')
    redis.call('ZADD', K.scheduled(origin), math.floor(now + interval), id)
    return 'repeat_scheduled'
  end
  push_queued(id, origin, now_text, false)
  return 'repeated'
end

-- The nine optional facts, or the defaults when none were sent.
local NO_EXTRA = {rl_key = '', rl_concurrency = '', repeats_left = '', repeat_intervals = '',
  ttl = '', has_dependencies = '0', retry_max = '', retry_intervals = '', retry_at_front = '0'}
local function extra_at(i)
  return {rl_key = ARGV[i], rl_concurrency = ARGV[i + 1], repeats_left = ARGV[i + 2],
    repeat_intervals = ARGV[i + 3], ttl = ARGV[i + 4], has_dependencies = ARGV[i + 5],
    retry_max = ARGV[i + 6], retry_intervals = ARGV[i + 7], retry_at_front = ARGV[i + 8]}
end

-- A returned rq.Retry (RQ 3.0's handle_job_retry): a RETRIED result and a requeue (at
-- once or after the interval for this attempt) until `max` attempts, then failed with a
-- MAX_RETRIES_EXCEEDED result.
local function retry_value(id, origin, w, payload, exec_fields, x, rl_key, now, now_text, default_ft)
  local jk = K.job(id)
  local max = int_in(x.retry_max, 1, MAX_RETRIES) or 1
  local intervals = intervals_of(x.retry_intervals) or {}
  local done = int_in(redis.call('HGET', jk, 'number_of_retries') or '', 0, MAX_RETRIES) or 0
  local rv = {'worker_name', w}
  if payload ~= '' then rv[#rv + 1] = 'return_value'; rv[#rv + 1] = payload end
  for _, v in ipairs(exec_fields) do rv[#rv + 1] = v end
  if done > 0 and done >= max then
    -- RQ 3.0's Result.create_max_retries_exceeded: no exc_string field.
    fail_job(id, origin, 'failed', now_text, now, default_ft, rv, '5')
    rl_settle(rl_key, id, 'failed', now, now_text)
    return 'failed'
  end
  redis.call('XADD', K.results(id), 'MAXLEN', '~', '10', '*', 'type', '4', unpack(rv))
  redis.call('HSET', jk, 'number_of_retries', done + 1)
  if x.retry_at_front == '1' then redis.call('HSET', jk, 'enqueue_at_front_on_retry', '1') end
  local interval = 0
  if #intervals > 0 then interval = intervals[math.min(#intervals - 1, done) + 1] end
  if interval > 0 then
    redis.call('SADD', K.queues(), K.queue(origin))
    redis.call('HSET', jk, 'status', 'scheduled')
    redis.call('ZADD', K.scheduled(origin), math.floor(now) + interval, id)
    rl_settle(rl_key, id, 'scheduled', now, now_text)
    return 'scheduled'
  end
  push_queued(id, origin, now_text, redis.call('HGET', jk, 'enqueue_at_front_on_retry') == '1')
  return 'retried'
end

-- Success: finished (result entry, finished registry, TTLs), or deleted with
-- result_ttl 0, or repeated.
local function succeed(id, origin, w, payload, started_epoch, result_ttl, ex, x, rl_key,
                       now, now_text, now_epoch, default_rt)
  local jk = K.job(id)
  local rt = int_in(result_ttl, -1, MAX_TTL) or default_rt
  redis.call('HSET', jk, 'status', 'finished', 'ended_at', now_text, 'last_heartbeat', now_text)
  if rt ~= 0 then
    local rk = K.results(id)
    if payload ~= '' then
      redis.call('XADD', rk, 'MAXLEN', '~', '10', '*', 'type', '1', 'worker_name', w,
        'return_value', payload, 'execution_id', ex, 'execution_started_at', started_epoch,
        'execution_ended_at', now_epoch)
    else
      redis.call('XADD', rk, 'MAXLEN', '~', '10', '*', 'type', '1', 'worker_name', w,
        'execution_id', ex, 'execution_started_at', started_epoch, 'execution_ended_at', now_epoch)
    end
    if rt > 0 then
      redis.call('EXPIRE', rk, num_text(rt))
      redis.call('ZADD', K.finished(origin), num_text(math.floor(now) + rt), id)
    else
      redis.call('PERSIST', rk)
      redis.call('ZADD', K.finished(origin), '+inf', id)
    end
  end
  -- After the job's own result and registry writes, so that a key of the job's refusing
  -- one of them (the job is then failed, unrecordable.lua) has released no dependent.
  local left_waiting = release_dependents(id, now, now_text)
  if x ~= NO_EXTRA then
    local repeated = repeat_job(id, origin, x, now, now_text)
    if repeated then
      if repeated == 'repeat_scheduled' then rl_settle(rl_key, id, 'scheduled', now, now_text) end
      return repeated
    end
    rl_settle(rl_key, id, 'finished', now, now_text)
  end
  if rt == 0 then
    redis.call('DEL', jk, K.dependents(id), K.dependencies(id), K.executions(id))
    return 'deleted'
  end
  if rt > 0 then
    redis.call('EXPIRE', jk, num_text(rt))
    if left_waiting > 0 then redis.call('EXPIRE', K.dependents(id), num_text(rt)) end
    if x.has_dependencies == '1' then redis.call('EXPIRE', K.dependencies(id), num_text(rt)) end
  end
  return 'finished'
end

-- The ARGV index of the completion after the one at `i`.
local function next_completion(i)
  if ARGV[i + 8] == '1' then return i + 18 end
  return i + 9
end

-- Records the completion at ARGV[i]; returns what happened. `progress.owned` is set once
-- the execution is known to own the job (past the started-registry test), for
-- fail_unrecordable when a later write is refused.
local function complete_execution(i, now, now_text, now_epoch, default_rt, default_ft, progress)
  local id, ex, w, origin, outcome = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local payload, started_epoch, result_ttl = ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
  local x = NO_EXTRA
  if ARGV[i + 8] == '1' then x = extra_at(i + 9) end
  local m = id .. ':' .. ex
  -- The slot's own key: one of the wrong type is the slot's damage, not the job's.
  pcall(redis.call, 'SREM', K.worker_executions(w), m)
  redis.call('DEL', K.execution(id, ex))
  redis.call('ZREM', K.executions(id), ex)
  if redis.call('ZREM', K.started(origin), m) == 0 or outcome == 'lost' then return 'lost' end
  progress.owned = true
  local rl_key = nil
  if x.rl_key ~= '' and int_in(x.rl_concurrency, 1, MAX_RETRIES) then rl_key = x.rl_key end

  if outcome == 'ok' then
    return succeed(id, origin, w, payload, started_epoch, result_ttl, ex, x, rl_key,
      now, now_text, now_epoch, default_rt)
  end
  if outcome == 'requeue' then
    requeue_front(id, origin, now, now_text)
    return 'requeued'
  end
  local jk = K.job(id)
  if outcome == 'stop' then
    redis.call('HSET', jk, 'last_heartbeat', now_text)
  else
    redis.call('HSET', jk, 'ended_at', now_text, 'last_heartbeat', now_text)
  end
  local exec_fields = {'execution_id', ex, 'execution_started_at', started_epoch, 'execution_ended_at', now_epoch}
  if outcome == 'retry_value' then
    return retry_value(id, origin, w, payload, exec_fields, x, rl_key, now, now_text, default_ft)
  end
  if outcome == 'fail' then
    local retried = retry_job(id, origin, now_text, now)
    if retried then
      if retried == 'scheduled' then rl_settle(rl_key, id, 'scheduled', now, now_text) end
      return retried
    end
  end
  local status = 'failed'
  if outcome == 'stop' then status = 'stopped' end
  local fields = {'worker_name', w, 'exc_string', payload}
  for _, v in ipairs(exec_fields) do fields[#fields + 1] = v end
  fail_job(id, origin, status, now_text, now, default_ft, fields)
  rl_settle(rl_key, id, status, now, now_text)
  return status
end
