#!lua
-- settle_scheduled: moves one scheduled message to the tail of its pending level at once
-- ("run now"), or deletes it. Only members with the given due time are looked at, so the
-- call stays cheap however large the scheduled set is.
--
-- KEYS[1]      taskq:{q}:scheduled (members: one-digit level followed by the payload)
-- KEYS[2..]    taskq:{q}:pending:0 .. taskq:{q}:pending:<L-1> (L priority levels: #KEYS - 2)
-- KEYS[#KEYS]  taskq:{q}:wake (a token for one idle worker)
-- ARGV[1]      the task id (UUID text)
-- ARGV[2]      its due time, ms since the epoch (its score)
-- ARGV[3]      'run' or 'delete'
-- ARGV[4]      the queue's key prefix taskq:{q} (for its partitions' keys)
-- returns      1 when moved or deleted, 0 when no such message is scheduled at that time
--- @include lib/partitions.lua
local needle = '"id":"' .. ARGV[1] .. '"'
local members = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[2], ARGV[2])
for _, member in ipairs(members) do
  if string.find(member, needle, 1, true) then
    redis.call('ZREM', KEYS[1], member)
    if ARGV[3] == 'run' then
      local top = #KEYS - 2
      local level = tonumber(string.sub(member, 1, 1)) or 0
      if level >= top then level = top - 1 end
      part_make_ready(ARGV[4], level, string.sub(member, 2), KEYS[2 + level])
      redis.call('LPUSH', KEYS[#KEYS], '1')
      redis.call('LTRIM', KEYS[#KEYS], 0, 0)
    end
    return 1
  end
end
return 0
