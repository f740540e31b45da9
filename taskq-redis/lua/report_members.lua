#!lua
-- report_members: records how members of one group ended (the first report per member wins,
-- so redelivered and duplicated members count once) and says what the group's state became.
--
-- KEYS[1]  taskq:workflow:{<group>}          the group's record (JSON)
-- KEYS[2]  taskq:workflow:{<group>}:done     member index -> outcome (JSON)
-- KEYS[3]  taskq:workflow:{<group>}:failed   set once, by the group's first failure
-- ARGV[1]  time to live, ms (the record's is extended to it when shorter)
-- ARGV[2]  how many members the group has
-- ARGV[3..] triples: member index, outcome (JSON), '1' when the outcome is a failure
-- returns  {0} while members are missing (or the group is unknown),
--          {1, record, outcome} when this call recorded the group's first failure,
--          {2, record, {index, outcome, ...}} once every member has reported
local record = redis.call('GET', KEYS[1])
if not record then
  return {0}
end
-- A group lives at least as long as its reporting members' results (the producer's TTL may be
-- shorter than the workers').
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
local first_failure = nil
for i = 3, #ARGV - 2, 3 do
  local new = redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1])
  if new == 1 and ARGV[i + 2] == '1' and not first_failure then
    first_failure = ARGV[i + 1]
  end
end
redis.call('PEXPIRE', KEYS[2], ARGV[1])
if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[2]) then
  return {2, record, redis.call('HGETALL', KEYS[2])}
end
if first_failure and redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[1]) then
  return {1, record, first_failure}
end
return {0}
