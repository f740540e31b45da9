#!lua flags=no-writes
-- queue_idle: whether a queue holds nothing and nobody consumes it, so its registry entry may
-- go (`forget_queue.lua`, on the registry's slot, decides with the time it was last seen).
--
-- KEYS[1..L]   taskq:{q}:pending:0 .. taskq:{q}:pending:<L-1> (L priority levels: #KEYS - 4)
-- KEYS[L+1]    taskq:{q}:scheduled
-- KEYS[L+2]    taskq:{q}:dead
-- KEYS[L+3]    taskq:{q}:workers (leased workers)
-- KEYS[L+4]    taskq:{q}:holders (workers with a processing list, leased or not)
-- returns      1 when every one of them is empty (or missing), else 0
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    return 0
  end
end
return 1
