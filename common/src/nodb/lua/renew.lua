-- Batched compare-token-and-extend for every lock a process holds.
-- KEYS[i] lock keys; ARGV per key, three at a time: token, new payload (expires_at
-- rewritten), ttl seconds. Returns per key 'ok', 'gone' or 'held:<owner>'.
local out = {}
for i, key in ipairs(KEYS) do
  local b = (i - 1) * 3
  local raw = redis.call('GET', key)
  if not raw then
    out[i] = 'gone'
  else
    local token, owner = stored_token(raw)
    if token == ARGV[b + 1] then
      redis.call('SET', key, ARGV[b + 2], 'EX', ARGV[b + 3])
      out[i] = 'ok'
    else
      out[i] = 'held:' .. tostring(owner or token)
    end
  end
end
return out
