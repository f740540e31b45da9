#!lua
-- Enqueues one message only if its uniqueness key is not set, and sets the key, atomically:
-- two producers racing on one key (two beat replicas firing one slot) enqueue it once.
--
-- KEYS[1]      taskq:{q}:unique:<key>
-- KEYS[2]      taskq:{q}:pending:<level> (used when due now)
-- KEYS[3]      taskq:{q}:scheduled (used when due later)
-- KEYS[4]      taskq:{q}:wake (a token for one idle worker)
-- KEYS[5..14]  taskq:{q}:pending:0 .. pending:9, counted against the bound
-- ARGV[1]      payload
-- ARGV[2]      how long the key lives, ms
-- ARGV[3]      due time, ms since the epoch (0: now)
-- ARGV[4]      now, ms since the epoch
-- ARGV[5]      level (one digit, prefixed to scheduled members)
-- ARGV[6]      value stored under the key (the task id)
-- ARGV[7]      most messages (pending + scheduled) the queue may hold; 0 for no bound
-- ARGV[8]      the queue's key prefix taskq:{q} (for its partitions' keys)
-- ARGV[9]      the message's partition ('' for none)
-- ARGV[10]     the partition's limit ('' for none)
-- ARGV[11]     the due index (lib/due.lua; '' on a cluster)
-- returns      '' when enqueued, '!full' when the queue is at its bound (the key is not set),
--              else the id of the task holding the key
--- @include lib/due.lua
--- @include lib/partitions.lua
local holder = redis.call('GET', KEYS[1])
if holder then
  return holder
end
local limit = tonumber(ARGV[7])
if limit > 0 then
  local held = redis.call('ZCARD', KEYS[3])
  for i = 5, 14 do
    held = held + redis.call('LLEN', KEYS[i])
  end
  held = held + math.max(0, tonumber(redis.call('GET', ARGV[8] .. ':part-total') or '0'))
  if held + 1 > limit then
    return '!full'
  end
end
redis.call('SET', KEYS[1], ARGV[6], 'PX', ARGV[2])
if tonumber(ARGV[3]) > tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[5] .. ARGV[1])
  due_lower(ARGV[11], KEYS[3], ARGV[3])
else
  if ARGV[9] ~= '' then
    part_push(ARGV[8], ARGV[5], ARGV[9], ARGV[10], {ARGV[1]}, 1, 1, false)
  else
    redis.call('LPUSH', KEYS[2], ARGV[1])
  end
  redis.call('LPUSH', KEYS[4], '1')
  redis.call('LTRIM', KEYS[4], 0, 0)
end
return ''
