#!lua
-- Enqueues one message only if its uniqueness key is not set, and sets the key, atomically:
-- two producers racing on one key (two beat replicas firing one slot) enqueue it once.
--
-- KEYS[1]      taskq:{q}:unique:<key>
-- KEYS[2]      taskq:{q}:pending:<level> (used when due now)
-- KEYS[3]      taskq:{q}:scheduled (used when due later)
-- KEYS[4]      taskq:{q}:wake (a token for one idle worker)
-- ARGV[1]      payload
-- ARGV[2]      how long the key lives, ms
-- ARGV[3]      due time, ms since the epoch (0: now)
-- ARGV[4]      now, ms since the epoch
-- ARGV[5]      level (one digit, prefixed to scheduled members)
-- ARGV[6]      value stored under the key (the task id)
-- returns      '' when enqueued, else the id of the task holding the key
if not redis.call('SET', KEYS[1], ARGV[6], 'NX', 'PX', ARGV[2]) then
  return redis.call('GET', KEYS[1]) or '?'
end
if tonumber(ARGV[3]) > tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[5] .. ARGV[1])
else
  redis.call('LPUSH', KEYS[2], ARGV[1])
  redis.call('LPUSH', KEYS[4], '1')
  redis.call('LTRIM', KEYS[4], 0, 0)
end
return ''
