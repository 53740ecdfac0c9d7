-- One scheduler tick for the queues whose lock this scheduler owns (common/src/scripts/
-- scheduler.rs is its typed boundary): renews each lock (only if it still holds our
-- token) and moves every job due on Redis's clock to its queue (a rate-limited job
-- through its limiter, as RQ's scheduler admits it).
-- ARGV: prefix, token, lock_ttl, now_text, nq, queue*nq
-- Returns {moved, lost_queue...}: how many jobs moved, then the queues whose lock is no
-- longer ours (those are skipped).
local token, ttl, now_text = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local now = server_now()
local nq = tonumber(ARGV[5])
local moved = 0
local out = {0}
for i = 1, nq do
  local q = ARGV[5 + i]
  local lock = K.scheduler_lock(q)
  if redis.call('GET', lock) == token then
    redis.call('EXPIRE', lock, ttl)
    local skey = K.scheduled(q)
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', skey, 0, now, 'LIMIT', 0, 1000)) do
      redis.call('ZREM', skey, id)
      local f = redis.call('HMGET', K.job(id), 'status', 'origin', 'enqueue_at_front')
      if f[1] then
        enqueue_job(id, f[2] or q, now, now_text, f[3] == '1')
        moved = moved + 1
      end
    end
  else
    out[#out + 1] = q
  end
end
out[1] = moved
return out
