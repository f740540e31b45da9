#!lua
-- Moves a held message to the queue's dead-letter list, capped by records and bytes. Fenced on it still being held.
--
-- KEYS[1]      taskq:{q}:processing:<worker>
-- KEYS[2]      taskq:{q}:dead
-- KEYS[3]      taskq:{q}:redeliveries (its count goes with it: a requeued dead letter starts
--              afresh instead of looking poisoned early)
-- KEYS[4]      taskq:{q}:dead-dropped (counts the oldest records the cap pushes out)
-- KEYS[5]      taskq:{q}:history:<minute> (counts what ended this minute)
-- KEYS[6]      taskq:{q}:dead-bytes (bytes the dead-letter list holds)
-- KEYS[7]      taskq:{q}:outcomes (the record of recent outcomes)
-- ARGV[1]      payload (as held)
-- ARGV[2]      dead letter record (JSON)
-- ARGV[3]      most dead letters kept
-- ARGV[4]      task id, or '' when unreadable
-- ARGV[5]      how long history is kept, ms
-- ARGV[6]      most bytes of dead letters kept
-- ARGV[7]      the queue's key prefix taskq:{q} (for its partitions' keys)
-- ARGV[8]      the message's partition ('' for none): its slot is released
-- ARGV[9..]    the run's outcome, as the worker reports it (see lib/outcomes.lua)
-- returns      {moved, dropped}: moved is 1, or 0 when this worker no longer held the message;
--              dropped is how many of the oldest dead letters the cap pushed out
--- @include lib/dead_letters.lua
--- @include lib/outcomes.lua
--- @include lib/partitions.lua
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
  return {0, 0}
end
if ARGV[8] ~= '' then
  part_release(ARGV[7], ARGV[8], 1)
end
if ARGV[4] ~= '' then
  redis.call('HDEL', KEYS[3], ARGV[4])
end
dead_push(KEYS[2], KEYS[6], ARGV[2])
redis.call('HINCRBY', KEYS[5], 'failed', 1)
redis.call('PEXPIRE', KEYS[5], ARGV[5])
outcomes_record(KEYS[7], KEYS[5], ARGV, 9)
return {1, dead_cap(KEYS[2], KEYS[6], KEYS[4], tonumber(ARGV[3]), tonumber(ARGV[6]))}
