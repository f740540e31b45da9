#!lua
-- Records an entry's last fired slot, never moving it backwards (a paused former leader that
-- resumes must not rewind the state).
--
-- KEYS[1]      taskq:beat:last-fire
-- ARGV[1]      entry name
-- ARGV[2]      slot, ms since the epoch
-- returns      1
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
if tonumber(ARGV[2]) > current then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 1
