-- Claiming jobs for slots (the claim half of cycle.lua; its typed boundary is
-- common/src/scripts/cycle.rs): pops ids by queue priority, within each queue's
-- capacity, and records each as started for one slot. Entries that cannot run (no job
-- hash, a key of the wrong type, an id or origin that is not text) are failed or
-- dropped here and reported, so one bad entry never touches another job. Each popped id
-- is recorded (started, failed or dropped) before the script returns: no moment exists
-- at which a crash could lose it. The execution keys get their TTLs from the heartbeat
-- (and are removed by completion or recovery), so the claim writes no EXPIRE.
-- `q` = {queues = {name...}, caps = {capacity or -1...}, slots = {{worker, exec_id}...},
--        lease, default_ft, bad_id_exc, bad_origin_exc, again}
-- `again` marks a repeat of a round whose reply was lost: a slot whose execution id the
-- lost round already recorded gets that job back instead of a new one.
-- Returns the entries, each one of
--   {'job', slot, id, origin, queue, hash_flat}   claimed and recorded as started
--   {'refused', queue, id, reason}                 popped but not runnable
--   {'broken', queue, error}                       the queue key is not a list: skipped
-- and the set of workers that got a job.

-- The `origin` and `ttl` fields of an HGETALL reply, in one pass.
local function origin_and_ttl(h)
  local origin, ttl
  for i = 1, #h, 2 do
    local f = h[i]
    if f == 'origin' then origin = h[i + 1] elseif f == 'ttl' then ttl = h[i + 1] end
  end
  return origin, ttl
end

local function claim_jobs(q, now, now_text, now_epoch)
  local out, busy = {}, {}
  local deadline = num_text(now + q.lease)
  local executions_deadline = num_text(now + q.lease + 60)
  local caps = q.caps

  -- Pops the next id by priority; a queue key of the wrong type is reported and skipped.
  -- One LPOP takes as many ids as slots are left (within the queue's capacity): every
  -- id taken either fills a slot or is refused, so none is left over when the round ends.
  local popped, taken = {}, 0
  local popped_from
  local function pop(wanted)
    if taken < #popped then
      taken = taken + 1
      return popped[taken], popped_from
    end
    for i = 1, #q.queues do
      if caps[i] ~= 0 then
        local n = wanted
        if caps[i] > 0 and caps[i] < n then n = caps[i] end
        local ids = redis.pcall('LPOP', K.queue(q.queues[i]), n)
        if type(ids) == 'table' and ids.err then
          out[#out + 1] = {'broken', q.queues[i], ids.err}
          caps[i] = 0
        elseif ids then
          popped, taken, popped_from = ids, 1, i
          return ids[1], i
        end
      end
    end
    return nil, nil
  end

  -- Fails a popped job that cannot run into `queue`'s registry (as far as its keys
  -- allow, when one of them refuses the failure's writes).
  local function refuse(id, queue, exc, reason)
    local ok, err = pcall(fail_job, id, queue, 'failed', now_text, now, q.default_ft, {'worker_name', '', 'exc_string', exc})
    if not ok then fail_refused(err, nil, id, queue, '', '', true, now_text, now, q.default_ft) end
    out[#out + 1] = {'refused', queue, id, reason}
  end

  -- Records job `id` as started by slot worker `w`, execution `ex`: the job's own keys.
  local function start(jk, id, ttl, origin, w, ex)
    redis.call('HSET', jk, 'status', 'started', 'started_at', now_text, 'last_heartbeat', now_text, 'worker_name', w)
    if ttl and ttl ~= '' then redis.call('PERSIST', jk) end
    redis.call('ZADD', K.started(origin), deadline, member(id, ex))
    redis.call('HSET', K.execution(id, ex), 'id', ex, 'job_id', id, 'created_at', now_epoch, 'last_heartbeat', now_epoch, 'worker_name', w)
    redis.call('ZADD', K.executions(id), executions_deadline, ex)
  end

  -- The slot's own keys for its new job (run under pcall: a slot key of the wrong type
  -- is the slot's damage, not the job's, and the heartbeat names it).
  local function show_busy(id, w, ex)
    redis.call('HSET', K.worker(w), 'state', BUSY, 'current_job', id, 'current_job_working_time', '0')
    redis.call('SADD', K.worker_executions(w), member(id, ex))
  end

  -- The job a lost round already claimed for `slot`, if any.
  local function claimed_before(slot)
    local w, ex = q.slots[slot][1], q.slots[slot][2]
    local ok, members = pcall(redis.call, 'SMEMBERS', K.worker_executions(w))
    if not ok then return nil end
    for _, m in ipairs(members) do
      local id, mex = split_member(m)
      if mex == ex then
        local h = redis.call('HGETALL', K.job(id))
        local origin = origin_and_ttl(h) or ''
        busy[w] = true
        return {'job', slot, id, origin, origin, h}
      end
    end
    return nil
  end

  local slot = 1
  if q.again then
    local fresh = {}
    for s = 1, #q.slots do
      local before = claimed_before(s)
      if before then out[#out + 1] = before else fresh[#fresh + 1] = s end
    end
    if #fresh < #q.slots then return out, busy end
  end
  while slot <= #q.slots do
    local id, qi = pop(#q.slots - slot + 1)
    if not id then break end
    local queue = q.queues[qi]
    local jk = K.job(id)
    local h = redis.pcall('HGETALL', jk)
    if type(h) == 'table' and h.err then
      out[#out + 1] = {'refused', queue, id, 'its job key is not a hash'}
    elseif #h == 0 then
      out[#out + 1] = {'refused', queue, id, 'it has no job hash'}
    elseif not is_text(id, 512) then
      refuse(id, queue, q.bad_id_exc, 'its id is not UTF-8 text')
    else
      local origin, ttl = origin_and_ttl(h)
      if not origin or origin == '' then origin = queue end
      if not is_text(origin, 512) then
        refuse(id, queue, q.bad_origin_exc, 'its origin is not UTF-8 text')
      else
        local w, ex = q.slots[slot][1], q.slots[slot][2]
        local started, err = pcall(start, jk, id, ttl, origin, w, ex)
        if started then
          pcall(show_busy, id, w, ex)
          if caps[qi] > 0 then caps[qi] = caps[qi] - 1 end
          busy[w] = true
          out[#out + 1] = {'job', slot, id, origin, queue, h}
          slot = slot + 1
        else
          local _, why = fail_refused(err, nil, id, origin, ex, w, true, now_text, now, q.default_ft)
          out[#out + 1] = {'refused', queue, id, why}
        end
      end
    end
  end
  return out, busy
end
