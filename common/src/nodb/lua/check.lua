-- Fencing check: is the lock still held with this token?
-- KEYS[1] lock key; ARGV[1] token. Returns 'ok', 'gone' or 'held:<owner>'.
local raw = redis.call('GET', KEYS[1])
if not raw then return 'gone' end
local token, owner = stored_token(raw)
if token == ARGV[1] then return 'ok' end
return 'held:' .. tostring(owner or token)
