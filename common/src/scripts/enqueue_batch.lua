-- Save and enqueue many jobs in one call (common/src/scripts/enqueue.rs is its typed
-- boundary): each job as enqueue.lua does it (the prelude's `enqueue_from`), one after
-- another, so a batch costs Redis one script call instead of one per job; the queues'
-- registrations and pushes are written once per queue at the end (`flush_pushes`), in
-- the order the jobs came.
-- ARGV: prefix, n, then n jobs, each: id, queue, mode, schedule_at, now_text, ttl,
--       allow_dependency_failures, nd, dep_id*nd, nf, (field, value)*nf
-- Returns one entry per job: the status it got, or `error <reason>`. A job whose
-- enqueue fails (a refused TTL, an id already queued, a key of the wrong type) is
-- reported and the others still go ahead, as with one call per job.
local out = {}
local pushes = new_pushes()
local i = 3
for n = 1, tonumber(ARGV[2]) do
  local nd = tonumber(ARGV[i + 7])
  local nf = tonumber(ARGV[i + 8 + nd])
  local ok, r = pcall(enqueue_from, ARGV, i, pushes)
  if not ok then
    if type(r) == 'table' then r = r.err end
    out[n] = 'error ' .. tostring(r)
  elseif type(r) == 'table' then
    out[n] = 'error ' .. tostring(r.err)
  else
    out[n] = r
  end
  i = i + 9 + nd + 2 * nf
end
flush_pushes(pushes)
return out
