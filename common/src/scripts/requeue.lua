-- Requeue failed jobs (RQ's FailedJobRegistry.requeue): each must be in the failed
-- registry of its origin; it goes back onto its queue with status queued (a rate-limited
-- job through its limiter).
-- ARGV: prefix, now_text, id*
-- Returns one entry per id: 'queued:<origin>' or an error text.
local now_text = ARGV[2]
local now = server_now()
local out = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local jk = K.job(id)
  local origin = redis.call('HGET', jk, 'origin')
  if not origin then
    out[#out + 1] = 'no such job'
  elseif redis.call('ZREM', K.failed(origin), id) == 0 then
    out[#out + 1] = 'not in the failed registry of queue ' .. origin .. ' (status ' .. (redis.call('HGET', jk, 'status') or '?') .. ')'
  else
    redis.call('HSET', jk, 'started_at', '', 'ended_at', '')
    enqueue_job(id, origin, now, now_text, false)
    out[#out + 1] = 'queued:' .. origin
  end
end
return out
