#!lua
-- store_result: writes task result records, each unless the stored one may not be replaced,
-- and announces final states to waiters. Results are monotonic: SUCCESS is never replaced, any
-- other final state only by a final state, a state in progress by anything (the same rule as
-- TaskState::may_become in taskq-core). One call writes a whole batch (all of one slot on a
-- cluster): the script call, not the writes, is most of what a result costs Redis.
--
-- KEYS[i]  taskq:result:<id i>
-- ARGV[1]  time to live, ms (all of the batch)
-- then per record i, from ARGV[2 + 3 (i - 1)]:
--          the record (JSON); its state, e.g. SUCCESS; the channel announcing final results,
--          taskq:result-ready:<id i>, which gets the record when it is at most 8 KiB, else '1'
-- returns  how many records were written (the others were kept)
local final = {SUCCESS = true, FAILURE = true, REVOKED = true, EXPIRED = true}
local ttl = ARGV[1]
local written = 0
for i, key in ipairs(KEYS) do
  local at = 2 + 3 * (i - 1)
  local record, new_state, channel = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  local stored = redis.call('GET', key)
  local keep = false
  if stored then
    -- The record's own state is its first "state" key: it precedes the task's output and
    -- progress, and the id and task name before it are plain strings.
    local state = string.match(stored, '"state":"(%u+)"')
    keep = state == 'SUCCESS' or (final[state] and not final[new_state])
  end
  if not keep then
    redis.call('SET', key, record, 'PX', ttl)
    written = written + 1
    if final[new_state] then
      -- The record itself, so that a waiter needs no GET after the news (one round trip
      -- less on every waited result); a large one only as '1' (pub/sub copies it to every
      -- subscriber, and on a cluster to every node), and the waiter reads it.
      if #record <= 8192 then
        redis.call('PUBLISH', channel, record)
      else
        redis.call('PUBLISH', channel, '1')
      end
    end
  end
end
return written
