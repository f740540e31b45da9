#!lua
-- heartbeat: takes or renews one worker's lease on one queue.
--
-- KEYS[1]  taskq:{q}:workers (worker -> lease deadline, ms)
-- ARGV[1]  worker id
-- ARGV[2]  new deadline, ms since the epoch (server clock)
-- ARGV[3]  '1' to take the lease (the worker's first heartbeat), '0' to renew only
-- returns  1 when the worker holds the lease until ARGV[2], 0 when a renewal found it gone
--          (a reaper recovered the worker): nothing is written then
if ARGV[3] ~= '1' and not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1
