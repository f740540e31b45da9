#!lua
-- Writes again the due index's entries of sets a pass has just served (lib/due.lua): each
-- set's earliest score, or no entry for an empty set. One server only (the index has no slot
-- of a queue's).
--
-- KEYS[1]      taskq:due
-- KEYS[2..]    the sets: taskq:{q}:workers after a reaper pass, a forgotten queue's sets
-- returns      the number of sets settled
--- @include lib/due.lua
for i = 2, #KEYS do
  due_settle(KEYS[1], KEYS[i])
end
return #KEYS - 1
