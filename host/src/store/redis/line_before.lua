-- Reads the events that stood on a session's line, for a number of turns
-- before an event's, when that event was appended: per turn, the latest
-- event numbered below it that is not a rewind, in turn order. While the
-- line still holds the turn's event below the number reached, that is the
-- one; where a rewind has since taken the line elsewhere, the earlier
-- events are searched, newest first, for a rewound one of the turn (a
-- rewind is neither on the line nor rewound). Answers as events.lua does.
-- KEYS: 1 the log (sorted set of event numbers), 2 the events (hash),
--       3 the line (hash: turn -> event number), 4 the rewound events (set)
-- ARGV: 1 the event's number, 2 its turn, 3 how many turns
local found = {}
local below = tonumber(ARGV[1])
local turn = tonumber(ARGV[2]) - 1
local last = math.max(tonumber(ARGV[2]) - tonumber(ARGV[3]), 0)
-- The events below the first number, newest first, read once: each search
-- goes on below the event the one before found.
local earlier, at = nil, 1
while turn >= last do
  local seq = tonumber(redis.call('HGET', KEYS[3], turn))
  local event
  if seq and seq < below then
    event = redis.call('HGET', KEYS[2], seq)
  else
    seq = nil
    earlier = earlier or redis.call('ZREVRANGEBYSCORE', KEYS[1], '(' .. below, '-inf')
    while at <= #earlier do
      local candidate = earlier[at]
      at = at + 1
      local stored = tonumber(candidate) < below and redis.call('HGET', KEYS[2], candidate)
      if stored and tonumber(string.match(stored, '^%d+')) == turn
          and redis.call('SISMEMBER', KEYS[4], candidate) == 1 then
        seq, event = tonumber(candidate), stored
        break
      end
    end
  end
  if not seq then break end
  found[#found + 1] = {seq, event}
  below = seq
  turn = turn - 1
end
local answer = {}
for i = #found, 1, -1 do
  local seq = found[i][1]
  answer[#answer + 1] = tostring(seq)
  answer[#answer + 1] = found[i][2]
  answer[#answer + 1] = tostring(redis.call('SISMEMBER', KEYS[4], seq))
end
return answer
