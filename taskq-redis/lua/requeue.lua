#!lua
-- Puts held messages back at the head of their pending levels, unchanged (no retry spent), so
-- that they run next and in the given order. Fenced per message.
--
-- KEYS[1]      taskq:{q}:processing:<worker>
-- KEYS[2..]    taskq:{q}:pending:0 .. taskq:{q}:pending:<L-1> (L priority levels: #KEYS - 2)
-- KEYS[#KEYS]  taskq:{q}:wake (a token for one idle worker)
-- ARGV         pairs: level, payload, in the order they should run
-- returns      number of messages that were still held
local wake = KEYS[#KEYS]
local requeued = 0
for i = #ARGV - 1, 1, -2 do
  if redis.call('LREM', KEYS[1], 1, ARGV[i + 1]) == 1 then
    redis.call('RPUSH', KEYS[2 + tonumber(ARGV[i])], ARGV[i + 1])
    requeued = requeued + 1
  end
end
if requeued > 0 then
  redis.call('LPUSH', wake, '1')
  redis.call('LTRIM', wake, 0, 0)
end
return requeued
