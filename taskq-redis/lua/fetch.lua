#!lua
-- Moves up to ARGV[1] ready messages of one queue into a worker's processing list, highest
-- priority level first, oldest first within a level. Atomic: a message is either still pending
-- or in exactly this worker's processing list.
--
-- Cost is independent of the batch size: EXISTS answers "anything at all?" for every level in
-- one call, and each level is taken with LRANGE + LTRIM + LPUSH instead of one LMOVE per message.
--
-- KEYS[1..L]   taskq:{q}:pending:<L-1> .. taskq:{q}:pending:0 (highest level first; L, the
--              number of priority levels, is #KEYS - 3)
-- KEYS[L+1]    taskq:{q}:processing:<worker>
-- KEYS[L+2]    taskq:{q}:workers
-- KEYS[L+3]    taskq:{q}:holders (workers with a processing list)
-- ARGV[1]      most messages to move (0 only registers the worker); capped at 1000 per call,
--              because unpack() fails near 8000 values and the LTRIM comes before the LPUSH
-- ARGV[2]      worker id
-- ARGV[3]      lease deadline (ms) for a worker not yet registered by a heartbeat; 0 when
--              it has sent one: then its lease must still be there
-- returns      {payloads, levels, lost}: two arrays of equal length, oldest first, and 1 when
--              the worker's lease was gone (a reaper recovered it), in which case nothing moved
local levels_count = #KEYS - 3
local processing, workers = KEYS[levels_count + 1], KEYS[levels_count + 2]
local holders = KEYS[levels_count + 3]
local max = math.min(tonumber(ARGV[1]) or 0, 1000)
local payloads, levels = {}, {}
-- A worker holding messages must be known to reapers even before its first heartbeat, and one
-- whose lease was recovered must not take more: nothing is fetched into a list no reaper sees.
if ARGV[3] ~= '0' then
  redis.call('ZADD', workers, 'NX', ARGV[3], ARGV[2])
elseif not redis.call('ZSCORE', workers, ARGV[2]) then
  return {payloads, levels, 1}
end
if max <= 0 or redis.call('EXISTS', unpack(KEYS, 1, levels_count)) == 0 then
  return {payloads, levels, 0}
end
for i = 1, levels_count do
  local want = max - #payloads
  if want <= 0 then break end
  -- Producers push left, so the oldest messages are at the right end.
  local taken = redis.call('LRANGE', KEYS[i], -want, -1)
  local n = #taken
  if n > 0 then
    redis.call('LTRIM', KEYS[i], 0, -n - 1)
    -- taken is newest..oldest; report oldest first, and push oldest first so that the
    -- processing list keeps the newest at its head, like LMOVE would.
    local oldest_first = {}
    for j = n, 1, -1 do
      oldest_first[#oldest_first + 1] = taken[j]
      payloads[#payloads + 1] = taken[j]
      levels[#levels + 1] = levels_count - i
    end
    redis.call('LPUSH', processing, unpack(oldest_first))
  end
end
if #payloads > 0 then
  redis.call('SADD', holders, ARGV[2])
end
return {payloads, levels, 0}
