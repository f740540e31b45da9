#!lua flags=no-writes
-- pending_page: one page of a queue's ready messages in the order workers take them: highest
-- level first, oldest (the list's tail) first within a level. Reads only what the page needs.
--
-- KEYS[1..L]  taskq:{q}:pending:<level>, highest level first
-- ARGV[1]     entries to skip
-- ARGV[2]     most entries to return
-- ARGV[3]     the queue's key prefix taskq:{q}: within a level, each partition's messages
--             follow the unpartitioned ones, partitions by key (not the exact order of turns)
-- returns     the payloads
--- @include lib/partitions.lua
local skip = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local page = {}
local prefix = ARGV[3]
local partitions = part_known(prefix)
local lists = {}
for i, key in ipairs(KEYS) do
  lists[#lists + 1] = key
  local level = #KEYS - i
  for _, partition in ipairs(partitions) do
    lists[#lists + 1] = prefix .. ':part:' .. level .. ':' .. partition
  end
end
for _, key in ipairs(lists) do
  if want <= 0 then
    break
  end
  local len = redis.call('LLEN', key)
  if skip >= len then
    skip = skip - len
  else
    -- Oldest at the tail: entry i from the tail is index -1 - i.
    local first = -1 - skip
    local last = math.max(-len, first - want + 1)
    local slice = redis.call('LRANGE', key, last, first)
    for i = #slice, 1, -1 do
      page[#page + 1] = slice[i]
    end
    want = want - #slice
    skip = 0
  end
end
return page
