-- Claim up to N jobs for N idle slots in one atomic step, by queue priority
-- (common/src/scripts/claim.rs is its typed boundary).
-- ARGV: prefix, now_text, now_epoch, lease_secs, default_failure_ttl, bad_id_exc, bad_origin_exc,
--       nq, (queue, capacity)*nq, ns, (worker_name, execution_id)*ns
-- Returns {'suspended'} or {'ok', entry...} where an entry is one of
--   {'job', slot, id, origin, queue, hash_flat}   claimed and recorded as started
--   {'refused', queue, id, reason}                 popped but not runnable (failed here,
--                                                  or dropped when it has no job hash)
--   {'broken', queue, error}                       the queue key is not a list: skipped
-- Each popped id is recorded (started, failed or dropped) before the script returns: no
-- moment exists at which a crash could lose it, and one bad entry touches no other job.
if redis.call('EXISTS', K.suspended()) == 1 then return {'suspended'} end
local now_text, now_epoch, lease = ARGV[2], ARGV[3], tonumber(ARGV[4])
local default_ft, bad_id_exc, bad_origin_exc = tonumber(ARGV[5]), ARGV[6], ARGV[7]
local now = server_now()
local deadline = now + lease
local nq = tonumber(ARGV[8])
local queues, caps = {}, {}
for i = 1, nq do
  queues[i] = ARGV[8 + 2 * i - 1]
  caps[i] = tonumber(ARGV[8 + 2 * i])
end
local base = 9 + 2 * nq
local ns = tonumber(ARGV[base])
local out = {'ok'}
local slot = 1

-- Pops the next id by priority; a queue key of the wrong type is reported and skipped.
local function pop()
  for i = 1, nq do
    if caps[i] ~= 0 then
      local id = redis.pcall('LPOP', K.queue(queues[i]))
      if type(id) == 'table' and id.err then
        out[#out + 1] = {'broken', queues[i], id.err}
        caps[i] = 0
      elseif id then
        return id, i
      end
    end
  end
  return nil, nil
end

-- Fails a popped job that cannot run (no runnable id or origin) into `queue`'s registry.
local function refuse(id, queue, exc, reason)
  fail_job(id, queue, 'failed', now_text, now, default_ft, {'worker_name', '', 'exc_string', exc})
  out[#out + 1] = {'refused', queue, id, reason}
end

while slot <= ns do
  local id, qi = pop()
  if not id then break end
  local q = queues[qi]
  local jk = K.job(id)
  local h = redis.pcall('HGETALL', jk)
  if type(h) == 'table' and h.err then
    out[#out + 1] = {'refused', q, id, 'its job key is not a hash'}
  elseif #h == 0 then
    out[#out + 1] = {'refused', q, id, 'it has no job hash'}
  elseif not is_text(id, 512) then
    refuse(id, q, bad_id_exc, 'its id is not UTF-8 text')
  else
    local origin = redis.call('HGET', jk, 'origin')
    if not origin or origin == '' then origin = q end
    if not is_text(origin, 512) then
      refuse(id, q, bad_origin_exc, 'its origin is not UTF-8 text')
    else
      if caps[qi] > 0 then caps[qi] = caps[qi] - 1 end
      local w = ARGV[base + 2 * slot - 1]
      local ex = ARGV[base + 2 * slot]
      local m = member(id, ex)
      local wk = K.worker(w)
      redis.call('HSET', jk, 'status', 'started', 'started_at', now_text, 'last_heartbeat', now_text, 'worker_name', w)
      redis.call('PERSIST', jk)
      redis.call('ZADD', K.started(origin), deadline, m)
      local exk = K.execution(id, ex)
      redis.call('HSET', exk, 'id', ex, 'job_id', id, 'created_at', now_epoch, 'last_heartbeat', now_epoch, 'worker_name', w)
      redis.call('EXPIRE', exk, lease)
      redis.call('ZADD', K.executions(id), deadline + 60, ex)
      redis.call('EXPIRE', K.executions(id), lease + 60)
      redis.call('SADD', K.worker_executions(w), m)
      redis.call('EXPIRE', K.worker_executions(w), lease + 60)
      redis.call('HSET', wk, 'state', BUSY, 'current_job', id, 'current_job_working_time', '0')
      out[#out + 1] = {'job', slot, id, origin, q, h}
      slot = slot + 1
    end
  end
end
return out
