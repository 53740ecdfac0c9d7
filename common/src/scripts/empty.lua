-- Empty a queue (RQ's Queue.empty()): delete every waiting job and the list.
-- ARGV: prefix, queue. Returns the number of jobs removed.
local qk = K.queue(ARGV[2])
local ids = redis.call('LRANGE', qk, 0, -1)
for _, id in ipairs(ids) do
  redis.call('DEL', K.job(id), K.dependents(id), K.dependencies(id))
end
redis.call('DEL', qk)
return #ids
