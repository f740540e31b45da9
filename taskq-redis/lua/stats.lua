-- stats: one queue's counts as one consistent snapshot, in one round trip.
--
-- KEYS[1..10]  taskq:{q}:pending:0 .. taskq:{q}:pending:9
-- KEYS[11]     taskq:{q}:scheduled
-- KEYS[12]     taskq:{q}:dead
-- KEYS[13]     taskq:{q}:workers (worker -> liveness deadline)
-- ARGV[1]      the queue's processing key prefix, `taskq:{q}:processing:`
-- returns      {pending, scheduled, processing, dead, {oldest payload of each non-empty level}}
--
-- The processing lists are named by the workers in KEYS[13], so they cannot be listed in KEYS
-- up front; the script builds their names from ARGV[1], which carries the same hash tag as
-- every KEYS entry, and only reads them. That keeps it in one slot on a cluster (the same
-- pattern asynq uses for per-task keys).
local pending, oldest = 0, {}
for level = 1, 10 do
  local length = redis.call('LLEN', KEYS[level])
  if length > 0 then
    pending = pending + length
    oldest[#oldest + 1] = redis.call('LINDEX', KEYS[level], -1)
  end
end
local processing = 0
for _, worker in ipairs(redis.call('ZRANGE', KEYS[13], 0, -1)) do
  processing = processing + redis.call('LLEN', ARGV[1] .. worker)
end
return {pending, redis.call('ZCARD', KEYS[11]), processing, redis.call('LLEN', KEYS[12]), oldest}
