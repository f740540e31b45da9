#!lua
-- Puts held messages back at the head of their pending levels, unchanged (no retry spent), so
-- that they run next and in the given order. Fenced per message.
--
-- KEYS[1]      taskq:{q}:processing:<worker>
-- KEYS[2..]    taskq:{q}:pending:0 .. taskq:{q}:pending:<L-1> (L priority levels: #KEYS - 2)
-- KEYS[#KEYS]  taskq:{q}:wake (a token for one idle worker)
-- ARGV[1]      the queue's key prefix taskq:{q} (for its partitions' keys)
-- ARGV[2..]    quads: level, payload, partition ('' for none), and 1 when it holds a slot of
--              its partition's limit (0 if not), in the order they should run
-- returns      number of messages that were still held
--- @include lib/partitions.lua
local wake = KEYS[#KEYS]
local requeued = 0
for i = #ARGV - 3, 2, -4 do
  if redis.call('LREM', KEYS[1], 1, ARGV[i + 1]) == 1 then
    local key = ARGV[i + 2]
    if key ~= '' then
      -- Back ahead of its partition's others, then its slot is released (in that order, so
      -- that the partition, still busy, keeps its limit).
      part_push(ARGV[1], ARGV[i], key, nil, {ARGV[i + 1]}, 1, 1, true)
      if ARGV[i + 3] == '1' then
        part_release(ARGV[1], key, 1)
      end
    else
      redis.call('RPUSH', KEYS[2 + tonumber(ARGV[i])], ARGV[i + 1])
    end
    requeued = requeued + 1
  end
end
if requeued > 0 then
  redis.call('LPUSH', wake, '1')
  redis.call('LTRIM', wake, 0, 0)
end
return requeued
