-- Compare-token-and-delete, then lower the legacy flag.
-- KEYS[1] lock key, KEYS[2] run hash; ARGV[1] token, ARGV[2] flag field.
-- Returns 'released', 'absent' (expired or cleared; flag lowered) or 'held:<owner>'.
local raw = redis.call('GET', KEYS[1])
if not raw then
  redis.call('HSET', KEYS[2], ARGV[2], 'false')
  return 'absent'
end
local token, owner = stored_token(raw)
if token ~= ARGV[1] then
  return 'held:' .. tostring(owner or token)
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[2], ARGV[2], 'false')
return 'released'
