-- Release scheduler locks this scheduler still owns (compare token, then delete), and
-- drop its scheduler record.
-- ARGV: prefix, token, record_key, queue*
-- Returns how many locks were released.
local token, released = ARGV[2], 0
for i = 4, #ARGV do
  local lock = K.scheduler_lock(ARGV[i])
  if redis.call('GET', lock) == token then
    redis.call('DEL', lock)
    released = released + 1
  end
end
redis.call('DEL', ARGV[3])
return released
