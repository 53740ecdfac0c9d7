-- Save and enqueue (or defer, or schedule) one job atomically.
-- ARGV: prefix, id, queue, mode (back|front|schedule), schedule_at, now_text, now_secs,
--       ttl ('' = none), allow_dependency_failures (0|1), nd, dep_id*nd, nf, (field, value)*nf
-- Returns the status the job got: queued, deferred or scheduled.
local id, q, mode = ARGV[2], ARGV[3], ARGV[4]
local at, now, now_secs, ttl = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
local allow = ARGV[9] == '1'
local nd = tonumber(ARGV[10])
local deps = {}
for i = 1, nd do deps[i] = ARGV[10 + i] end
local fbase = 11 + nd
local nf = tonumber(ARGV[fbase])
local jk = k_job(id)
local existing = redis.call('HGET', jk, 'status')
if existing == 'queued' or existing == 'started' or existing == 'deferred' or existing == 'scheduled' then
  return redis.error_reply('ERR job ' .. id .. ' already exists with status ' .. existing)
end
if existing then redis.call('DEL', jk) end
redis.call('SADD', P .. ':queues', k_queue(q))
if nf > 0 then
  redis.call('HSET', jk, unpack(ARGV, fbase + 1, fbase + 2 * nf))
end
local unmet = false
for _, dep in ipairs(deps) do
  if not dependency_met(redis.call('HGET', k_job(dep), 'status'), allow) then unmet = true end
end
local status
if unmet then
  status = 'deferred'
  redis.call('HSET', jk, 'status', 'deferred')
  redis.call('ZADD', P .. ':deferred:' .. q, now_secs, id)
  for _, dep in ipairs(deps) do
    redis.call('SADD', k_dependents(dep), id)
    redis.call('SADD', k_dependencies(id), dep)
  end
elseif mode == 'schedule' then
  status = 'scheduled'
  redis.call('HSET', jk, 'status', 'scheduled')
  redis.call('ZADD', P .. ':scheduled:' .. q, at, id)
else
  status = 'queued'
  push_queued(id, q, now, mode == 'front')
end
if ttl and ttl > 0 then
  redis.call('EXPIRE', jk, ttl)
  redis.call('EXPIRE', k_dependents(id), ttl)
  redis.call('EXPIRE', k_dependencies(id), ttl)
end
return status
