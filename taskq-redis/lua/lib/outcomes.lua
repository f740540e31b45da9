-- Keeps how runs ended, inside the call that settles them: each encoded outcome at the head of
-- the queue's record of recent outcomes, trimmed to its cap; each counter increment into the
-- minute's history hash.
--
-- list     taskq:{q}:outcomes (LIST of encoded outcomes, newest first)
-- history  taskq:{q}:history:<minute>
-- The part of ARGV it reads, from `at`: most outcomes kept; how long history is kept, ms; how
-- long the record outlives its last write, ms; k; k encoded outcomes, oldest first; f; f pairs
-- of counter field and increment.
-- Returns the index of the first argument after the part.
local function outcomes_record(list, history, args, at)
  local kept, ttl, list_ttl = tonumber(args[at]), args[at + 1], args[at + 2]
  local entries = tonumber(args[at + 3])
  if entries > 0 then
    redis.call('LPUSH', list, unpack(args, at + 4, at + 3 + entries))
    redis.call('LTRIM', list, 0, kept - 1)
    redis.call('PEXPIRE', list, list_ttl)
  end
  local counters = at + 4 + entries
  local fields = tonumber(args[counters])
  for i = counters + 1, counters + 2 * fields, 2 do
    redis.call('HINCRBY', history, args[i], args[i + 1])
  end
  if fields > 0 then
    redis.call('PEXPIRE', history, ttl)
  end
  return counters + 1 + 2 * fields
end
