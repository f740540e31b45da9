#!lua
-- Moves up to ARGV[1] ready messages of a worker's queues into its processing lists, queue by
-- queue in the order given, highest priority level first within a queue, oldest first within
-- a level. Atomic: a message is either still pending or in exactly this worker's processing
-- list. One call serves every queue on one server (a worker of three queues pays one round
-- trip, not three); on a cluster each queue is its own call, its keys sharing one slot.
--
-- Cost is independent of the batch size and of how many levels are empty: each LMPOP (Redis
-- 7.0) takes a whole batch from the first non-empty level, and one LPUSH moves it, instead of
-- one LMOVE per message.
--
-- KEYS         per queue, in order of preference, L + 3 keys (L, the number of priority
--              levels, is #KEYS / ARGV[4] - 3):
--                taskq:{q}:pending:<L-1> .. taskq:{q}:pending:0 (highest level first)
--                taskq:{q}:processing:<worker>
--                taskq:{q}:workers
--                taskq:{q}:holders (workers with a processing list)
-- ARGV[1]      most messages to move (0 only registers the worker); capped at 1000 per call,
--              because unpack() fails near 8000 values and the pop comes before the LPUSH
-- ARGV[2]      worker id
-- ARGV[3]      lease deadline (ms) for a worker not yet registered by a heartbeat; 0 when
--              it has sent one: then its lease must still be there
-- ARGV[4]      number of queues
-- ARGV[5..]    per queue, its key prefix taskq:{q} (for its partitions' keys and its pause
--              flag taskq:{q}:paused: a paused queue is skipped)
-- ARGV[#ARGV-2] the due index (lib/due.lua; '' on a cluster): a lease made short lowers its
--              queue's entry, so the fleet's reaper passes over the queue by then
-- ARGV[#ARGV-1] a deadline (ms) no short lease reaches: a lease beyond it is parked (its
--              worker held nothing there, `broker/leases.rs`), and is made short when messages
--              move into its processing list ('0' before the worker's first heartbeat)
-- ARGV[#ARGV]  the liveness ttl of a short lease, ms, counted from the server's time then
-- returns      {payloads, levels, queues, lost, partitions, slots}: five arrays of equal length,
--              oldest first within a turn (queues is each message's queue, 1-based in KEYS'
--              order; partitions its partition, '' for none; slots 1 when it holds a slot of its
--              partition's limit), and 1 when the worker's lease was gone on any queue (a reaper
--              recovered it), in which case nothing moved. When no message came from a
--              partition, partitions and slots are empty (most fetches: nothing to send per
--              message)
--
-- A queue with ready partitioned messages (lib/partitions.lua) is taken level by level, turn
-- by turn between its partitions and its unpartitioned messages; one without any, as before.
--- @include lib/due.lua
--- @include lib/partitions.lua
local queue_count = tonumber(ARGV[4]) or 1
local stride = #KEYS / queue_count
local levels_count = stride - 3
local max = math.min(tonumber(ARGV[1]) or 0, 1000)
local payloads, levels, queues, partitions, slots = {}, {}, {}, {}, {}
local any_partitioned = false
-- Most idle fetches find nothing: one EXISTS over every ready list (and each queue's count of
-- ready partitioned messages) says so, and the fetch ends there, whatever the number of queues
-- (an idle worker's cost, issue 31). Nothing moves then, so its lease needs no check: the next
-- heartbeat finds it gone.
if ARGV[3] == '0' and max > 0 then
  local ready = {}
  for q = 0, queue_count - 1 do
    for level = 1, levels_count do
      ready[#ready + 1] = KEYS[q * stride + level]
    end
    ready[#ready + 1] = ARGV[4 + q + 1] .. ':part-total'
  end
  if redis.call('EXISTS', unpack(ready)) == 0 then
    return {{}, {}, {}, 0, {}, {}}
  end
end
-- A worker holding messages must be known to reapers even before its first heartbeat, and one
-- whose lease was recovered must not take more: nothing is fetched into a list no reaper sees.
-- Every queue's lease is settled before anything moves.
local leases = {}
for q = 0, queue_count - 1 do
  local workers = KEYS[q * stride + levels_count + 2]
  if ARGV[3] ~= '0' then
    if redis.call('ZADD', workers, 'NX', ARGV[3], ARGV[2]) == 1 then
      due_lower(ARGV[#ARGV - 2], workers, ARGV[3])
    end
  else
    local deadline = redis.call('ZSCORE', workers, ARGV[2])
    if not deadline then
      return {{}, {}, {}, 1, {}, {}}
    end
    leases[q] = tonumber(deadline)
  end
end
-- A parked lease is made short from the server's time when the script runs (an idle worker's
-- fetch is sent before its blocking pop, seconds earlier); read only then.
local function unpark(q)
  local floor, ttl = tonumber(ARGV[#ARGV - 1]), tonumber(ARGV[#ARGV])
  if not leases[q] or not floor or floor <= 0 or leases[q] <= floor then return end
  local time = redis.call('TIME')
  local deadline = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) + ttl
  redis.call('ZADD', KEYS[q * stride + levels_count + 2], 'XX', deadline, ARGV[2])
  due_lower(ARGV[#ARGV - 2], KEYS[q * stride + levels_count + 2], deadline)
end
for q = 0, queue_count - 1 do
  if #payloads >= max then break end
  local base = q * stride
  local processing, holders = KEYS[base + levels_count + 1], KEYS[base + levels_count + 3]
  local moved = #payloads
  local prefix = ARGV[4 + q + 1]
  -- One read answers both: is the queue paused (`taskq queue pause`: skipped), and does it
  -- hold ready partitioned messages.
  local flags = redis.call('MGET', prefix .. ':part-total', prefix .. ':paused')
  if flags[2] then
    -- Paused: nothing is taken until it is resumed.
  elseif tonumber(flags[1] or '0') > 0 then
    for i = 1, levels_count do
      if #payloads >= max then break end
      local level = levels_count - i
      local taken, keys, held = part_take(prefix, level, KEYS[base + i], max - #payloads)
      any_partitioned = true
      for j = 1, #taken do
        payloads[#payloads + 1] = taken[j]
        levels[#levels + 1] = level
        queues[#queues + 1] = q + 1
        partitions[#partitions + 1] = keys[j]
        slots[#slots + 1] = held[j]
      end
      if #taken > 0 then
        redis.call('LPUSH', processing, unpack(taken))
      end
    end
  else
    -- LMPOP <numkeys> <levels, highest first> RIGHT COUNT <n>; the count is set per call.
    local pop = {levels_count}
    local level_of = {}
    for i = 1, levels_count do
      pop[#pop + 1] = KEYS[base + i]
      level_of[KEYS[base + i]] = levels_count - i
    end
    pop[#pop + 1] = 'RIGHT'
    pop[#pop + 1] = 'COUNT'
    local count_at = #pop + 1
    -- LMPOP takes from the first non-empty level, oldest first (producers push left): one call
    -- per level that has messages, and one that finds nothing, however many levels are empty.
    while #payloads < max do
      pop[count_at] = max - #payloads
      local popped = redis.call('LMPOP', unpack(pop))
      if not popped then break end
      local level, taken = level_of[popped[1]], popped[2]
      for j = 1, #taken do
        payloads[#payloads + 1] = taken[j]
        levels[#levels + 1] = level
        queues[#queues + 1] = q + 1
        partitions[#partitions + 1] = ''
        slots[#slots + 1] = 0
      end
      -- Oldest first, so that the processing list keeps the newest at its head, like LMOVE.
      redis.call('LPUSH', processing, unpack(taken))
    end
  end
  if #payloads > moved then
    redis.call('SADD', holders, ARGV[2])
    unpark(q)
  end
end
if not any_partitioned then
  partitions, slots = {}, {}
end
return {payloads, levels, queues, 0, partitions, slots}
