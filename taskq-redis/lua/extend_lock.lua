#!lua
-- Extends the leader lock, only for its owner.
--
-- KEYS[1]      taskq:beat:leader
-- ARGV[1]      owner token
-- ARGV[2]      new time to live, ms
-- returns      1 when extended, 0 when the caller does not own the lock
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
