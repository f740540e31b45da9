#!lua
-- Replaces a failed message by its next attempt: into the scheduled set when due later, at the
-- tail of its pending level when due now. Fenced on the current message still being held.
--
-- KEYS[1]      taskq:{q}:processing:<worker>
-- KEYS[2]      taskq:{q}:scheduled
-- KEYS[3]      taskq:{q}:pending:<level of the next attempt>
-- KEYS[4]      taskq:{q}:wake (a token for one idle worker)
-- ARGV[1]      current payload (as held)
-- ARGV[2]      next attempt's payload
-- ARGV[3]      due time, ms since the epoch
-- ARGV[4]      now, ms since the epoch
-- ARGV[5]      level of the next attempt (one digit, prefixed to scheduled members)
-- ARGV[6]      the queue's key prefix taskq:{q} (for its partitions' keys)
-- ARGV[7]      the current message's partition ('' for none): its slot is released
-- ARGV[8]      the next attempt's partition ('' for none)
-- KEYS[5]      taskq:{q}:outcomes (the record of recent outcomes)
-- KEYS[6]      taskq:{q}:history:<minute> (counts what ended this minute)
-- ARGV[9]      the next attempt's partition limit ('' for none)
-- ARGV[10..]   the failed attempt's outcome, as the worker reports it (see lib/outcomes.lua)
-- ARGV[#ARGV]  the due index (lib/due.lua; '' on a cluster), after the outcome
-- returns      1 when moved, 0 when this worker no longer held the message
--- @include lib/due.lua
--- @include lib/outcomes.lua
--- @include lib/partitions.lua
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
  return 0
end
if tonumber(ARGV[3]) <= tonumber(ARGV[4]) then
  if ARGV[8] ~= '' then
    part_push(ARGV[6], ARGV[5], ARGV[8], ARGV[9], {ARGV[2]}, 1, 1, false)
  else
    redis.call('LPUSH', KEYS[3], ARGV[2])
  end
  redis.call('LPUSH', KEYS[4], '1')
  redis.call('LTRIM', KEYS[4], 0, 0)
else
  -- Promotion reads the partition back from the payload.
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5] .. ARGV[2])
  due_lower(ARGV[#ARGV], KEYS[2], ARGV[3])
end
if ARGV[7] ~= '' then
  part_release(ARGV[6], ARGV[7], 1)
end
outcomes_record(KEYS[5], KEYS[6], ARGV, 10)
return 1
