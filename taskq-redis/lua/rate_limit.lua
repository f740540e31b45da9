#!lua
-- Generic cell rate algorithm: admits one start if the task's theoretical arrival time (TAT)
-- is not in the future, and moves the TAT on by one interval. Shared by every worker, so the
-- limit is global.
--
-- KEYS[1]      taskq:{q}:rate:<task>
-- ARGV[1]      now, ms since the epoch
-- ARGV[2]      interval between starts, ms
-- returns      0 when admitted, else how many ms until the next start is allowed
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat > now then
  return tat - now
end
redis.call('SET', KEYS[1], tat + interval, 'PX', interval * 2 + 1000)
return 0
