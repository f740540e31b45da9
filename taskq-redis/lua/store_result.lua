#!lua
-- store_result: writes one task's result record unless the stored one may not be replaced,
-- and announces final states to waiters. Results are monotonic: SUCCESS is never replaced, any
-- other final state only by a final state, a state in progress by anything (the same rule as
-- TaskState::may_become in taskq-core).
--
-- KEYS[1]  taskq:result:<id>
-- ARGV[1]  the record (JSON)
-- ARGV[2]  its state, e.g. SUCCESS
-- ARGV[3]  time to live, ms
-- ARGV[4]  the channel announcing final results, taskq:result-ready:<id>: the record when it
--          is at most 8 KiB, else '1'
-- returns  1 when written, 0 when the stored record was kept
local final = {SUCCESS = true, FAILURE = true, REVOKED = true, EXPIRED = true}
local stored = redis.call('GET', KEYS[1])
if stored then
  -- The record's own state is its first "state" key: it precedes the task's output and
  -- progress, and the id and task name before it are plain strings.
  local state = string.match(stored, '"state":"(%u+)"')
  if state == 'SUCCESS' or (final[state] and not final[ARGV[2]]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
if final[ARGV[2]] then
  -- The record itself, so that a waiter needs no GET after the news (one round trip less on
  -- every waited result); a large one only as '1' (pub/sub copies it to every subscriber, and
  -- on a cluster to every node), and the waiter reads it.
  if #ARGV[1] <= 8192 then
    redis.call('PUBLISH', ARGV[4], ARGV[1])
  else
    redis.call('PUBLISH', ARGV[4], '1')
  end
end
return 1
