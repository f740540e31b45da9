-- Releases the leader lock, only for its owner.
--
-- KEYS[1]      taskq:beat:leader
-- ARGV[1]      owner token
-- returns      1 when released, 0 when the caller does not own the lock
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
