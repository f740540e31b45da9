#!lua
-- purge_dead: deletes a queue's dead letters, all or those older than a cutoff, atomically.
--
-- KEYS[1]  taskq:{q}:dead (JSON records, newest first)
-- KEYS[2]  taskq:{q}:dead-bytes (bytes the dead-letter list holds)
-- ARGV[1]  the cutoff as `YYYY-MM-DDTHH:MM:SS` followed by nine digits of nanoseconds, or ''
--          to delete every dead letter
-- returns  how many were deleted
--
-- Records are compared by their `at` field brought to the same form, so the fraction's length
-- does not matter. Unreadable records are kept. Order is not assumed (dead letters written by
-- hosts with different clocks need not be sorted): the list is filtered whole and rebuilt.
if ARGV[1] == '' then
  local count = redis.call('LLEN', KEYS[1])
  redis.call('DEL', KEYS[1], KEYS[2])
  return count
end
local function comparable(at)
  local fraction = string.match(at, '^%.(%d+)', 20) or ''
  return string.sub(at, 1, 19) .. string.sub(fraction .. '000000000', 1, 9)
end
local kept, purged, kept_bytes = {}, 0, 0
for _, record in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local ok, letter = pcall(cjson.decode, record)
  if ok and type(letter) == 'table' and type(letter.at) == 'string'
      and comparable(letter.at) < ARGV[1] then
    purged = purged + 1
  else
    kept[#kept + 1] = record
    kept_bytes = kept_bytes + #record
  end
end
if purged > 0 then
  -- Rebuilt whole, so the byte count is exact again (even for a list older than the count).
  redis.call('DEL', KEYS[1], KEYS[2])
  if kept_bytes > 0 then
    redis.call('SET', KEYS[2], kept_bytes)
  end
  for first = 1, #kept, 1000 do
    redis.call('RPUSH', KEYS[1], unpack(kept, first, math.min(first + 999, #kept)))
  end
end
return purged
