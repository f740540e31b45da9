#!lua
-- Moves one dead letter back to its queue: removes the record and pushes the (reset) payload
-- in one step, so a message is never lost or doubled even when two operators race.
--
-- KEYS[1]      taskq:{q}:dead
-- KEYS[2]      taskq:{q}:pending:<level>
-- KEYS[3]      taskq:{q}:wake (a token for one idle worker)
-- KEYS[4]      taskq:{q}:dead-bytes (bytes the dead-letter list holds)
-- ARGV[1]      the dead letter record, exactly as stored
-- ARGV[2]      the payload to enqueue
-- ARGV[3]      the queue's key prefix taskq:{q} (for its partitions' keys)
-- ARGV[4]      the payload's level (one digit)
-- returns      1 when requeued, 0 when the record was no longer there
--- @include lib/dead_letters.lua
--- @include lib/partitions.lua
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
  return 0
end
dead_uncount(KEYS[4], #ARGV[1])
part_make_ready(ARGV[3], ARGV[4], ARGV[2], KEYS[2])
redis.call('LPUSH', KEYS[3], '1')
redis.call('LTRIM', KEYS[3], 0, 0)
return 1
