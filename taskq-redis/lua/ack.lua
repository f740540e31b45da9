-- Removes finished messages from a worker's processing list. Fenced: a message that is no
-- longer there (recovered by a reaper) is not counted and nothing else changes. LREM scans from
-- the tail, where the oldest fetched messages (the ones that usually finish first) sit.
--
-- KEYS[1]      taskq:{q}:processing:<worker>
-- KEYS[2]      taskq:{q}:redeliveries
-- KEYS[3]      taskq:{q}:history:<minute> (counts what ended this minute)
-- ARGV[1]      how long history is kept, ms
-- ARGV[2..]    pairs: payload, task id ('' when unknown)
-- returns      number of messages that were still held
local acked = 0
local ids = {}
for i = 2, #ARGV, 2 do
  if redis.call('LREM', KEYS[1], -1, ARGV[i]) == 1 then
    acked = acked + 1
    if ARGV[i + 1] ~= '' then
      ids[#ids + 1] = ARGV[i + 1]
    end
  end
end
-- One call for the whole batch: the redelivery counts of finished messages are obsolete.
if #ids > 0 then
  redis.call('HDEL', KEYS[2], unpack(ids))
end
if acked > 0 then
  redis.call('HINCRBY', KEYS[3], 'processed', acked)
  redis.call('PEXPIRE', KEYS[3], ARGV[1])
end
return acked
