-- Shared by every script that makes a partitioned message ready, takes one, or ends one (put in
-- place of its `--- @include lib/partitions.lua` line when it is loaded). A queue's partitions
-- (docs/partitions.md, keys in docs/redis.md), under the queue's prefix `taskq:{q}`:
--   :part:<level>:<key>  LIST   ready messages of partition <key> at <level>, oldest at the right
--   :ring:<level>        LIST   turn order of <level>: partitions with ready messages there and
--                               room under their limit, each once; the right end is served next
--                               and goes back to the left. The member '' is the queue's
--                               unpartitioned messages, which take one turn like a partition.
--   :ringed              HASH   '<level>:<key>' -> 1 for every ring member (membership test)
--   :part-ready          HASH   key -> ready messages of a partition with a limit, all levels
--                               (a partition at its limit is in no ring: this finds it)
--   :part-running        HASH   key -> messages of a partition with a limit held by workers
--   :part-limit          HASH   key -> most of the partition held at once
--   :part-total          STRING ready partitioned messages of the queue
-- Scripts name these keys from the prefix: partition keys are data, so no caller could list them
-- in KEYS. They share the queue's hash tag, so on a cluster they live in the script's slot.
-- Every partition with ready messages is in `ringed` (at each level where it has some) or, when
-- it has a limit, in `part-ready`: operators' scripts find them there. Partitions without a
-- limit cost no count per message.

local function part_list(prefix, level, key)
  return prefix .. ':part:' .. level .. ':' .. key
end

-- Every partition that may have ready messages, sorted: `ringed` names each at the levels
-- where it has some, `part-ready` those with a limit (found there also while at their limit).
local function part_known(prefix)
  local seen, keys = {}, {}
  local function add(key)
    if key and key ~= '' and not seen[key] then
      seen[key] = true
      keys[#keys + 1] = key
    end
  end
  for _, field in ipairs(redis.call('HKEYS', prefix .. ':ringed')) do
    add(string.match(field, '^%d+:(.*)$'))
  end
  for _, key in ipairs(redis.call('HKEYS', prefix .. ':part-ready')) do
    add(key)
  end
  table.sort(keys)
  return keys
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
  redis.call('INCRBY', prefix .. ':part-total', count)
  local limit_now = redis.call('HGET', prefix .. ':part-limit', key)
  if limit_now then
    redis.call('HINCRBY', prefix .. ':part-ready', key, count)
  end
  if not limit_now
      or tonumber(redis.call('HGET', prefix .. ':part-running', key) or '0') < tonumber(limit_now) then
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

-- Makes a payload read back from the scheduled set or dead letters ready at `level`: into its
-- partition when it names one, else at the tail of the unpartitioned list `plain`.
local function part_make_ready(prefix, level, payload, plain)
  local key, limit = part_of(payload)
  if key then
    part_push(prefix, level, key, limit, {payload}, 1, 1, false)
  else
    redis.call('LPUSH', plain, payload)
  end
end

-- `count` messages of partition `key` left workers' hands (settled or recovered): a partition
-- that was at its limit takes turns again at every level where it has ready messages, and wakes
-- an idle worker for them (`:wake`; without the token its next message waited for a blocked
-- fetch to time out, a second per message of a partition with a limit of one); an idle
-- partition is forgotten.
local function part_release(prefix, key, count)
  local running = redis.call('HINCRBY', prefix .. ':part-running', key, -count)
  if running <= 0 then
    redis.call('HDEL', prefix .. ':part-running', key)
    running = 0
  end
  local limit = tonumber(redis.call('HGET', prefix .. ':part-limit', key) or '')
  if limit and running < limit and running + count >= limit then
    local ready = false
    for level = 0, 9 do
      if redis.call('EXISTS', part_list(prefix, level, key)) == 1 then
        part_ring(prefix, level, key)
        ready = true
      end
    end
    if ready then
      redis.call('LPUSH', prefix .. ':wake', '1')
      redis.call('LTRIM', prefix .. ':wake', 0, 0)
    end
  end
  if running == 0 and not redis.call('HGET', prefix .. ':part-ready', key) then
    redis.call('HDEL', prefix .. ':part-limit', key)
  end
end

-- What a turn takes when more turns wait than the fetch has room for (else each gets an equal
-- share of the batch): a turn of one meant one `RPOP` per message, the drain's cost over 1,000
-- partitions; a turn of two halves those calls (Redis spends 9 % less per task there,
-- docs/performance.md) while a partition still waits for at most two messages of each other.
local TURN_LEAST = 2

-- Takes up to `max` messages at `level`, turn by turn: each turn (a partition, or '' for the
-- unpartitioned list `plain`) gives an equal share of what is left of the batch, TURN_LEAST
-- when that share is less than one, within its partition's room. Returns the payloads (oldest
-- first within a turn), the partition of each ('' for unpartitioned), and for each 1 when it
-- holds one of its partition's slots (the partition has a limit; only those are counted, and
-- only those are released).
local function part_take(prefix, level, plain, max)
  local ring = prefix .. ':ring:' .. level
  local ringed = prefix .. ':ringed'
  local running_key = prefix .. ':part-running'
  local ready_key = prefix .. ':part-ready'
  local payloads, partitions, slots = {}, {}, {}
  if redis.call('LLEN', plain) > 0 then
    part_ring(prefix, level, '')
  elseif redis.call('EXISTS', ring) == 0 then
    -- Nothing ready at this level (most levels of a partitioned queue).
    return payloads, partitions, slots
  end
  local taken_partitioned = 0
  -- A queue none of whose partitions has a limit needs no limit lookups.
  local limits = redis.call('HLEN', prefix .. ':part-limit') > 0
  -- Every partition list of this level is this prefix and its key (one concatenation a turn).
  local lists = part_list(prefix, level, '')
  while #payloads < max do
    local turns = redis.call('LLEN', ring)
    if turns == 0 then break end
    local share = math.floor((max - #payloads) / turns)
    if share == 0 then share = TURN_LEAST end
    -- The next turns, read and cut from the right end in two calls (not one rotation per
    -- turn); those that keep their turn go back to the left end below, in the order served.
    local visits = math.min(turns, max - #payloads)
    local visiting = redis.call('LRANGE', ring, -visits, -1)
    redis.call('LTRIM', ring, 0, -visits - 1)
    local rotated = {}
    local next_visit = #visiting
    while next_visit >= 1 do
      if #payloads >= max then break end
      local key = visiting[next_visit]
      next_visit = next_visit - 1
      -- `room`: what the partition's limit still allows (nil: no limit).
      local list, room = plain, nil
      if key ~= '' then
        list = lists .. key
        local limit = limits and redis.call('HGET', prefix .. ':part-limit', key)
        if limit then
          room = tonumber(limit) - tonumber(redis.call('HGET', running_key, key) or '0')
        end
      end
      local want = math.min(share, max - #payloads, room or share)
      local taken = false
      if want == 1 then
        -- Without a count RPOP answers one string, several times cheaper than an array of one.
        local one = redis.call('RPOP', list)
        taken = one and {one}
      elseif want > 1 then
        taken = redis.call('RPOP', list, want)
      end
      -- Whether the list is empty now, as far as known without asking: the pop came up short,
      -- or took the partition's last ready message. A list emptied otherwise (its partition
      -- has messages at other levels) keeps its turn until the next visit finds it empty: one
      -- wasted visit, instead of a question on every visit.
      local emptied = false
      if not taken then
        emptied = true
      else
        local slot = room and 1 or 0
        for _, payload in ipairs(taken) do
          payloads[#payloads + 1] = payload
          partitions[#partitions + 1] = key
          slots[#slots + 1] = slot
        end
        if #taken < want then emptied = true end
        if key ~= '' then
          if room then
            redis.call('HINCRBY', running_key, key, #taken)
            room = room - #taken
            if redis.call('HINCRBY', ready_key, key, -#taken) <= 0 then
              redis.call('HDEL', ready_key, key)
              emptied = true
            end
          end
          taken_partitioned = taken_partitioned + #taken
        end
      end
      if emptied or (room ~= nil and room <= 0) then
        -- At its limit or out of messages here: out of the ring until that changes.
        redis.call('HDEL', ringed, level .. ':' .. key)
      else
        rotated[#rotated + 1] = key
      end
    end
    if next_visit >= 1 then
      -- The batch filled first: the turns not visited go back to the right end, in order.
      redis.call('RPUSH', ring, unpack(visiting, 1, next_visit))
    end
    if #rotated > 0 then
      redis.call('LPUSH', ring, unpack(rotated))
    end
  end
  if taken_partitioned > 0 then
    redis.call('DECRBY', prefix .. ':part-total', taken_partitioned)
  end
  return payloads, partitions, slots
end
