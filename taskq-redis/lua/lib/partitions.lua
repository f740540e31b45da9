-- Shared by every script that makes a partitioned message ready, takes one, or ends one (put in
-- place of its `--- @include lib/partitions.lua` line when it is loaded). A queue's partitions
-- (docs/partitions.md, keys in docs/redis.md), under the queue's prefix `taskq:{q}`:
--   :part:<level>:<key>  LIST   ready messages of partition <key> at <level>, oldest at the right
--   :ring:<level>        LIST   turn order of <level>: partitions with ready messages there and
--                               room under their limit, each once; the right end is served next
--                               and goes back to the left. The member '' is the queue's
--                               unpartitioned messages, which take one turn like a partition.
--   :ringed              HASH   '<level>:<key>' -> 1 for every ring member (membership test)
--   :part-ready          HASH   key -> ready messages of the partition, all levels
--   :part-running        HASH   key -> messages of the partition held by workers
--   :part-limit          HASH   key -> most of the partition held at once
--   :part-total          STRING ready partitioned messages of the queue
-- Scripts name these keys from the prefix: partition keys are data, so no caller could list them
-- in KEYS. They share the queue's hash tag, so on a cluster they live in the script's slot.

local function part_list(prefix, level, key)
  return prefix .. ':part:' .. level .. ':' .. key
end

-- True when partition `key` holds as many messages as its limit allows.
local function part_at_limit(prefix, key)
  local limit = redis.call('HGET', prefix .. ':part-limit', key)
  if not limit then
    return false
  end
  return tonumber(redis.call('HGET', prefix .. ':part-running', key) or '0') >= tonumber(limit)
end

-- Puts `member` ('' for the unpartitioned messages) in `level`'s ring unless it is there.
local function part_ring(prefix, level, member)
  if redis.call('HSETNX', prefix .. ':ringed', level .. ':' .. member, 1) == 1 then
    redis.call('LPUSH', prefix .. ':ring:' .. level, member)
  end
end

-- Makes payloads[first..last] of partition `key` ready at `level`: behind its others, or ahead
-- of them when `front` (their order kept either way). `limit` ('' for none) sets the
-- partition's limit.
local function part_push(prefix, level, key, limit, payloads, first, last, front)
  if limit ~= nil and limit ~= '' then
    redis.call('HSET', prefix .. ':part-limit', key, limit)
  end
  local list = part_list(prefix, level, key)
  for at = first, last, 1000 do
    local upto = math.min(at + 999, last)
    if front then
      -- The first payload goes rightmost: it is the next one taken.
      local reversed = {}
      for i = upto, at, -1 do reversed[#reversed + 1] = payloads[i] end
      redis.call('RPUSH', list, unpack(reversed))
    else
      redis.call('LPUSH', list, unpack(payloads, at, upto))
    end
  end
  local count = last - first + 1
  redis.call('HINCRBY', prefix .. ':part-ready', key, count)
  redis.call('INCRBY', prefix .. ':part-total', count)
  if not part_at_limit(prefix, key) then
    part_ring(prefix, level, key)
  end
end

-- Reads a payload's partition and limit without decoding payloads that name none.
local function part_of(payload)
  if not string.find(payload, '"partition"', 1, true) then
    return nil, nil
  end
  local ok, message = pcall(cjson.decode, payload)
  if not ok or type(message) ~= 'table' or type(message.partition) ~= 'string'
      or message.partition == '' then
    return nil, nil
  end
  local limit = tonumber(message.partition_limit)
  if limit ~= nil and (limit ~= limit or limit < 1) then limit = nil end
  return message.partition, limit and tostring(math.floor(limit)) or ''
end

-- `count` messages of partition `key` left workers' hands (settled or recovered): a partition
-- that was at its limit takes turns again at every level where it has ready messages, and an
-- idle one is forgotten.
local function part_release(prefix, key, count)
  local running = redis.call('HINCRBY', prefix .. ':part-running', key, -count)
  if running <= 0 then
    redis.call('HDEL', prefix .. ':part-running', key)
    running = 0
  end
  local limit = tonumber(redis.call('HGET', prefix .. ':part-limit', key) or '')
  if limit and running < limit and running + count >= limit then
    for level = 0, 9 do
      if redis.call('EXISTS', part_list(prefix, level, key)) == 1 then
        part_ring(prefix, level, key)
      end
    end
  end
  if running == 0 and not redis.call('HGET', prefix .. ':part-ready', key) then
    redis.call('HDEL', prefix .. ':part-limit', key)
  end
end

-- Takes up to `max` messages at `level`, turn by turn: each turn (a partition, or '' for the
-- unpartitioned list `plain`) gives an equal share of what is left of the batch, at least one,
-- within its partition's room. Returns the payloads (oldest first within a turn) and the
-- partition of each ('' for unpartitioned).
local function part_take(prefix, level, plain, max)
  local ring = prefix .. ':ring:' .. level
  local ringed = prefix .. ':ringed'
  local running_key = prefix .. ':part-running'
  local ready_key = prefix .. ':part-ready'
  local payloads, partitions = {}, {}
  if redis.call('LLEN', plain) > 0 then
    part_ring(prefix, level, '')
  end
  local taken_partitioned = 0
  while #payloads < max do
    local turns = redis.call('LLEN', ring)
    if turns == 0 then break end
    local share = math.max(1, math.floor((max - #payloads) / turns))
    for _ = 1, turns do
      if #payloads >= max then break end
      local key = redis.call('LINDEX', ring, -1)
      -- `room`: what the partition's limit still allows (nil: no limit).
      local list, room = plain, nil
      if key ~= '' then
        list = part_list(prefix, level, key)
        local limit = redis.call('HGET', prefix .. ':part-limit', key)
        if limit then
          room = tonumber(limit) - tonumber(redis.call('HGET', running_key, key) or '0')
        end
      end
      local want = math.min(share, max - #payloads, room or share)
      local taken = want > 0 and redis.call('RPOP', list, want)
      if taken then
        for _, payload in ipairs(taken) do
          payloads[#payloads + 1] = payload
          partitions[#partitions + 1] = key
        end
        if key ~= '' then
          redis.call('HINCRBY', running_key, key, #taken)
          if redis.call('HINCRBY', ready_key, key, -#taken) <= 0 then
            redis.call('HDEL', ready_key, key)
          end
          taken_partitioned = taken_partitioned + #taken
          if room then room = room - #taken end
        end
      end
      if (room and room <= 0) or redis.call('EXISTS', list) == 0 then
        -- At its limit or out of messages here: out of the ring until that changes.
        redis.call('RPOP', ring)
        redis.call('HDEL', ringed, level .. ':' .. key)
      else
        redis.call('LMOVE', ring, ring, 'RIGHT', 'LEFT')
      end
    end
  end
  if taken_partitioned > 0 then
    redis.call('DECRBY', prefix .. ':part-total', taken_partitioned)
  end
  return payloads, partitions
end
