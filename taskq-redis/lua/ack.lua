-- Removes finished messages from a worker's processing list. Fenced: a message that is no
-- longer there (recovered by a reaper) is not counted and nothing else changes. LREM scans from
-- the tail, where the oldest fetched messages (the ones that usually finish first) sit.
--
-- KEYS[1]      taskq:{q}:processing:<worker>
-- KEYS[2]      taskq:{q}:redeliveries
-- KEYS[3]      taskq:{q}:history:<minute> (counts what ended this minute)
-- KEYS[4]      taskq:{q}:outcomes (the record of recent outcomes)
-- ARGV[1]      how long history is kept, ms
-- ARGV[2]      the queue's key prefix taskq:{q} (for its partitions' keys)
-- ARGV[3]      number of messages, n
-- ARGV[4..]    n pairs: payload, task id ('' when unknown); then the outcomes the worker
--              reports (see lib/outcomes.lua); then triples for the messages that hold a
--              slot of their partition's limit: payload, partition, 1
-- returns      number of messages that were still held
--- @include lib/outcomes.lua
--- @include lib/partitions.lua
local acked = 0
local ids = {}
local last = 3 + 2 * tonumber(ARGV[3])
-- A run reported here ran, whether or not its message was still held: it is recorded.
local slots = outcomes_record(KEYS[4], KEYS[3], ARGV, last + 1)
-- Which messages were still held matters only when some hold a slot.
local held = #ARGV >= slots and {} or nil
for i = 4, last, 2 do
  if redis.call('LREM', KEYS[1], -1, ARGV[i]) == 1 then
    acked = acked + 1
    if held then held[ARGV[i]] = true end
    if ARGV[i + 1] ~= '' then
      ids[#ids + 1] = ARGV[i + 1]
    end
  end
end
-- Slots come back only for messages this worker still held (fenced like the ack itself),
-- once per partition and call.
local released, order = {}, {}
for i = slots, #ARGV, 3 do
  local key = ARGV[i + 1]
  if held and held[ARGV[i]] then
    if not released[key] then order[#order + 1] = key end
    released[key] = (released[key] or 0) + 1
  end
end
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
