#!lua
-- enqueue_keyed: debounce or throttle on a key, decided and written in one step, so racing
-- producers see one another (docs/partitions.md, "Debounce and throttle").
--
-- A debounce keeps one pending invocation per key in the scheduled set: a call replaces its
-- arguments (the message must carry the pending invocation's id: otherwise the answer says
-- which, and the producer sends again) and moves its start to `window` after the call, no later
-- than `max_wait` after the burst's first call. A throttle lets one call per window run at
-- once; a call inside the window is dropped (the answer names the window's id) or, kept
-- ('throttle-last'), waits for the window's end, where it holds the next window.
--
-- KEYS[1]      taskq:{q}:flow:<key> (HASH: id, member, first, start, until)
-- KEYS[2]      taskq:{q}:scheduled
-- KEYS[3]      taskq:{q}:pending:<level> (a throttled call that runs now)
-- KEYS[4]      taskq:{q}:wake (a token for one idle worker)
-- KEYS[5..14]  taskq:{q}:pending:0 .. pending:9, counted against the bound
-- ARGV[1]      'debounce', 'throttle' or 'throttle-last'
-- ARGV[2]      payload
-- ARGV[3]      its task id
-- ARGV[4]      its level (one digit, prefixed to scheduled members)
-- ARGV[5]      now, ms since the epoch
-- ARGV[6]      window, ms
-- ARGV[7]      debounce's max wait, ms (0: none)
-- ARGV[8]      the id the producer expects to replace ('' when none)
-- ARGV[9]      the queue's key prefix taskq:{q} (for its partitions' keys)
-- ARGV[10]     the message's partition ('' for none)
-- ARGV[11]     the partition's limit ('' for none)
-- ARGV[12]     most messages (pending + scheduled) the queue may hold; 0 for no bound
-- ARGV[13]     the due index (lib/due.lua; '' on a cluster)
-- returns      {'written', id} (this id will run), {'dropped', id} (the window's id),
--              {'resend', id} (send again carrying this id, or a fresh one when ''), or
--              {'full', ''} when the queue is at its bound
--- @include lib/due.lua
--- @include lib/partitions.lua
local state, scheduled = KEYS[1], KEYS[2]
local mode, payload, id, level = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now, window, max_wait = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local expect, prefix = ARGV[8], ARGV[9]
local held = redis.call('HMGET', state, 'id', 'member', 'first', 'start', 'until')
local held_id, member = held[1], held[2]
local first, start, until_at = tonumber(held[3]), tonumber(held[4]), tonumber(held[5])
-- The pending invocation's due time, while it still waits.
local alive = member and redis.call('ZSCORE', scheduled, member)

local function room()
  local bound = tonumber(ARGV[12])
  if bound <= 0 then return true end
  local count = redis.call('ZCARD', scheduled)
    + math.max(0, tonumber(redis.call('GET', prefix .. ':part-total') or '0'))
  for i = 5, 14 do count = count + redis.call('LLEN', KEYS[i]) end
  return count < bound
end

local function schedule(due)
  local scheduled_member = level .. payload
  redis.call('ZADD', scheduled, due, scheduled_member)
  due_lower(ARGV[13], scheduled, due)
  return scheduled_member
end

local function keep(fields, lives_until)
  redis.call('HSET', state, unpack(fields))
  redis.call('PEXPIREAT', state, lives_until + 60000)
end

if mode == 'debounce' then
  if alive then
    if expect ~= held_id then return {'resend', held_id} end
    redis.call('ZREM', scheduled, member)
    local due = now + window
    if max_wait > 0 then due = math.min(due, first + max_wait) end
    keep({'member', schedule(due), 'until', due}, due)
    return {'written', held_id}
  end
  if expect ~= '' then return {'resend', ''} end
  if not room() then return {'full', ''} end
  local due = now + window
  if max_wait > 0 then due = math.min(due, now + max_wait) end
  keep({'id', id, 'member', schedule(due), 'first', now, 'start', now, 'until', due}, due)
  return {'written', id}
end

if until_at and now < until_at then
  if mode == 'throttle' then return {'dropped', held_id} end
  if now < start and alive then
    -- The next window's run still waits: it takes these arguments, at the same time.
    if expect ~= held_id then return {'resend', held_id} end
    redis.call('ZREM', scheduled, member)
    keep({'member', schedule(tonumber(alive))}, until_at)
    return {'written', held_id}
  end
  if expect ~= '' then return {'resend', ''} end
  if not room() then return {'full', ''} end
  -- Kept for the window's end, where its run holds the next window.
  local next_until = until_at + window
  keep({'id', id, 'member', schedule(until_at), 'first', now, 'start', until_at,
    'until', next_until}, next_until)
  return {'written', id}
end
if expect ~= '' then return {'resend', ''} end
if not room() then return {'full', ''} end
if ARGV[10] ~= '' then
  part_push(prefix, level, ARGV[10], ARGV[11], {payload}, 1, 1, false)
else
  redis.call('LPUSH', KEYS[3], payload)
end
redis.call('LPUSH', KEYS[4], '1')
redis.call('LTRIM', KEYS[4], 0, 0)
redis.call('HDEL', state, 'member')
keep({'id', id, 'first', now, 'start', now, 'until', now + window}, now + window)
return {'written', id}
