-- Reads a page of a session's log: up to a number of events numbered after
-- a given one, oldest first, and none after the one that brings the page's
-- bytes to a budget. Answers a flat array, three items per event: its
-- number, 'TURN BODY', and '1' if it was rewound, else '0'.
-- KEYS: 1 the log (sorted set of event numbers), 2 the events (hash),
--       3 the rewound events (set)
-- ARGV: 1 the number to read after, 2 most events, 3 most bytes
local answer = {}
local budget = tonumber(ARGV[3])
local bytes = 0
local seqs = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'LIMIT', 0, ARGV[2])
for _, seq in ipairs(seqs) do
  if bytes >= budget then break end
  local body = redis.call('HGET', KEYS[2], seq)
  bytes = bytes + #body
  answer[#answer + 1] = seq
  answer[#answer + 1] = body
  answer[#answer + 1] = tostring(redis.call('SISMEMBER', KEYS[3], seq))
end
return answer
