#!lua
-- Moves up to ARGV[1] messages that Python's Celery put in Kombu's list of a queue (producers
-- LPUSH; Kombu's consumers take from the right) to the tail end of taskq's lowest pending
-- level of the queue of the same name, oldest first, and wakes an idle worker. One atomic
-- move per message: nothing is ever in neither list. The worker reads Celery's layout when it
-- decodes what it fetched (taskq_core::celery).
--
-- KEYS[1]      <queue> (Kombu's list)
-- KEYS[2]      taskq:{<queue>}:pending:0
-- KEYS[3]      taskq:{<queue>}:wake
-- ARGV[1]      most messages moved
-- returns      how many were moved
local moved = 0
for _ = 1, tonumber(ARGV[1]) do
  if not redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT') then
    break
  end
  moved = moved + 1
end
if moved > 0 then
  redis.call('LPUSH', KEYS[3], '1')
  redis.call('LTRIM', KEYS[3], 0, 0)
end
return moved
