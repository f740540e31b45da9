#!lua flags=no-writes
-- find_dead: one dead letter by task id, without sending the list to the client.
--
-- KEYS[1]  the queue's dead-letter list (newest first, capped)
-- ARGV[1]  the task id (UUID text)
--
-- Returns the record (JSON text), or false when no dead letter has that id. Scans in chunks on
-- the server; the list is capped, so the scan is bounded.
local needle = '"id":"' .. ARGV[1] .. '"'
local chunk = 256
local start = 0
while true do
    local records = redis.call('LRANGE', KEYS[1], start, start + chunk - 1)
    if #records == 0 then
        return false
    end
    for _, record in ipairs(records) do
        if string.find(record, needle, 1, true) then
            return record
        end
    end
    start = start + chunk
end
