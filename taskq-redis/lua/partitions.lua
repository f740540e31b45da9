#!lua flags=no-writes
-- partitions: one queue's partitions with work, for operators: ready messages (every level),
-- messages held under the partition's limit, and the limit. Reads only.
--
-- KEYS[1]      taskq:{q}:part-ready: names the queue's slot, so that a cluster runs the script
--              where the queue lives; the partitions' keys are named from the prefix (they are
--              data), all in that slot (lib/partitions.lua)
-- ARGV[1]      the queue's key prefix taskq:{q}
-- ARGV[2]      number of priority levels
-- ARGV[3]      most partitions looked at (by key order)
-- returns      flat {key, pending, running, limit (-1: none), ...}
--- @include lib/partitions.lua
local prefix, levels, most = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local keys = part_known(prefix)
local seen = {}
for _, key in ipairs(keys) do seen[key] = true end
for _, key in ipairs(redis.call('HKEYS', prefix .. ':part-running')) do
  if not seen[key] then keys[#keys + 1] = key end
end
local out = {}
for i, key in ipairs(keys) do
  if i > most then break end
  local pending = 0
  for level = 0, levels - 1 do
    pending = pending + redis.call('LLEN', prefix .. ':part:' .. level .. ':' .. key)
  end
  local running = tonumber(redis.call('HGET', prefix .. ':part-running', key) or '0')
  local limit = tonumber(redis.call('HGET', prefix .. ':part-limit', key) or '-1')
  if pending > 0 or running > 0 then
    out[#out + 1] = key
    out[#out + 1] = pending
    out[#out + 1] = running
    out[#out + 1] = limit
  end
end
return out
