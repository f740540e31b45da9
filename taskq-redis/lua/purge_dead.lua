#!lua
-- purge_dead: deletes a queue's dead letters, all or those older than a cutoff, atomically.
--
-- KEYS[1]  taskq:{q}:dead (JSON records, newest first)
-- ARGV[1]  the cutoff as `YYYY-MM-DDTHH:MM:SS` followed by nine digits of nanoseconds, or ''
--          to delete every dead letter
-- returns  how many were deleted
--
-- Records are compared by their `at` field brought to the same form, so the fraction's length
-- does not matter. Unreadable records are kept. Order is not assumed (dead letters written by
-- hosts with different clocks need not be sorted): the list is filtered whole and rebuilt.
if ARGV[1] == '' then
  local count = redis.call('LLEN', KEYS[1])
  redis.call('DEL', KEYS[1])
  return count
end
local function comparable(at)
  local fraction = string.match(at, '^%.(%d+)', 20) or ''
  return string.sub(at, 1, 19) .. string.sub(fraction .. '000000000', 1, 9)
end
local kept, purged = {}, 0
for _, record in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local ok, letter = pcall(cjson.decode, record)
  if ok and type(letter) == 'table' and type(letter.at) == 'string'
      and comparable(letter.at) < ARGV[1] then
    purged = purged + 1
  else
    kept[#kept + 1] = record
  end
end
if purged > 0 then
  redis.call('DEL', KEYS[1])
  for first = 1, #kept, 1000 do
    redis.call('RPUSH', KEYS[1], unpack(kept, first, math.min(first + 999, #kept)))
  end
end
return purged
