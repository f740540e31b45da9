#!lua
-- purge_queue: removes every waiting message of one queue (pending and scheduled), atomically;
-- messages being processed are left alone. A script rather than a MULTI: it runs whole on one
-- node during a cluster reshard, and a user the ACL forbids it gets one clean NOPERM.
--
-- KEYS[1..#KEYS-1]  taskq:{q}:pending:0 .. pending:9
-- KEYS[#KEYS]       taskq:{q}:scheduled
-- returns           how many messages were removed
local removed = redis.call('ZCARD', KEYS[#KEYS])
for i = 1, #KEYS - 1 do
  removed = removed + redis.call('LLEN', KEYS[i])
end
redis.call('DEL', unpack(KEYS))
return removed
