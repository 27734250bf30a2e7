-- Deletes the oldest tool-call records made at or before a time, from the
-- head of the list (records are appended as they are made), at most a batch.
-- Answers how many it deleted.
-- KEYS: 1 the records (list of JSON, oldest first)
-- ARGV: 1 the time, in milliseconds of the host clock, 2 most to delete
local before, most = tonumber(ARGV[1]), tonumber(ARGV[2])
local deleted = 0
while deleted < most do
  local oldest = redis.call('LINDEX', KEYS[1], 0)
  if not oldest or cjson.decode(oldest).at_ms > before then break end
  redis.call('LPOP', KEYS[1])
  deleted = deleted + 1
end
return deleted
