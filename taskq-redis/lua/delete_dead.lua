#!lua
-- delete_dead: deletes the dead letters with the given task ids, scanning the capped list in
-- chunks on the server.
--
-- KEYS[1]  taskq:{q}:dead
-- KEYS[2]  taskq:{q}:dead-bytes (bytes the dead-letter list holds)
-- ARGV     task ids (UUID text)
-- returns  how many were deleted
--- @include lib/dead_letters.lua
local deleted = 0
for _, id in ipairs(ARGV) do
  local needle = '"id":"' .. id .. '"'
  local start = 0
  local found = nil
  while not found do
    local records = redis.call('LRANGE', KEYS[1], start, start + 255)
    if #records == 0 then
      break
    end
    for _, record in ipairs(records) do
      if string.find(record, needle, 1, true) then
        found = record
        break
      end
    end
    start = start + 256
  end
  if found and redis.call('LREM', KEYS[1], 1, found) == 1 then
    deleted = deleted + 1
    dead_uncount(KEYS[2], #found)
  end
end
return deleted
