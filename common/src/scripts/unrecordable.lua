-- A job whose own keys refuse a script's writes (a key of the wrong type, left there by
-- hand or by hostile input, such as a string at `rq:results:<id>`). The scripts that
-- include this file (cycle, heartbeat, maintenance, scheduler) handle each job under
-- `pcall`, and each dependent released or rate-limit waiter promoted for it so too
-- (prelude's `on_damaged_job`), so such a job costs only itself: the call's other jobs
-- are recorded as usual, and this job is failed as far as its keys allow (every write
-- on its own), with a reason that names the key. Without this, Redis aborts the whole script at the first refused
-- write, after the writes before it (Redis does not roll a script back).

-- The text of an error caught by `pcall` (Redis 7 gives a string, some versions a table).
local function error_text(e)
  if type(e) == 'table' then return tostring(e.err or e) end
  return tostring(e)
end

-- Errors that say the server cannot take writes now (out of memory, a read-only
-- replica, a failover under way ...): not the job's fault. They are raised again, so the
-- round fails as a whole and the worker repeats it (`again`) once Redis takes writes.
local TRANSIENT = {'OOM', 'READONLY', 'NOREPLICAS', 'MASTERDOWN', 'MISCONF', 'LOADING',
  'BUSY', 'CLUSTERDOWN', 'TRYAGAIN', 'NOSCRIPT'}
local function raise_if_transient(err)
  local text = error_text(err)
  for _, prefix in ipairs(TRANSIENT) do
    if string.sub(text, 1, #prefix) == prefix then error(err, 0) end
  end
end

-- The keys of job `id` (queue `origin`) its claim and completion write, with the type
-- each must have.
local function job_keys(id, origin)
  return {
    {K.job(id), 'hash'}, {K.results(id), 'stream'}, {K.executions(id), 'zset'},
    {K.dependents(id), 'set'}, {K.dependencies(id), 'set'},
    {K.started(origin), 'zset'}, {K.finished(origin), 'zset'}, {K.failed(origin), 'zset'},
    {K.queue(origin), 'list'}, {K.scheduled(origin), 'zset'}, {K.deferred(origin), 'zset'},
  }
end

-- Why a job's writes were refused: the first of its keys of the wrong type, or else the
-- error itself.
local function unrecordable_reason(id, origin, err)
  for _, k in ipairs(job_keys(id, origin)) do
    local t = redis.call('TYPE', k[1])
    if type(t) == 'table' then t = t.ok end
    if t ~= 'none' and t ~= k[2] then
      return 'the key ' .. k[1] .. ' holds a ' .. tostring(t) .. ', not a ' .. k[2]
    end
  end
  return error_text(err)
end

-- RQ's form of a failure text in a result entry (`exc_string`): base64 of zlib data.
-- Redis's Lua has no deflate, so the text goes into stored (uncompressed) blocks, which
-- every inflater reads, followed by the Adler-32 that zlib checks.
local function zlib_stored(s)
  local parts, len, pos = {'\120\1'}, #s, 1
  repeat
    local n = math.min(65535, len - pos + 1)
    local final = 0
    if pos + n > len then final = 1 end
    parts[#parts + 1] = string.char(final, n % 256, math.floor(n / 256),
      (65535 - n) % 256, math.floor((65535 - n) / 256))
    parts[#parts + 1] = string.sub(s, pos, pos + n - 1)
    pos = pos + n
  until pos > len
  local a, b = 1, 0
  for i = 1, len do
    a = (a + string.byte(s, i)) % 65521
    b = (b + a) % 65521
  end
  parts[#parts + 1] = string.char(math.floor(b / 256), b % 256, math.floor(a / 256), a % 256)
  return table.concat(parts)
end

local B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
local function b64_char(n) return string.sub(B64, n + 1, n + 1) end
local function base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = string.byte(s, i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local quad = b64_char(math.floor(n / 262144)) .. b64_char(math.floor(n / 4096) % 64)
    if b then quad = quad .. b64_char(math.floor(n / 64) % 64) else quad = quad .. '=' end
    if c then quad = quad .. b64_char(n % 64) else quad = quad .. '=' end
    out[#out + 1] = quad
  end
  return table.concat(out)
end

local function rq_exc_string(text) return base64(zlib_stored(text)) end

-- Fails job `id`, whose execution `ex` (slot `w`) a key refused to record: the execution
-- records undone, out of the started registry, status `failed` with the reason (as
-- `exc_info`, and as a FAILED result when the results stream takes one), into the failed
-- registry with its failure TTL. `owned`: this execution is known to own the job (it
-- claimed it in this call, or its completion got past the ownership test); otherwise
-- the job is failed only if it is still in the started registry under this execution.
-- `ex` and `w` are '' for a job no execution holds (maintenance, the scheduler).
-- Returns 'failed', or 'lost' when the job was not this execution's.
local function fail_unrecordable(id, origin, ex, w, why, owned, now_text, now, default_ft)
  if ex ~= '' then
    local m = member(id, ex)
    if w ~= '' then pcall(redis.call, 'SREM', K.worker_executions(w), m) end
    pcall(redis.call, 'DEL', K.execution(id, ex))
    pcall(redis.call, 'ZREM', K.executions(id), ex)
    local ok, removed = pcall(redis.call, 'ZREM', K.started(origin), m)
    if not owned and not (ok and removed == 1) then return 'lost' end
  elseif not owned then
    return 'lost'
  end
  local jk = K.job(id)
  local text = 'InvalidJob: runq could not record this job: ' .. why
  local got, own = pcall(redis.call, 'HGET', jk, 'failure_ttl')
  local ft = (got and int_in(own or '', -1, MAX_TTL)) or default_ft
  pcall(redis.call, 'HSET', jk, 'status', 'failed', 'ended_at', now_text, 'exc_info', text)
  local score = ft
  if ft > 0 then
    score = math.floor(now) + ft
    pcall(redis.call, 'EXPIRE', jk, num_text(ft))
  end
  if origin ~= '' then
    -- Out of wherever the refused transition had already put it.
    pcall(redis.call, 'ZREM', K.finished(origin), id)
    pcall(redis.call, 'ZREM', K.scheduled(origin), id)
    pcall(redis.call, 'ZREM', K.deferred(origin), id)
    pcall(redis.call, 'LREM', K.queue(origin), 0, id)
    pcall(redis.call, 'ZADD', K.failed(origin), num_text(score), id)
  end
  local result = {'type', '2', 'worker_name', w, 'exc_string', rq_exc_string(text)}
  if ex ~= '' then
    result[#result + 1] = 'execution_id'
    result[#result + 1] = ex
  end
  pcall(redis.call, 'XADD', K.results(id), 'MAXLEN', '~', '10', '*', unpack(result))
  return 'failed'
end

-- What every error caught for job `id` gets: raised again when it is transient;
-- otherwise the job is failed by fail_unrecordable (`ex`, `w`, `owned`: see there) with
-- the reason, after `context` when one is given. Returns what fail_unrecordable returned
-- and the reason.
local function fail_refused(err, context, id, origin, ex, w, owned, now_text, now, default_ft)
  raise_if_transient(err)
  local why = unrecordable_reason(id, origin, err)
  if context then why = context .. ': ' .. why end
  return fail_unrecordable(id, origin, ex, w, why, owned, now_text, now, default_ft), why
end

-- Runs fn(...) for one job under pcall. On an error that is the job's, fails the job
-- (fail_refused), appends {id, reason} to `damaged` and returns nil; otherwise returns
-- fn's result.
local function for_one_job(damaged, id, origin, ex, w, now_text, now, default_ft, fn, ...)
  local ok, r = pcall(fn, ...)
  if ok then return r end
  local _, why = fail_refused(r, nil, id, origin, ex, w, true, now_text, now, default_ft)
  damaged[#damaged + 1] = {id, why}
  return nil
end

-- The failure TTL for a job failed by on_damaged_job when it has none of its own: the
-- including script sets it to its default (RQ's, a year, until then).
local other_failure_ttl = 31536000

-- The jobs failed by on_damaged_job in this call, {id, reason} each: the script adds
-- them to what it reports.
local damaged_others = {}

on_damaged_job = function(id, context, err, now, now_text)
  local got, origin = pcall(redis.call, 'HGET', K.job(id), 'origin')
  if not got or not origin then origin = '' end
  local _, why = fail_refused(err, context, id, origin, '', '', true, now_text, now, other_failure_ttl)
  damaged_others[#damaged_others + 1] = {id, why}
end
