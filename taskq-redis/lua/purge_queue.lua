#!lua
-- purge_queue: removes every waiting message of one queue (pending and scheduled), atomically;
-- messages being processed are left alone. A script rather than a MULTI: it runs whole on one
-- node during a cluster reshard, and a user the ACL forbids it gets one clean NOPERM.
--
-- KEYS[1..#KEYS-1]  taskq:{q}:pending:0 .. pending:9
-- KEYS[#KEYS]       taskq:{q}:scheduled
-- ARGV[1]           the queue's key prefix taskq:{q} (for its partitions' keys)
-- returns           how many messages were removed
--- @include lib/partitions.lua
local removed = redis.call('ZCARD', KEYS[#KEYS])
for i = 1, #KEYS - 1 do
  removed = removed + redis.call('LLEN', KEYS[i])
end
redis.call('DEL', unpack(KEYS))
-- Ready partitioned messages, named through the partitions that have some. Running counts and
-- limits stay: those messages are still held, and their settles release them.
local prefix = ARGV[1]
for _, key in ipairs(part_known(prefix)) do
  for level = 0, #KEYS - 2 do
    local list = prefix .. ':part:' .. level .. ':' .. key
    removed = removed + redis.call('LLEN', list)
    redis.call('DEL', list)
  end
  if not redis.call('HGET', prefix .. ':part-running', key) then
    redis.call('HDEL', prefix .. ':part-limit', key)
  end
end
redis.call('DEL', prefix .. ':part-ready', prefix .. ':part-total', prefix .. ':ringed')
for level = 0, #KEYS - 2 do
  redis.call('DEL', prefix .. ':ring:' .. level)
end
return removed
