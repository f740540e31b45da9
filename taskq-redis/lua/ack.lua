-- Removes finished messages from a worker's processing list. Fenced: a message that is no
-- longer there (recovered by a reaper) is not counted and nothing else changes. LREM scans from
-- the tail, where the oldest fetched messages (the ones that usually finish first) sit.
--
-- KEYS[1]      taskq:{q}:processing:<worker>
-- KEYS[2]      taskq:{q}:redeliveries
-- KEYS[3]      taskq:{q}:history:<minute> (counts what ended this minute)
-- ARGV[1]      how long history is kept, ms
-- ARGV[2]      the queue's key prefix taskq:{q} (for its partitions' keys)
-- ARGV[3..]    triples: payload, task id ('' when unknown), partition ('' for none)
-- returns      number of messages that were still held
--- @include lib/partitions.lua
local acked = 0
local ids = {}
local released, order = {}, {}
for i = 3, #ARGV, 3 do
  if redis.call('LREM', KEYS[1], -1, ARGV[i]) == 1 then
    acked = acked + 1
    if ARGV[i + 1] ~= '' then
      ids[#ids + 1] = ARGV[i + 1]
    end
    local key = ARGV[i + 2]
    if key ~= '' then
      if not released[key] then order[#order + 1] = key end
      released[key] = (released[key] or 0) + 1
    end
  end
end
-- Each partition's slots come back once per call, whatever the batch holds of it.
for _, key in ipairs(order) do
  part_release(ARGV[2], key, released[key])
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
