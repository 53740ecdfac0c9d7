-- One round trip for a process's slots (common/src/scripts/cycle.rs is its typed
-- boundary): first record the executions that ended (complete.lua's
-- `complete_execution`), then claim jobs for the slots that want one (claim.lua's
-- `claim_jobs`), unless the queues are suspended. A slot that completed and got no new
-- job goes idle; one that got a job is busy with it.
-- ARGV: prefix, now_text, now_epoch, lease_secs, default_result_ttl, default_failure_ttl,
--       bad_id_exc, bad_origin_exc, again (1: this repeats a round whose reply was lost),
--       nc, (completion: see complete.lua)*nc,
--       nq, (queue, capacity)*nq, ns, (worker_name, execution_id)*ns
-- A completion a key refuses to record fails that job alone (unrecordable.lua).
-- Returns {{recorded...}, 'suspended' | {claim entry...}, {{id, reason}...}}: the last
-- part lists the jobs failed that way (completions, and dependents whose release a key
-- refused).
local now_text, now_epoch = ARGV[2], ARGV[3]
local lease, default_rt, default_ft = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local now = server_now()
other_failure_ttl = default_ft
local at = 10
local nc = tonumber(ARGV[at])
local recorded, completed_by, unrecorded = {}, {}, {}
local i = at + 1
for n = 1, nc do
  local progress = {owned = false}
  local ok, what = pcall(complete_execution, i, now, now_text, now_epoch, default_rt, default_ft, progress)
  local id, w, origin = ARGV[i], ARGV[i + 2], ARGV[i + 3]
  if not ok then
    local why
    what, why = fail_refused(what, nil, id, origin, ARGV[i + 1], w, progress.owned, now_text, now, default_ft)
    unrecorded[#unrecorded + 1] = {id, why}
  end
  recorded[n] = what
  completed_by[n] = w
  i = next_completion(i)
end
at = i
local q = {queues = {}, caps = {}, slots = {}, lease = lease, default_ft = default_ft,
  bad_id_exc = ARGV[7], bad_origin_exc = ARGV[8], again = ARGV[9] == '1'}
local nq = tonumber(ARGV[at])
for i = 1, nq do
  q.queues[i] = ARGV[at + 2 * i - 1]
  q.caps[i] = tonumber(ARGV[at + 2 * i])
end
at = at + 2 * nq + 1
local ns = tonumber(ARGV[at])
for i = 1, ns do q.slots[i] = {ARGV[at + 2 * i - 1], ARGV[at + 2 * i]} end

local claimed, busy = 'suspended', {}
if ns > 0 and redis.call('EXISTS', K.suspended()) == 0 then
  claimed, busy = claim_jobs(q, now, now_text, now_epoch)
elseif ns == 0 then
  claimed = {}
end
-- A slot that got no new job shows idle (under pcall: a slot key of the wrong type is the
-- slot's damage, not its jobs', and the heartbeat names it).
local function show_idle(w)
  redis.call('HSET', K.worker(w), 'state', IDLE)
  redis.call('HDEL', K.worker(w), 'current_job', 'current_job_working_time')
end
for _, w in ipairs(completed_by) do
  if not busy[w] then pcall(show_idle, w) end
end
for _, d in ipairs(damaged_others) do unrecorded[#unrecorded + 1] = d end
return {recorded, claimed, unrecorded}
