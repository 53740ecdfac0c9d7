-- Shared helpers prepended to every runq script. ARGV[1] is always the RQ key prefix.
-- Every key a script touches is built by K below, mirroring common/src/keys.rs (the test
-- tests/scripts.rs checks both give the same names). Standalone Redis, as RQ itself.
local P = ARGV[1]
local K = {}
function K.job(id) return P .. ':job:' .. id end
function K.queue(q) return P .. ':queue:' .. q end
function K.queues() return P .. ':queues' end
function K.intermediate(q) return P .. ':queue:' .. q .. ':intermediate' end
function K.first_seen(q, id) return P .. ':queue:' .. q .. ':intermediate:first_seen:' .. id end
function K.dependents(id) return P .. ':job:' .. id .. ':dependents' end
function K.dependencies(id) return P .. ':job::' .. id .. ':dependencies' end
function K.results(id) return P .. ':results:' .. id end
function K.started(q) return P .. ':wip:' .. q end
function K.finished(q) return P .. ':finished:' .. q end
function K.failed(q) return P .. ':failed:' .. q end
function K.deferred(q) return P .. ':deferred:' .. q end
function K.scheduled(q) return P .. ':scheduled:' .. q end
function K.canceled(q) return P .. ':canceled:' .. q end
function K.workers() return P .. ':workers' end
function K.queue_workers(q) return P .. ':workers:' .. q end
function K.worker(w) return P .. ':worker:' .. w end
function K.worker_executions(w) return P .. ':worker:' .. w .. ':executions' end
function K.execution(id, ex) return P .. ':execution:' .. id .. ':' .. ex end
function K.executions(id) return P .. ':executions:' .. id end
function K.suspended() return P .. ':suspended' end
function K.scheduler_lock(q) return P .. ':scheduler-lock:' .. q end
function K.clean_registries(q) return P .. ':clean_registries:' .. q end
function K.ready(q) return P .. ':ready:' .. q end
-- RQ 3.0's rate limits (RateLimit): per key k a config hash, the jobs holding a slot and
-- the jobs waiting for one, and the set of every key in use.
function K.rl(k) return P .. ':rl:' .. k end
function K.rl_allowed(k) return P .. ':rl:' .. k .. ':allowed' end
function K.rl_waiting(k) return P .. ':rl:' .. k .. ':rate_limited' end
function K.rl_keys() return P .. ':rl-keys' end
-- runq's own: the last time any runq process beat, and until when recovery waits after
-- a Redis stall (see maintenance.lua).
function K.clock() return P .. ':runq:clock' end
-- runq's own: periodic jobs' state (name → JSON with `next`), and their leader's lock.
function K.cron() return P .. ':runq:cron' end
function K.cron_lock() return P .. ':runq:cron-lock' end
function K.stall() return P .. ':runq:stall-until' end

-- A started-registry member is `<job id>:<execution id>`. Execution ids never contain a
-- colon, job ids may: split at the last one.
local function member(id, ex) return id .. ':' .. ex end
local function split_member(m)
  local at = string.find(m, ':[^:]*$')
  if not at then return m, nil end
  return string.sub(m, 1, at - 1), string.sub(m, at + 1)
end

-- A number as the text a command gets: what Redis itself makes of a Lua number (C's
-- `%.17g`), formatted once per script call. Redis formats every number argument of
-- every redis.call again, and a float's formatting is one of the larger costs of a job's
-- commands; a round's deadlines and TTLs are the same for all of its jobs.
local number_texts = {}
local function num_text(n)
  local t = number_texts[n]
  if not t then
    t = string.format('%.17g', n)
    number_texts[n] = t
  end
  return t
end

-- Redis's clock in float seconds: every deadline and registry score is taken from it,
-- so workers' clocks never decide when a job is abandoned or due.
local function server_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- Records that a runq process is alive at `now` (heartbeat, maintenance) and notices a
-- stall: when no runq process reached Redis for longer than `stall_gap` (Redis was paused
-- or unreachable for everyone), abandoned-job recovery waits one `lease` so live workers
-- can beat first, whichever script runs first after the stall.
local function observe_clock(now, lease, stall_gap)
  local last = tonumber(redis.call('GET', K.clock()) or '')
  redis.call('SET', K.clock(), now)
  if last and now - last > stall_gap then
    redis.call('SET', K.stall(), now + lease, 'EX', math.ceil(lease) + 1)
  end
end

-- The one integer rule, shared with Rust (runq_common::ints): an optional '-' then 1 to
-- 15 digits, nothing else (no spaces, exponents, 'inf', 'nan' or hex), so every value is
-- exact in Lua's doubles and in i64.
local function parse_int(s)
  if type(s) ~= 'string' or #s == 0 or #s > 16 then return nil end
  if not string.find(s, '^%-?%d+$') then return nil end
  local digits = #s
  if string.sub(s, 1, 1) == '-' then digits = digits - 1 end
  if digits > 15 then return nil end
  return tonumber(s)
end
local function int_in(s, lo, hi)
  local n = parse_int(s)
  if n and n >= lo and n <= hi then return n end
  return nil
end
-- Bounds shared with Rust (runq_common::ints): TTLs and intervals in seconds.
local MAX_TTL = 315360000
local MAX_RETRIES = 1000000
-- A TTL field of the job hash, or `default` when absent or not a valid TTL.
local function ttl_field(jk, field, default)
  return int_in(redis.call('HGET', jk, field) or '', -1, MAX_TTL) or default
end

-- Text runq hands to its Rust side: UTF-8, no control characters, at most `max` bytes.
local function is_text(s, max)
  local n = #s
  if n == 0 or n > max then return false end
  if not string.find(s, '[^\32-\126]') then return true end
  local i = 1
  while i <= n do
    local c = string.byte(s, i)
    local extra, lo, hi = 0, 128, 191
    if c < 32 or c == 127 then return false
    elseif c < 128 then extra = 0
    elseif c >= 194 and c <= 223 then extra = 1
    elseif c >= 224 and c <= 239 then
      extra = 2
      if c == 224 then lo = 160 elseif c == 237 then hi = 159 end
    elseif c >= 240 and c <= 244 then
      extra = 3
      if c == 240 then lo = 144 elseif c == 244 then hi = 143 end
    else return false end
    if i + extra > n then return false end
    for j = 1, extra do
      local d = string.byte(s, i + j)
      if j == 1 then
        if d < lo or d > hi then return false end
      elseif d < 128 or d > 191 then return false end
    end
    i = i + 1 + extra
  end
  return true
end

-- Worker states RQ readers know (runq_common::worker_state::WorkerState).
local IDLE, BUSY = 'idle', 'busy'

-- Put an existing job hash onto its queue with status `queued` (RQ 1.x/2.10 style,
-- readable by every RQ version).
local function push_queued(id, origin, now_text, at_front)
  redis.call('SADD', K.queues(), K.queue(origin))
  redis.call('HSET', K.job(id), 'status', 'queued', 'enqueued_at', now_text)
  if at_front then
    redis.call('LPUSH', K.queue(origin), id)
  else
    redis.call('RPUSH', K.queue(origin), id)
  end
end

-- A job's rate limit (RQ 3.0's RateLimit): its key and concurrency when it has both
-- (`rate_limit_key` non-empty, `rate_limit_concurrency` a positive integer), else nil.
local function rate_limit_of(id)
  local f = redis.call('HMGET', K.job(id), 'rate_limit_key', 'rate_limit_concurrency')
  local c = int_in(f[2] or '', 1, MAX_RETRIES)
  if f[1] and f[1] ~= '' and c then return f[1], c end
  return nil, nil
end

-- Set by unrecordable.lua in the scripts that include it: fails job `id`, one of whose
-- keys refused a write made for it during another job's transition (`context` says
-- which, for the reason: a dependent being released, a rate-limit waiter being
-- promoted), so that the transition and its other jobs are recorded as usual. Without
-- it, such a write fails the whole call.
local on_damaged_job = nil

-- Runs fn(...) for job `id` inside another job's transition. Returns true and fn's
-- result, or false once on_damaged_job has failed `id` because one of its keys refused
-- a write (only when the hook is set; otherwise the error goes up).
local function for_other_job(id, context, now, now_text, fn, ...)
  if not on_damaged_job then return true, fn(...) end
  local ok, r = pcall(fn, ...)
  if ok then return true, r end
  on_damaged_job(id, context, r, now, now_text)
  return false, nil
end

-- Promotes waiter `id` of rate limit `k` if it still waits: 1, else 0 (a stale entry).
local function rl_promote_one(k, id, now, now_text)
  local f = redis.call('HMGET', K.job(id), 'origin', 'status', 'enqueue_at_front')
  if not (f[1] and f[2] == 'rate_limited') then return 0 end
  redis.call('ZADD', K.rl_allowed(k), math.floor(now), id)
  push_queued(id, f[1], now_text, f[3] == '1')
  return 1
end

-- Fills every free slot of rate limit `k` from its waiting line, oldest first (RQ's
-- ACQUIRE_AND_ENQUEUE): a waiter is pushed onto its queue with status `queued`; stale
-- entries (no hash, no origin, no longer `rate_limited`) are dropped.
local function rl_promote(k, now, now_text)
  local concurrency = int_in(redis.call('HGET', K.rl(k), 'concurrency') or '', 0, MAX_RETRIES) or 0
  local promoted = 0
  while redis.call('ZCARD', K.rl_allowed(k)) < concurrency do
    local popped = redis.call('ZPOPMIN', K.rl_waiting(k))
    if #popped == 0 then break end
    local id = popped[1]
    local ok, n = for_other_job(id, 'as a waiter of rate limit ' .. k, now, now_text,
      rl_promote_one, k, id, now, now_text)
    if ok then
      promoted = promoted + n
    else
      pcall(redis.call, 'ZREM', K.rl_allowed(k), id)
    end
  end
  return promoted
end

-- Gives back the slot `id` held under `k` (if it held one) and promotes waiters.
local function rl_release(k, id, now, now_text)
  redis.call('ZREM', K.rl_allowed(k), id)
  rl_promote(k, now, now_text)
end

-- Admits a rate-limited job through its limiter (RQ's _enqueue_rate_limited_job): it
-- waits with status `rate_limited` (first in line when `first`), then promotion may push
-- it at once.
local function rl_admit(id, k, concurrency, now, now_text, at_front, first)
  redis.call('SADD', K.rl_keys(), k)
  redis.call('HSET', K.rl(k), 'concurrency', concurrency)
  redis.call('HSET', K.job(id), 'status', 'rate_limited')
  if at_front then redis.call('HSET', K.job(id), 'enqueue_at_front', '1') end
  local score = math.floor(now)
  if first then score = 0 end
  redis.call('ZADD', K.rl_waiting(k), score, id)
  rl_promote(k, now, now_text)
end

-- After a job's outcome is recorded: a rate-limited job that is no longer queued or
-- running (`status`) gives its slot back, which promotes the next waiter.
local function rl_settle(k, id, status, now, now_text)
  if k and status ~= 'queued' and status ~= 'started' then
    rl_release(k, id, now, now_text)
  end
end

-- Puts a waiting job (due, ready, requeued) onto its queue: through its limiter when it
-- has a rate limit, straight onto the queue otherwise. `interrupted` is for a job put
-- back after an interruption (cold shutdown, or an abandoned job under policy
-- `requeue`): a rate-limited one gives its slot back and waits first in line, so it is
-- not run above its limit.
local function enqueue_job(id, origin, now, now_text, at_front, interrupted)
  local k, c = rate_limit_of(id)
  if k then
    if interrupted then redis.call('ZREM', K.rl_allowed(k), id) end
    redis.call('SADD', K.queues(), K.queue(origin))
    rl_admit(id, k, c, now, now_text, at_front, interrupted or false)
  else
    push_queued(id, origin, now_text, at_front)
  end
end

-- Back to the front of its queue after an interruption (see enqueue_job).
local function requeue_front(id, origin, now, now_text)
  enqueue_job(id, origin, now, now_text, true, true)
end

-- Is a parent with status `ps` a met dependency? A parent that no longer exists is met (RQ).
local function dependency_met(ps, allow_failures)
  if not ps then return true end
  if ps == 'finished' then return true end
  -- RQ 3.0 (Job.dependencies_are_met): a stopped or canceled parent is never met.
  if allow_failures and ps == 'failed' then return true end
  return false
end

-- One dependent `dep` of a parent that just reached a final state: onto its queue when
-- it is deferred and all its dependencies are met (then out of the parent's set `dkey`),
-- out of the set when its hash is gone. Returns 1 while it still waits in the set, else 0.
local function release_dependent(dkey, dep, now, now_text)
  local f = redis.call('HMGET', K.job(dep), 'status', 'origin', 'allow_dependency_failures', 'enqueue_at_front')
  local st, origin = f[1], f[2]
  if not st then
    redis.call('SREM', dkey, dep)
    return 0
  end
  if st ~= 'deferred' or not origin then return 1 end
  local allow = f[3] == '1'
  for _, parent in ipairs(redis.call('SMEMBERS', K.dependencies(dep))) do
    if not dependency_met(redis.call('HGET', K.job(parent), 'status'), allow) then return 1 end
  end
  redis.call('ZREM', K.deferred(origin), dep)
  enqueue_job(dep, origin, now, now_text, f[4] == '1')
  redis.call('SREM', dkey, dep)
  return 0
end

-- Moves every deferred dependent of `parent_id` whose dependencies are all met onto its
-- queue (through its limiter when rate-limited), in the same atomic step as the parent's
-- own transition. Returns how many dependents are still waiting in the set.
local function release_dependents(parent_id, now, now_text)
  local dkey = K.dependents(parent_id)
  local left = 0
  for _, dep in ipairs(redis.call('SMEMBERS', dkey)) do
    local ok, waiting = for_other_job(dep, 'as a dependent of ' .. parent_id, now, now_text,
      release_dependent, dkey, dep, now, now_text)
    if ok then
      left = left + waiting
    else
      pcall(redis.call, 'SREM', dkey, dep)
    end
  end
  return left
end

-- Retries a failed job per `retries_left`/`retry_intervals` (RQ's get_retry_interval):
-- back onto its queue, or into the scheduled registry when an interval applies.
-- Returns 'retried', 'scheduled', or nil when no retries are left (or the fields are not
-- valid: a job is never retried on a value Rust would refuse).
local function retry_job(id, origin, now_text, now)
  local jk = K.job(id)
  local f = redis.call('HMGET', jk, 'retries_left', 'retry_intervals', 'enqueue_at_front_on_retry')
  local left = int_in(f[1] or '', 0, MAX_RETRIES)
  if not left or left <= 0 then return nil end
  local intervals = {}
  if f[2] and f[2] ~= '' then
    local okd, decoded = pcall(cjson.decode, f[2])
    if okd and type(decoded) == 'table' then intervals = decoded end
  end
  local interval = 0
  if #intervals > 0 then
    local v = intervals[math.max(#intervals - left, 0) + 1]
    if type(v) == 'number' and v == math.floor(v) and v >= 0 and v <= MAX_TTL then interval = v end
  end
  redis.call('HSET', jk, 'retries_left', left - 1)
  if interval > 0 then
    redis.call('SADD', K.queues(), K.queue(origin))
    redis.call('HSET', jk, 'status', 'scheduled')
    redis.call('ZADD', K.scheduled(origin), math.floor(now) + interval, id)
    return 'scheduled'
  end
  push_queued(id, origin, now_text, f[3] == '1')
  return 'retried'
end

-- Records a final failure as RQ does: status (`failed` or `stopped`; a stopped job keeps
-- an empty `ended_at`, as RQ 3.0 leaves it), failure TTLs, failed registry (a negative
-- TTL is stored as the score), a result entry (FAILED, or `result_type`) with
-- `result_fields`, and the release of dependents that allow failures.
local function fail_job(id, origin, status, now_text, now, default_ft, result_fields, result_type)
  local jk = K.job(id)
  local own_ft = int_in(redis.call('HGET', jk, 'failure_ttl') or '', -1, MAX_TTL)
  local ft = own_ft or default_ft
  local ended = now_text
  if status == 'stopped' then ended = '' end
  redis.call('HSET', jk, 'status', status, 'ended_at', ended)
  local score = ft
  if ft > 0 then
    score = math.floor(now) + ft
    redis.call('EXPIRE', jk, num_text(ft))
    redis.call('EXPIRE', K.dependents(id), num_text(ft))
    redis.call('EXPIRE', K.dependencies(id), num_text(ft))
  end
  redis.call('ZADD', K.failed(origin), num_text(score), id)
  local rk = K.results(id)
  redis.call('XADD', rk, 'MAXLEN', '~', '10', '*', 'type', result_type or '2', unpack(result_fields))
  if own_ft and ft > 0 then redis.call('EXPIRE', rk, num_text(ft)) end
  release_dependents(id, now, now_text)
end

-- A batch's pushes (enqueue_batch.lua): the queue registrations (`SADD rq:queues`) and
-- the ids pushed onto each queue, written with one command each when the batch ends
-- instead of one per job. A queue's back pushes keep their order in one RPUSH, its front
-- pushes in one LPUSH (which puts the last one first, as one LPUSH per job does).
local function new_pushes()
  return {registered = {}, queue_keys = {}, order = {}, back = {}, front = {}, kind = {}}
end
-- The type of queue `q`'s key, once per batch: a queue whose key is not a list refuses
-- its jobs before anything of theirs is written (its pushes would fail at the end).
local function pushes_queue_type(p, q)
  local t = p.kind[q]
  if not t then
    t = redis.call('TYPE', K.queue(q)).ok
    p.kind[q] = t
  end
  return t
end
local function pushes_register(p, q)
  if not p.registered[q] then
    p.registered[q] = true
    p.queue_keys[#p.queue_keys + 1] = K.queue(q)
    p.order[#p.order + 1] = q
    p.back[q], p.front[q] = {}, {}
  end
end
local function flush_pushes(p)
  if #p.queue_keys > 0 then redis.call('SADD', K.queues(), unpack(p.queue_keys)) end
  for _, q in ipairs(p.order) do
    if #p.back[q] > 0 then redis.call('RPUSH', K.queue(q), unpack(p.back[q])) end
    if #p.front[q] > 0 then redis.call('LPUSH', K.queue(q), unpack(p.front[q])) end
  end
end

-- Saves and enqueues (or defers, or schedules) one job, from `A[i]` on: id, queue, mode
-- (back|front|schedule), schedule_at (epoch seconds, or `+N`: N seconds from Redis's
-- clock), now_text, ttl ('' = none), allow_dependency_failures
-- (0|1), nd, dep_id*nd, nf, (field, value)*nf. The TTL is checked before anything is
-- written, so a refused job is never left queued. With `pushes` (a batch) the queue's
-- registration and the job's push wait for the batch's end. Returns the status the job
-- got.
local function enqueue_from(A, i, pushes)
  local id, q, mode = A[i], A[i + 1], A[i + 2]
  local at, now_text = tonumber(A[i + 3]), A[i + 4]
  if string.sub(A[i + 3], 1, 1) == '+' then
    at = math.floor(server_now()) + (tonumber(string.sub(A[i + 3], 2)) or 0)
  end
  local ttl = nil
  if A[i + 5] ~= '' then
    ttl = int_in(A[i + 5], -1, MAX_TTL)
    if not ttl then
      return redis.error_reply('ERR job ' .. id .. ': ttl ' .. string.sub(A[i + 5], 1, 40) .. ' is not an integer in -1..' .. MAX_TTL)
    end
  end
  local allow = A[i + 6] == '1'
  local nd = tonumber(A[i + 7])
  local deps = {}
  for d = 1, nd do deps[d] = A[i + 7 + d] end
  local fbase = i + 8 + nd
  local nf = tonumber(A[fbase])
  local jk = K.job(id)
  if pushes then
    local t = pushes_queue_type(pushes, q)
    if t ~= 'list' and t ~= 'none' then
      return redis.error_reply('WRONGTYPE job ' .. id .. ': the key of queue ' .. q .. ' holds a ' .. t .. ', not a list')
    end
  end
  local existing = redis.call('HGET', jk, 'status')
  if existing == 'queued' or existing == 'started' or existing == 'deferred' or existing == 'scheduled' then
    return redis.error_reply('ERR job ' .. id .. ' already exists with status ' .. existing)
  end
  if existing then redis.call('DEL', jk) end
  local unmet = false
  for _, dep in ipairs(deps) do
    if not dependency_met(redis.call('HGET', K.job(dep), 'status'), allow) then unmet = true end
  end
  -- One HSET: the status (and for a queued job its enqueued_at) with the fields.
  local status = 'queued'
  if unmet then status = 'deferred' elseif mode == 'schedule' then status = 'scheduled' end
  if status == 'queued' then
    redis.call('HSET', jk, 'status', status, 'enqueued_at', now_text, unpack(A, fbase + 1, fbase + 2 * nf))
  else
    redis.call('HSET', jk, 'status', status, unpack(A, fbase + 1, fbase + 2 * nf))
  end
  if pushes then
    pushes_register(pushes, q)
  else
    redis.call('SADD', K.queues(), K.queue(q))
  end
  if status == 'deferred' then
    redis.call('ZADD', K.deferred(q), math.floor(server_now()), id)
    for _, dep in ipairs(deps) do
      redis.call('SADD', K.dependents(dep), id)
      redis.call('SADD', K.dependencies(id), dep)
    end
  elseif status == 'scheduled' then
    redis.call('ZADD', K.scheduled(q), at, id)
  elseif pushes then
    local line = pushes.back[q]
    if mode == 'front' then line = pushes.front[q] end
    line[#line + 1] = id
  elseif mode == 'front' then
    redis.call('LPUSH', K.queue(q), id)
  else
    redis.call('RPUSH', K.queue(q), id)
  end
  if ttl and ttl > 0 then
    redis.call('EXPIRE', jk, ttl)
    redis.call('EXPIRE', K.dependents(id), ttl)
    redis.call('EXPIRE', K.dependencies(id), ttl)
  end
  return status
end
