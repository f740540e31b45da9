-- Shared by every script that adds or removes dead letters (put in place of its
-- `--- @include lib/dead_letters.lua` line when it is loaded): a queue's dead-letter list and
-- its byte count move together, so the list can be capped by bytes as well as by records.

-- Pushes one record, newest first, and counts its bytes.
local function dead_push(dead, bytes, record)
  redis.call('LPUSH', dead, record)
  redis.call('INCRBY', bytes, #record)
end

-- Uncounts records already removed from the list (a list written before the count existed is
-- under-counted: the count never goes below zero, and goes when it reaches it).
local function dead_uncount(bytes, removed)
  if removed > 0 and redis.call('DECRBY', bytes, removed) <= 0 then
    redis.call('DEL', bytes)
  end
end

-- Drops the oldest records until the list holds at most `max_records` and `max_bytes` (the
-- newest record always stays, whatever its size); counts the drops. Returns how many.
local function dead_cap(dead, bytes, dropped_key, max_records, max_bytes)
  local dropped, freed = 0, 0
  local over = redis.call('LLEN', dead) - max_records
  if over > 0 then
    for _, record in ipairs(redis.call('RPOP', dead, over)) do
      freed = freed + #record
    end
    dropped = over
  end
  local held = tonumber(redis.call('GET', bytes) or '0') - freed
  while held > max_bytes and redis.call('LLEN', dead) > 1 do
    local record = redis.call('RPOP', dead)
    held = held - #record
    freed = freed + #record
    dropped = dropped + 1
  end
  dead_uncount(bytes, freed)
  if dropped > 0 then
    redis.call('INCRBY', dropped_key, dropped)
  end
  return dropped
end

