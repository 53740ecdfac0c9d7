-- Empty a queue (RQ's Queue.empty()): delete every waiting job and the list.
-- ARGV: prefix, queue. Returns the number of jobs removed.
local qk = k_queue(ARGV[2])
local ids = redis.call('LRANGE', qk, 0, -1)
for _, id in ipairs(ids) do
  redis.call('DEL', k_job(id), k_dependents(id), k_dependencies(id))
end
redis.call('DEL', qk)
return #ids
