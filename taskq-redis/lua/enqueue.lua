#!lua
-- enqueue (on Redis Cluster): one queue's part of an enqueue call. Ready payloads go to the
-- head of their pending level, scheduled ones into the scheduled set, and one idle worker is
-- woken when something became ready. A script, not a MULTI: during a reshard a script runs
-- whole on one node (TRYAGAIN while its keys are split), whereas a transaction redirected by
-- ASK could leave the same list on both nodes. A single server takes the equivalent MULTI,
-- which is cheaper.
--
-- KEYS[1]        taskq:{q}:wake (a token for one idle worker)
-- KEYS[2..n+1]   the pending levels receiving messages, in ARGV's order
-- KEYS[n+2]      taskq:{q}:scheduled, when scheduled members follow
-- ARGV[1]        n, the number of pending levels used
-- ARGV[2..n+1]   how many payloads each of those levels receives
-- ARGV[n+2]      how many scheduled members follow
-- ARGV[n+3..]    the payloads, level by level, oldest first; then due-time, member pairs
-- returns        1
local used = tonumber(ARGV[1])
local next_arg = used + 3
-- Lua's unpack has a small stack: push at most this many arguments per call.
local chunk = 1000
for level = 1, used do
  local count = tonumber(ARGV[1 + level])
  local last = next_arg + count - 1
  for first = next_arg, last, chunk do
    redis.call('LPUSH', KEYS[1 + level], unpack(ARGV, first, math.min(first + chunk - 1, last)))
  end
  next_arg = last + 1
end
local scheduled = tonumber(ARGV[used + 2])
if scheduled > 0 then
  local last = next_arg + 2 * scheduled - 1
  for first = next_arg, last, 2 * chunk do
    redis.call('ZADD', KEYS[used + 2], unpack(ARGV, first, math.min(first + 2 * chunk - 1, last)))
  end
end
if used > 0 then
  redis.call('LPUSH', KEYS[1], '1')
  redis.call('LTRIM', KEYS[1], 0, 0)
end
return 1
