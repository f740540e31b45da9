#!lua
-- Parks a worker's lease on one queue where it holds nothing: a deadline far ahead, set once,
-- instead of a short one renewed every heartbeat (an idle worker's heartbeat sends nothing;
-- see `broker/leases.rs`). Only when the processing list is empty: a list with messages (a
-- fetch whose reply has not reached the worker yet) keeps a short lease, renewed here.
--
-- KEYS[1]      taskq:{q}:workers (worker -> lease deadline, ms)
-- KEYS[2]      taskq:{q}:processing:<worker>
-- ARGV[1]      worker id
-- ARGV[2]      short deadline, ms (now + liveness ttl)
-- ARGV[3]      parked deadline, ms
-- ARGV[4]      '1' for a worker's first heartbeat (the lease is taken), '0' after (it must
--              still be there: a reaper may have recovered it)
-- ARGV[5]      the due index (lib/due.lua; '' on a cluster): the lease's deadline lowers its
--              queue's entry, so a worker that dies parked still leaves the set in time
-- returns      1 parked, 2 renewed short (its list holds messages), 0 lost
--- @include lib/due.lua
local parked = redis.call('LLEN', KEYS[2]) == 0
local deadline = parked and ARGV[3] or ARGV[2]
if ARGV[4] == '1' then
  redis.call('ZADD', KEYS[1], deadline, ARGV[1])
elseif not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
else
  redis.call('ZADD', KEYS[1], 'XX', deadline, ARGV[1])
end
due_lower(ARGV[5], KEYS[1], deadline)
return parked and 1 or 2
