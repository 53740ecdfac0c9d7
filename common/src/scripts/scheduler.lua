-- One scheduler tick for the queues whose lock this scheduler owns (common/src/scripts/
-- scheduler.rs is its typed boundary): renews each lock (only if it still holds our
-- token) and moves every job due on Redis's clock to its queue (a rate-limited job
-- through its limiter, as RQ's scheduler admits it).
-- ARGV: prefix, token, lock_ttl, now_text, nq, queue*nq
-- A due job whose own key refuses a write (a key of the wrong type) is failed alone as
-- far as its keys allow (unrecordable.lua); the others move as usual.
-- ARGV[6 + nq]: the failure TTL for such a job.
-- Returns {moved, {lost_queue...}, {{id, reason}...}}: how many jobs moved, the queues
-- whose lock is no longer ours (those are skipped), and the jobs failed that way.
local token, ttl, now_text = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local now = server_now()
local nq = tonumber(ARGV[5])
local default_ft = tonumber(ARGV[6 + nq])
other_failure_ttl = default_ft
local moved = 0
local lost, damaged = {}, {}

-- Moves due job `id` of queue `q` onto its queue: whether it still existed.
local function move_due(id, q)
  local f = redis.call('HMGET', K.job(id), 'status', 'origin', 'enqueue_at_front')
  if not f[1] then return false end
  enqueue_job(id, f[2] or q, now, now_text, f[3] == '1')
  return true
end

for i = 1, nq do
  local q = ARGV[5 + i]
  local lock = K.scheduler_lock(q)
  if redis.call('GET', lock) == token then
    redis.call('EXPIRE', lock, ttl)
    local skey = K.scheduled(q)
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', skey, 0, now, 'LIMIT', 0, 1000)) do
      redis.call('ZREM', skey, id)
      if for_one_job(damaged, id, q, '', '', now_text, now, default_ft, move_due, id, q) then
        moved = moved + 1
      end
    end
  else
    lost[#lost + 1] = q
  end
end
for _, d in ipairs(damaged_others) do damaged[#damaged + 1] = d end
return {moved, lost, damaged}
