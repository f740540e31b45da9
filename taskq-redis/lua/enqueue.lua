#!lua
-- enqueue: the messages of one enqueue call for one or more queues (one queue per call on a
-- cluster), refused whole when a bound is set and any queue would exceed it. Ready payloads
-- go to the head of their pending level, scheduled ones into the scheduled set, and one idle
-- worker per queue is woken when something became ready.
--
-- Used on a cluster and whenever queues are bounded; an unbounded single server takes the
-- equivalent (cheaper) MULTI. On a cluster it must be a script: during a reshard a script runs
-- whole on one node (TRYAGAIN while its keys are split), whereas a transaction redirected by
-- ASK could leave the same list on both nodes.
--
-- KEYS          per queue, 12 keys: wake, pending:0 .. pending:9, scheduled
-- ARGV[1]       most messages (pending + scheduled) a queue may hold; 0 for no bound
-- ARGV[2]       number of queues
-- ARGV[3..]     per queue, 14 values: payloads per level 0..9, scheduled members, ready
--               partitioned payloads, partition runs (below), the queue's key prefix taskq:{q}
-- then          per queue: the payloads level by level, oldest first; then due-time, member
--               pairs; then per run of one partition and level: level, partition, limit ('' for
--               none), count, and its payloads oldest first
-- ARGV[#ARGV]   the due index (lib/due.lua; '' on a cluster)
-- returns       {0} when enqueued, {i, held} when queue i (1-based) would exceed the bound
--- @include lib/due.lua
--- @include lib/partitions.lua
local limit = tonumber(ARGV[1])
local queues = tonumber(ARGV[2])
local per_queue = 14
local function count(q, slot)
  return tonumber(ARGV[2 + (q - 1) * per_queue + slot])
end
local function prefix_of(q)
  return ARGV[2 + (q - 1) * per_queue + 14]
end
if limit > 0 then
  for q = 1, queues do
    local base = (q - 1) * 12
    local held = redis.call('ZCARD', KEYS[base + 12])
      + math.max(0, tonumber(redis.call('GET', prefix_of(q) .. ':part-total') or '0'))
    local incoming = 0
    for level = 0, 9 do
      held = held + redis.call('LLEN', KEYS[base + 2 + level])
      incoming = incoming + count(q, level + 1)
    end
    incoming = incoming + count(q, 11) + count(q, 12)
    if held + incoming > limit then
      return {q, held}
    end
  end
end
-- Lua's unpack has a small stack: push at most this many arguments per call.
local chunk = 1000
local next_arg = 3 + queues * per_queue
for q = 1, queues do
  local base = (q - 1) * 12
  local ready = 0
  for level = 0, 9 do
    local n = count(q, level + 1)
    local last = next_arg + n - 1
    for first = next_arg, last, chunk do
      redis.call('LPUSH', KEYS[base + 2 + level], unpack(ARGV, first, math.min(first + chunk - 1, last)))
    end
    next_arg = last + 1
    ready = ready + n
  end
  local scheduled = count(q, 11)
  if scheduled > 0 then
    local last = next_arg + 2 * scheduled - 1
    local earliest = tonumber(ARGV[next_arg])
    for i = next_arg + 2, last, 2 do
      earliest = math.min(earliest, tonumber(ARGV[i]))
    end
    for first = next_arg, last, 2 * chunk do
      redis.call('ZADD', KEYS[base + 12], unpack(ARGV, first, math.min(first + 2 * chunk - 1, last)))
    end
    due_lower(ARGV[#ARGV], KEYS[base + 12], earliest)
    next_arg = last + 1
  end
  for _ = 1, count(q, 13) do
    local level, key, part_limit, n = ARGV[next_arg], ARGV[next_arg + 1], ARGV[next_arg + 2],
      tonumber(ARGV[next_arg + 3])
    part_push(prefix_of(q), level, key, part_limit, ARGV, next_arg + 4, next_arg + 3 + n, false)
    next_arg = next_arg + 4 + n
    ready = ready + n
  end
  if ready > 0 then
    redis.call('LPUSH', KEYS[base + 1], '1')
    redis.call('LTRIM', KEYS[base + 1], 0, 0)
  end
end
return {0}
