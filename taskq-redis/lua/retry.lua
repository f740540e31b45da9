#!lua
-- Replaces a failed message by its next attempt: into the scheduled set when due later, at the
-- tail of its pending level when due now. Fenced on the current message still being held.
--
-- KEYS[1]      taskq:{q}:processing:<worker>
-- KEYS[2]      taskq:{q}:scheduled
-- KEYS[3]      taskq:{q}:pending:<level of the next attempt>
-- KEYS[4]      taskq:{q}:wake (a token for one idle worker)
-- ARGV[1]      current payload (as held)
-- ARGV[2]      next attempt's payload
-- ARGV[3]      due time, ms since the epoch
-- ARGV[4]      now, ms since the epoch
-- ARGV[5]      level of the next attempt (one digit, prefixed to scheduled members)
-- returns      1 when moved, 0 when this worker no longer held the message
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
  return 0
end
if tonumber(ARGV[3]) <= tonumber(ARGV[4]) then
  redis.call('LPUSH', KEYS[3], ARGV[2])
  redis.call('LPUSH', KEYS[4], '1')
  redis.call('LTRIM', KEYS[4], 0, 0)
else
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5] .. ARGV[2])
end
return 1
