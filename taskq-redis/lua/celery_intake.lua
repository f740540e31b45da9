#!lua
-- Moves up to ARGV[1] messages that Python's Celery put in Kombu's lists of a queue (producers
-- LPUSH; Kombu's consumers take from the right) to the tail end of taskq's pending levels of
-- the queue of the same name, oldest first, and wakes an idle worker. One atomic move per
-- message: nothing is ever in neither list. The worker reads Celery's layout when it decodes
-- what it fetched (taskq_core::celery).
--
-- Kombu keeps a queue's messages in four lists by priority step, 0 (the default, and the
-- highest: Kombu's Redis priority runs backwards) to 9: `<queue>`, `<queue>\x06\x163`, `\x06\x166`,
-- `\x06\x169`. They are taken in that order into taskq levels 9, 6, 3, 0, so the order holds.
--
-- KEYS[1..4]   Kombu's lists of the queue, priority steps 0, 3, 6, 9
-- KEYS[5..8]   taskq:{<queue>}:pending:9, :6, :3, :0
-- KEYS[9]      taskq:{<queue>}:wake
-- ARGV[1]      most messages moved
-- returns      how many were moved
local most = tonumber(ARGV[1])
local moved = 0
for step = 1, 4 do
  while moved < most and redis.call('LMOVE', KEYS[step], KEYS[step + 4], 'RIGHT', 'LEFT') do
    moved = moved + 1
  end
end
if moved > 0 then
  redis.call('LPUSH', KEYS[9], '1')
  redis.call('LTRIM', KEYS[9], 0, 0)
end
return moved
