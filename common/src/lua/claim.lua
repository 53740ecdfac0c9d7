-- Claim up to N jobs for N idle slots in one atomic step, by queue priority.
-- ARGV: prefix, now_text, now_epoch, deadline, exec_ttl, nq, (queue, capacity)*nq,
--       ns, (worker_name, execution_id)*ns
-- Returns {'suspended'} or {'ok', {slot, id, origin, queue, hash_flat}...}.
-- Each popped id is recorded as started before the script returns: no moment exists at
-- which a crash could lose it.
if redis.call('EXISTS', P .. ':suspended') == 1 then return {'suspended'} end
local now, now_epoch = ARGV[2], ARGV[3]
local deadline, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local nq = tonumber(ARGV[6])
local queues, caps = {}, {}
for i = 1, nq do
  queues[i] = ARGV[6 + 2 * i - 1]
  caps[i] = tonumber(ARGV[6 + 2 * i])
end
local base = 7 + 2 * nq
local ns = tonumber(ARGV[base])
local out = {'ok'}
local slot = 1
while slot <= ns do
  local id, qi = nil, nil
  for i = 1, nq do
    if caps[i] ~= 0 then
      id = redis.call('LPOP', k_queue(queues[i]))
      if id then qi = i break end
    end
  end
  if not id then break end
  local jk = k_job(id)
  local h = redis.call('HGETALL', jk)
  if #h > 0 then
    if caps[qi] > 0 then caps[qi] = caps[qi] - 1 end
    local origin = redis.call('HGET', jk, 'origin')
    if not origin or origin == '' then origin = queues[qi] end
    local w = ARGV[base + 2 * slot - 1]
    local ex = ARGV[base + 2 * slot]
    local member = id .. ':' .. ex
    local wk = k_worker(w)
    redis.call('HSET', jk, 'status', 'started', 'started_at', now, 'last_heartbeat', now, 'worker_name', w)
    redis.call('PERSIST', jk)
    redis.call('ZADD', P .. ':wip:' .. origin, deadline, member)
    local exk = P .. ':execution:' .. id .. ':' .. ex
    redis.call('HSET', exk, 'id', ex, 'job_id', id, 'created_at', now_epoch, 'last_heartbeat', now_epoch, 'worker_name', w)
    redis.call('EXPIRE', exk, ttl)
    redis.call('ZADD', P .. ':executions:' .. id, deadline + 60, ex)
    redis.call('EXPIRE', P .. ':executions:' .. id, ttl + 60)
    redis.call('SADD', wk .. ':executions', member)
    redis.call('EXPIRE', wk .. ':executions', ttl + 60)
    redis.call('HSET', wk, 'state', 'busy', 'current_job', id, 'current_job_working_time', '0')
    out[#out + 1] = {slot, id, origin, queues[qi], h}
    slot = slot + 1
  end
end
return out
