-- Moves up to ARGV[1] ready messages of one queue into a worker's processing list, highest
-- priority level first, oldest first within a level. Atomic: a message is either still pending
-- or in exactly this worker's processing list.
--
-- KEYS[1..10]  taskq:{q}:pending:9 .. taskq:{q}:pending:0 (highest level first)
-- KEYS[11]     taskq:{q}:processing:<worker>
-- KEYS[12]     taskq:{q}:workers
-- ARGV[1]      most messages to move (0 only registers the worker)
-- ARGV[2]      worker id
-- ARGV[3]      lease deadline (ms) for a worker not yet registered by a heartbeat
-- returns      {payloads, levels}: two arrays of equal length, in fetch order
local max = tonumber(ARGV[1])
-- A worker holding messages must be known to reapers even before its first heartbeat.
redis.call('ZADD', KEYS[12], 'NX', ARGV[3], ARGV[2])
local payloads, levels = {}, {}
local moved = 0
for i = 1, 10 do
  while moved < max do
    local payload = redis.call('LMOVE', KEYS[i], KEYS[11], 'RIGHT', 'LEFT')
    if not payload then break end
    moved = moved + 1
    payloads[moved] = payload
    levels[moved] = 10 - i
  end
  if moved >= max then break end
end
return {payloads, levels}
