-- An owner-token lock (the cron leader's): renew it, or release it, only while it still
-- holds `token`.
-- ARGV: prefix, key, token, ttl_secs (0 = release)
-- Returns 1 when the lock was ours (renewed or released), 0 otherwise.
local key, token, ttl = ARGV[2], ARGV[3], tonumber(ARGV[4])
if redis.call('GET', key) ~= token then return 0 end
if ttl > 0 then
  redis.call('EXPIRE', key, ttl)
else
  redis.call('DEL', key)
end
return 1
