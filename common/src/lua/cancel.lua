-- Cancel a job that has not started (RQ's job.cancel()): status canceled, out of its
-- queue or waiting registry, into rq:canceled:<origin>.
-- ARGV: prefix, now_secs, id
-- Returns the previous status, or an error.
local now_secs, id = tonumber(ARGV[2]), ARGV[3]
local jk = k_job(id)
local f = redis.call('HMGET', jk, 'status', 'origin')
local st, origin = f[1], f[2]
if not st then return redis.error_reply('ERR no such job: ' .. id) end
if st == 'started' then return redis.error_reply('ERR job ' .. id .. ' is running; use `runq stop-job ' .. id .. '`') end
if st == 'canceled' then return redis.error_reply('ERR job ' .. id .. ' is already canceled') end
if st == 'finished' or st == 'failed' or st == 'stopped' then
  return redis.error_reply('ERR job ' .. id .. ' already ended (' .. st .. ')')
end
origin = origin or 'default'
redis.call('LREM', k_queue(origin), 1, id)
redis.call('ZREM', P .. ':deferred:' .. origin, id)
redis.call('ZREM', P .. ':scheduled:' .. origin, id)
redis.call('HSET', jk, 'status', 'canceled')
redis.call('ZADD', P .. ':canceled:' .. origin, now_secs, id)
return st
