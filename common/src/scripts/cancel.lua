-- Cancel a job that has not started (RQ's job.cancel()): status canceled, out of its
-- queue or waiting registry, into rq:canceled:<origin> (scored on Redis's clock).
-- ARGV: prefix, id
-- Returns the previous status, or an error.
local id = ARGV[2]
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
redis.call('ZADD', K.canceled(origin), math.floor(server_now()), id)
return st
