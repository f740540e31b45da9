-- Keeps how runs ended, inside the call that settles them: each entry at the head of the
-- queue's capped record of recent outcomes, each counter increment into the minute's history
-- hash. The part of ARGV it reads, from `at`: most entries kept; how long history is kept, ms;
-- k; k entries (encoded outcomes); f; f pairs of counter field and increment.
-- Returns the index of the first argument after the part.
local function outcomes_record(list, history, args, at)
  local kept, ttl, entries = tonumber(args[at]), args[at + 1], tonumber(args[at + 2])
  if entries > 0 then
    redis.call('LPUSH', list, unpack(args, at + 3, at + 2 + entries))
    redis.call('LTRIM', list, 0, kept - 1)
  end
  local counters = at + 3 + entries
  local fields = tonumber(args[counters])
  for i = counters + 1, counters + 2 * fields, 2 do
    redis.call('HINCRBY', history, args[i], args[i + 1])
  end
  if fields > 0 then
    redis.call('PEXPIRE', history, ttl)
  end
  return counters + 1 + 2 * fields
end
