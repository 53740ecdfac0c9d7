-- Save and enqueue (or defer, or schedule) one job atomically (common/src/scripts/
-- enqueue.rs is its typed boundary). The TTL is checked before anything is written, so a
-- refused job is never left queued.
-- ARGV: prefix, id, queue, mode (back|front|schedule), schedule_at, now_text,
--       ttl ('' = none), allow_dependency_failures (0|1), nd, dep_id*nd, nf, (field, value)*nf
-- Returns the status the job got: queued, deferred or scheduled.
local id, q, mode = ARGV[2], ARGV[3], ARGV[4]
local at, now_text = tonumber(ARGV[5]), ARGV[6]
local ttl = nil
if ARGV[7] ~= '' then
  ttl = int_in(ARGV[7], -1, MAX_TTL)
  if not ttl then return redis.error_reply('ERR job ' .. id .. ': ttl ' .. string.sub(ARGV[7], 1, 40) .. ' is not an integer in -1..' .. MAX_TTL) end
end
local allow = ARGV[8] == '1'
local nd = tonumber(ARGV[9])
local deps = {}
for i = 1, nd do deps[i] = ARGV[9 + i] end
local fbase = 10 + nd
local nf = tonumber(ARGV[fbase])
local jk = K.job(id)
local existing = redis.call('HGET', jk, 'status')
if existing == 'queued' or existing == 'started' or existing == 'deferred' or existing == 'scheduled' then
  return redis.error_reply('ERR job ' .. id .. ' already exists with status ' .. existing)
end
if existing then redis.call('DEL', jk) end
redis.call('SADD', K.queues(), K.queue(q))
if nf > 0 then
  redis.call('HSET', jk, unpack(ARGV, fbase + 1, fbase + 2 * nf))
end
local unmet = false
for _, dep in ipairs(deps) do
  if not dependency_met(redis.call('HGET', K.job(dep), 'status'), allow) then unmet = true end
end
local status
if unmet then
  status = 'deferred'
  redis.call('HSET', jk, 'status', 'deferred')
  redis.call('ZADD', K.deferred(q), math.floor(server_now()), id)
  for _, dep in ipairs(deps) do
    redis.call('SADD', K.dependents(dep), id)
    redis.call('SADD', K.dependencies(id), dep)
  end
elseif mode == 'schedule' then
  status = 'scheduled'
  redis.call('HSET', jk, 'status', 'scheduled')
  redis.call('ZADD', K.scheduled(q), at, id)
else
  status = 'queued'
  push_queued(id, q, now_text, mode == 'front')
end
if ttl and ttl > 0 then
  redis.call('EXPIRE', jk, ttl)
  redis.call('EXPIRE', K.dependents(id), ttl)
  redis.call('EXPIRE', K.dependencies(id), ttl)
end
return status
