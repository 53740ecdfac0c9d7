-- Take a NoDb lock: SET NX EX with the payload, then raise the legacy flag.
-- KEYS[1] lock key, KEYS[2] run hash; ARGV[1] payload, ARGV[2] ttl, ARGV[3] flag field.
-- Returns 'ok', or the current holder's stored payload ('' if it vanished meanwhile).
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  redis.call('HSET', KEYS[2], ARGV[3], 'true')
  return 'ok'
end
return redis.call('GET', KEYS[1]) or ''
