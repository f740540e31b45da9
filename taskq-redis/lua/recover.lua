#!lua
-- Recovers one lost worker's processing list of one queue, if and only if its liveness deadline
-- has passed and nobody recovered it yet (the ZREM is the claim). Messages go back to the head
-- of their pending level, oldest fetched first; one recovered more than ARGV[3] times goes to
-- dead letters as `worker_lost` (poison message).
--
-- KEYS[1]      taskq:{q}:workers (worker -> liveness deadline, ms)
-- KEYS[2]      taskq:{q}:processing:<worker>
-- KEYS[3]      taskq:{q}:redeliveries (task id -> times recovered)
-- KEYS[4]      taskq:{q}:dead
-- KEYS[5]      taskq:{q}:dead-dropped (counts the oldest dead letters the cap pushes out)
-- KEYS[6]      taskq:{q}:holders (workers with a processing list)
-- KEYS[7]      taskq:{q}:dead-bytes (bytes the dead-letter list holds)
-- KEYS[8..]    taskq:{q}:pending:0 .. taskq:{q}:pending:<L-1> (L priority levels: #KEYS - 8)
-- KEYS[#KEYS]  taskq:{q}:wake (a token for one idle worker)
-- ARGV[1]      worker id
-- ARGV[2]      now, ms since the epoch
-- ARGV[3]      most recoveries before a message is dead-lettered
-- ARGV[4]      most dead letters kept
-- ARGV[5]      now, RFC 3339 (for dead letter records)
-- ARGV[6]      queue name
-- ARGV[7]      '0' for a lost worker (its deadline must have passed); '1' to skip the deadline
--              check and the counting (a worker deregistering itself); '2' for an orphaned list
--              (its worker must hold no lease at all)
-- ARGV[8]      most bytes of dead letters kept
-- ARGV[9]      the queue's key prefix taskq:{q} (for its partitions' keys)
-- returns      {requeued, dead_lettered, {id, payload, id, payload, ...}}: with the ids and
--              payloads of the messages dead-lettered as poison (those with an id), or {-1, 0, {}} when the
--              worker is alive or already recovered
--- @include lib/dead_letters.lua
--- @include lib/partitions.lua
local top_level = #KEYS - 9
local bytes_key = KEYS[7]
local wake = KEYS[#KEYS]
local force = ARGV[7] == '1'
local deadline = redis.call('ZSCORE', KEYS[1], ARGV[1])
if ARGV[7] == '2' then
  if deadline then
    return {-1, 0, {}}
  end
elseif not force then
  if not deadline or tonumber(deadline) >= tonumber(ARGV[2]) then
    return {-1, 0, {}}
  end
end
redis.call('ZREM', KEYS[1], ARGV[1])
local held = redis.call('LRANGE', KEYS[2], 0, -1)
local requeued, dead = 0, 0
local poisoned = {}
-- Partition -> its messages this list held: their slots come back with them, not earlier.
local released, order = {}, {}
for _, payload in ipairs(held) do
  local ok, message = pcall(cjson.decode, payload)
  if not ok or type(message) ~= 'table' then message = {} end
  local id = type(message.id) == 'string' and message.id or nil
  local level = math.floor(tonumber(message.priority) or 0)
  -- NaN (cjson reads `NaN`) compares false with everything: without this check it would reach
  -- KEYS[8 + NaN] and fail the script after its first writes, stranding the rest.
  if level ~= level or level < 0 then level = 0 elseif level > top_level then level = top_level end
  local count = 0
  if not force then
    count = redis.call('HINCRBY', KEYS[3], id or redis.sha1hex(payload), 1)
  end
  if count > tonumber(ARGV[3]) then
    redis.call('HDEL', KEYS[3], id or redis.sha1hex(payload))
    local letter = {queue = ARGV[6], reason = 'worker_lost', worker = ARGV[1], at = ARGV[5],
      error = 'recovered from lost workers ' .. count .. ' times', payload = payload}
    if id then
      letter.id = id
      poisoned[#poisoned + 1] = id
      poisoned[#poisoned + 1] = payload
    end
    dead_push(KEYS[4], bytes_key, cjson.encode(letter))
    dead = dead + 1
  else
    local key = type(message.partition) == 'string' and message.partition ~= '' and message.partition
    if key then
      part_push(ARGV[9], level, key, nil, {payload}, 1, 1, true)
    else
      redis.call('RPUSH', KEYS[8 + level], payload)
    end
    requeued = requeued + 1
  end
  -- A message holds a slot when its partition has a limit; each carries it (recovery cannot
  -- ask the fetch that took it).
  if type(message.partition) == 'string' and message.partition ~= ''
      and tonumber(message.partition_limit) then
    local key = message.partition
    if not released[key] then order[#order + 1] = key end
    released[key] = (released[key] or 0) + 1
  end
end
for _, key in ipairs(order) do
  part_release(ARGV[9], key, released[key])
end
if dead > 0 then
  dead_cap(KEYS[4], bytes_key, KEYS[5], tonumber(ARGV[4]), tonumber(ARGV[8]))
end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[6], ARGV[1])
if requeued > 0 then
  redis.call('LPUSH', wake, '1')
  redis.call('LTRIM', wake, 0, 0)
end
return {requeued, dead, poisoned}
