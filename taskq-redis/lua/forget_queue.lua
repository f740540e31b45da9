#!lua
-- forget_queue: removes a queue from the registry unless a producer registered it since the
-- cutoff. Producers register a queue again at least once a minute while they enqueue to it, so
-- a queue found idle (`queue_idle.lua`) and not seen for much longer than that cannot be in the
-- middle of being filled.
--
-- KEYS[1]      taskq:queues (SET of queue names)
-- KEYS[2]      taskq:queues-seen{taskq:queues} (queue -> last registration, ms; same slot)
-- ARGV[1]      the queue
-- ARGV[2]      cutoff, ms since the epoch: forgotten only when last seen before it
-- returns      1 when forgotten, 0 when kept
local seen = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if seen >= tonumber(ARGV[2]) then
  return 0
end
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('SREM', KEYS[1], ARGV[1])
