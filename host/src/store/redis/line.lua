-- Reads a session's line from its latest snapshot at or before a turn
-- through that turn (or the latest turn, if that comes first), in turn
-- order. Answers as events.lua does.
-- KEYS: 1 the session's record (hash), 2 its line (hash: turn -> event
--       number), 3 the turns of the line's snapshots (sorted set),
--       4 its events (hash)
-- ARGV: 1 the turn
local answer = {}
local latest = redis.call('HGET', KEYS[1], 'turn')
if not latest then return answer end
local turn = math.min(tonumber(ARGV[1]), tonumber(latest))
local from = redis.call('ZREVRANGEBYSCORE', KEYS[3], turn, '-inf', 'LIMIT', 0, 1)[1]
if not from then return answer end
for at = tonumber(from), turn do
  local seq = redis.call('HGET', KEYS[2], at)
  if seq then
    answer[#answer + 1] = seq
    answer[#answer + 1] = redis.call('HGET', KEYS[4], seq)
    answer[#answer + 1] = '0'
  end
end
return answer
