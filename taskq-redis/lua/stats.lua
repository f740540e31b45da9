#!lua flags=no-writes
-- stats: one queue's counts as one consistent snapshot, in one round trip.
--
-- KEYS[1..L]   taskq:{q}:pending:0 .. taskq:{q}:pending:<L-1> (L priority levels: #KEYS - 3)
-- KEYS[L+1]    taskq:{q}:scheduled
-- KEYS[L+2]    taskq:{q}:dead
-- KEYS[L+3]    taskq:{q}:workers (worker -> liveness deadline)
-- KEYS[L+4]    taskq:{q}:dead-dropped (dead letters the cap pushed out)
-- KEYS[L+5]    taskq:{q}:holders (workers with a processing list, leased or not)
-- ARGV[1]      the queue's processing key prefix, `taskq:{q}:processing:`
-- ARGV[2]      the queue's key prefix taskq:{q} (ready partitioned messages count as pending;
--              the oldest of the first 1,000 partitions, by key, count for the oldest entry)
-- returns      {pending, scheduled, processing, dead, {oldest payload of each non-empty level},
--              dead letters dropped, 1 when the queue is paused (taskq:{q}:paused) else 0}
--
-- The processing lists are named by the workers in KEYS[L+3], so they cannot be listed in KEYS
-- up front; the script builds their names from ARGV[1], which carries the same hash tag as
-- every KEYS entry, and only reads them. That keeps it in one slot on a cluster (the same
-- pattern asynq uses for per-task keys).
--- @include lib/partitions.lua
local levels_count = #KEYS - 5
local pending, oldest = 0, {}
for level = 1, levels_count do
  local length = redis.call('LLEN', KEYS[level])
  if length > 0 then
    pending = pending + length
    oldest[#oldest + 1] = redis.call('LINDEX', KEYS[level], -1)
  end
end
local prefix = ARGV[2]
pending = pending + math.max(0, tonumber(redis.call('GET', prefix .. ':part-total') or '0'))
for i, partition in ipairs(part_known(prefix)) do
  if i > 1000 then break end
  for level = 0, levels_count - 1 do
    local first = redis.call('LINDEX', prefix .. ':part:' .. level .. ':' .. partition, -1)
    if first then oldest[#oldest + 1] = first end
  end
end
-- Every list is counted once, whether its worker holds a lease (workers) or not (holders).
local processing, counted = 0, {}
for _, source in ipairs({redis.call('ZRANGE', KEYS[levels_count + 3], 0, -1),
                         redis.call('SMEMBERS', KEYS[levels_count + 5])}) do
  for _, worker in ipairs(source) do
    if not counted[worker] then
      counted[worker] = true
      processing = processing + redis.call('LLEN', ARGV[1] .. worker)
    end
  end
end
return {pending, redis.call('ZCARD', KEYS[levels_count + 1]), processing,
  redis.call('LLEN', KEYS[levels_count + 2]), oldest,
  tonumber(redis.call('GET', KEYS[levels_count + 4]) or '0'),
  redis.call('EXISTS', prefix .. ':paused')}
