#!lua
-- Moves due scheduled messages (score <= now) to the tail of their pending level, at most
-- ARGV[2] per call. Atomic, so concurrent promoters never move one message twice.
--
-- KEYS[1]      taskq:{q}:scheduled (members: one-digit level followed by the payload)
-- KEYS[2..]    taskq:{q}:pending:0 .. taskq:{q}:pending:<L-1> (L priority levels: #KEYS - 2)
-- KEYS[#KEYS]  taskq:{q}:wake (a token for one idle worker)
-- ARGV[1]      now, ms since the epoch
-- ARGV[2]      most messages to move
-- ARGV[3]      the queue's key prefix taskq:{q} (for its partitions' keys)
-- ARGV[4]      the due index (lib/due.lua; '' on a cluster): the set's entry is written again
-- returns      number of messages moved
--- @include lib/due.lua
--- @include lib/partitions.lua
local wake = KEYS[#KEYS]
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  local level = tonumber(string.sub(member, 1, 1)) or 0
  part_make_ready(ARGV[3], level, string.sub(member, 2), KEYS[2 + level])
  redis.call('ZREM', KEYS[1], member)
end
if #due > 0 then
  redis.call('LPUSH', wake, '1')
  redis.call('LTRIM', wake, 0, 0)
end
due_settle(ARGV[4], KEYS[1])
return #due
