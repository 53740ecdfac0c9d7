-- One scheduler tick for the queues whose lock this scheduler owns: renews each lock
-- (only if it still holds our token) and moves every due job to its queue.
-- ARGV: prefix, token, lock_ttl, now_text, now_secs, nq, queue*nq
-- Returns {moved, lost_queue...}: how many jobs moved, then the queues whose lock is no
-- longer ours (those are skipped).
local token, ttl, now, now_secs = ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local nq = tonumber(ARGV[6])
local moved = 0
local out = {0}
for i = 1, nq do
  local q = ARGV[6 + i]
  local lock = P .. ':scheduler-lock:' .. q
  if redis.call('GET', lock) == token then
    redis.call('EXPIRE', lock, ttl)
    local skey = P .. ':scheduled:' .. q
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', skey, 0, now_secs, 'LIMIT', 0, 1000)) do
      redis.call('ZREM', skey, id)
      local f = redis.call('HMGET', k_job(id), 'status', 'origin', 'enqueue_at_front')
      if f[1] then
        push_queued(id, f[2] or q, now, f[3] == '1')
        moved = moved + 1
      end
    end
  else
    out[#out + 1] = q
  end
end
out[1] = moved
return out
