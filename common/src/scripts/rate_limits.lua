-- The rate-limit sweep of a maintenance pass (RQ 3.0's RateLimitRegistry.cleanup over
-- rq:rl-keys; common/src/scripts/rate_limits.rs is its typed boundary): a slot held by a
-- job that is neither queued nor running (and has no live execution) is given back,
-- waiters are promoted into free slots, and a key with nobody holding or waiting is
-- forgotten. So a crash at any point leaves no slot held forever. At most 100 keys and
-- 1000 holders per key per call.
-- ARGV: prefix, now_text
-- Returns {slots_freed, promoted, keys_dropped}.
local now_text = ARGV[2]
local now = server_now()
local freed, promoted, dropped = 0, 0, 0
for _, k in ipairs(redis.call('SRANDMEMBER', K.rl_keys(), 100)) do
  for _, id in ipairs(redis.call('ZRANGE', K.rl_allowed(k), 0, 999)) do
    local st = redis.call('HGET', K.job(id), 'status')
    if st ~= 'queued' and st ~= 'started'
        and redis.call('ZCOUNT', K.executions(id), '(' .. now, '+inf') == 0 then
      redis.call('ZREM', K.rl_allowed(k), id)
      freed = freed + 1
    end
  end
  promoted = promoted + rl_promote(k, now, now_text)
  if redis.call('ZCARD', K.rl_allowed(k)) == 0 and redis.call('ZCARD', K.rl_waiting(k)) == 0 then
    redis.call('SREM', K.rl_keys(), k)
    redis.call('DEL', K.rl_allowed(k), K.rl_waiting(k), K.rl(k))
    dropped = dropped + 1
  end
end
return {freed, promoted, dropped}
