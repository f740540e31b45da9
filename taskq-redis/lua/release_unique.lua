-- Releases a uniqueness key when the task that claimed it finished, and only then: a newer
-- claim by another task is left alone.
--
-- KEYS[1]      taskq:{q}:unique:<key>
-- ARGV[1]      id of the finished task
-- returns      1 when released, 0 otherwise
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
