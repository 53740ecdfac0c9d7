-- Fires one periodic job (`[[cron]]`) exactly once per tick, across every process and
-- host (common/src/scripts/cron.rs is its typed boundary): only while `token` holds the
-- cron lock, and only if the entry's stored state still names `expected_next` as its next
-- tick (compare and set); then stores the entry's new state and enqueues the job with the
-- prelude's `enqueue_from`.
-- ARGV: prefix, token, name, expected_next ('' = none stored yet), new_state_json,
--       enqueue arguments (as enqueue.lua's ARGV[2..])
-- Returns the job's status, or 'not-leader' / 'stale'.
local token, name, expected, state = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('GET', K.cron_lock()) ~= token then return 'not-leader' end
local stored = redis.call('HGET', K.cron(), name)
local next_stored = ''
if stored then
  local ok, v = pcall(cjson.decode, stored)
  if ok and type(v) == 'table' and v.next then next_stored = string.format('%d', v.next) end
end
if next_stored ~= expected then return 'stale' end
redis.call('HSET', K.cron(), name, state)
return enqueue_from(ARGV, 6)
