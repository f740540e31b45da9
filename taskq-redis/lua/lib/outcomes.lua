-- Keeps how runs ended, inside the call that settles them: the call's outcomes as one bundle
-- (a count, then one encoded outcome per line) at the head of the queue's record of recent
-- outcomes, whole bundles dropped from its tail past the cap; each counter increment into the
-- minute's history hash.
--
-- list     taskq:{q}:outcomes (LIST of bundles, newest first)
-- count    taskq:{q}:outcomes-count (how many outcomes the list holds)
-- history  taskq:{q}:history:<minute>
-- The part of ARGV it reads, from `at`: most outcomes kept; how long history is kept, ms; how
-- long the record outlives its last write, ms; k, the outcomes in the bundle; the bundle
-- (only when k > 0); f; f pairs of counter field and increment.
-- Returns the index of the first argument after the part.
local function outcomes_record(list, count, history, args, at)
  local kept, ttl, list_ttl = tonumber(args[at]), args[at + 1], args[at + 2]
  local entries = tonumber(args[at + 3])
  local counters = at + 4
  if entries > 0 then
    redis.call('LPUSH', list, args[at + 4])
    counters = at + 5
    local total = redis.call('INCRBY', count, entries)
    while total > kept do
      local oldest = redis.call('RPOP', list)
      if not oldest then
        total = 0
        break
      end
      total = total - tonumber(string.match(oldest, '^%d+'))
    end
    redis.call('SET', count, total, 'PX', list_ttl)
    redis.call('PEXPIRE', list, list_ttl)
  end
  local fields = tonumber(args[counters])
  for i = counters + 1, counters + 2 * fields, 2 do
    redis.call('HINCRBY', history, args[i], args[i + 1])
  end
  if fields > 0 then
    redis.call('PEXPIRE', history, ttl)
  end
  return counters + 1 + 2 * fields
end
