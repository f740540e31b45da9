-- The due index (taskq:due, `keys::DUE`): per set of a queue whose earliest score says when the
-- fleet must next pass over it (the leases taskq:{q}:workers for the reaper, the scheduled set
-- for promotion), that score, so that an idle fleet reads one key per pass instead of every
-- queue's sets (issue 31). Every script that adds a score to such a set lowers the set's entry
-- in the same call; the pass that served a set writes its entry again (due_settle). The index
-- is '' on a cluster (it would live in a slot of its own), and then nothing is written.

-- Lowers `set`'s entry to `at` (ms) unless it is already as early.
local function due_lower(index, set, at)
  if index ~= '' and at then
    redis.call('ZADD', index, 'LT', at, set)
  end
end

-- Writes `set`'s entry as the earliest score the set holds now, or removes it when the set is
-- empty. Run after a pass, in one call with the read, so a score added by another script is
-- either seen here or lowers the entry after.
local function due_settle(index, set)
  if index == '' then return end
  local first = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
  if first[2] then
    redis.call('ZADD', index, first[2], set)
  else
    redis.call('ZREM', index, set)
  end
end
