#!lua
-- register_queues: lists queues in the registry with the time a producer last saw them, in one
-- step (both keys share a slot).
--
-- KEYS[1]      taskq:queues (SET of queue names)
-- KEYS[2]      taskq:queues-seen{taskq:queues} (queue -> last registration, ms)
-- ARGV[1]      now, ms since the epoch
-- ARGV[2..]    queue names
for i = 2, #ARGV do
  redis.call('SADD', KEYS[1], ARGV[i])
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[1])
end
return #ARGV - 1
