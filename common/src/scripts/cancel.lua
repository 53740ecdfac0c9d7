-- Cancel a job that has not started (RQ's job.cancel()): status canceled, out of its
-- queue or waiting registry, into rq:canceled:<origin> (scored on Redis's clock). A
-- rate-limited job leaves its waiting line, and gives back the slot it held (promoting
-- the next waiter), as RQ's RateLimitRegistry.cancel does.
-- ARGV: prefix, id, now_text
-- Returns the previous status, or an error.
local id, now_text = ARGV[2], ARGV[3]
local jk = K.job(id)
local f = redis.call('HMGET', jk, 'status', 'origin')
local st, origin = f[1], f[2]
if not st then return redis.error_reply('ERR no such job: ' .. id) end
if st == 'started' then return redis.error_reply('ERR job ' .. id .. ' is running; use `runq stop-job ' .. id .. '`') end
if st == 'canceled' then return redis.error_reply('ERR job ' .. id .. ' is already canceled') end
if st == 'finished' or st == 'failed' or st == 'stopped' then
  return redis.error_reply('ERR job ' .. id .. ' already ended (' .. st .. ')')
end
origin = origin or 'default'
redis.call('LREM', K.queue(origin), 1, id)
redis.call('ZREM', K.deferred(origin), id)
redis.call('ZREM', K.scheduled(origin), id)
redis.call('HSET', jk, 'status', 'canceled')
local now = server_now()
redis.call('ZADD', K.canceled(origin), math.floor(now), id)
local k = rate_limit_of(id)
if k then
  redis.call('ZREM', K.rl_waiting(k), id)
  if redis.call('ZREM', K.rl_allowed(k), id) == 1 then rl_promote(k, now, now_text) end
end
return st
