-- Creates a session or commits one of its turns, with its history and the
-- event it appends to its log, atomically, then trims the history to its cap
-- (the newest message always stays).
-- Publishes the commit on `agentbox:commits` as JSON ({seq, session, plugin,
-- owner}) for the other processes of the store.
-- Answers a tagged array: {'done'} and, for a commit, the plugin that served
-- the session until now ({'done', PLUGIN}), {'exists'}, {'missing'} or
-- {'conflict', REVISION}.
-- KEYS: 1 the session's record (hash), 2 its history (list of JSON messages),
--       3 its log (sorted set of event numbers), 4 its events (hash: number
--       -> 'TURN BODY'), 5 its line (hash: turn -> event number), 6 the
--       turns of the line's snapshots (sorted set), 7 its rewound events (set)
-- ARGV: 1 'create' or the revision the turn read, 2 most messages kept,
--       3 most bytes of content kept, 4 number of record field arguments
--       that follow the event (name, value, ...), 5 the event's turn,
--       6 'snapshot' if the event holds a snapshot, 'rewind' if it sets the
--       session back to its turn, else '', 7 the event, 8 how many of the
--       newest messages to drop before appending, then the fields, then the
--       messages to append.
local fields = tonumber(ARGV[4])
local first_field = 9
local stored = redis.call('HGET', KEYS[1], 'revision')
if ARGV[1] == 'create' then
  if stored then return {'exists'} end
elseif not stored then
  return {'missing'}
elseif stored ~= ARGV[1] then
  return {'conflict', stored}
end
local function content_bytes(message)
  return string.len(cjson.decode(message).content)
end
local served = redis.call('HGET', KEYS[1], 'plugin')
local latest = redis.call('HGET', KEYS[1], 'turn')
redis.call('HSET', KEYS[1], unpack(ARGV, first_field, first_field - 1 + fields))
if ARGV[1] ~= 'create' then redis.call('HINCRBY', KEYS[1], 'revision', 1) end

-- The event, numbered by the revision just made: on the line, or for a
-- rewind, taking the events of later turns off it.
local seq = redis.call('HGET', KEYS[1], 'revision')
local turn = tonumber(ARGV[5])
if ARGV[6] == 'rewind' then
  for later = turn + 1, tonumber(latest or ARGV[5]) do
    local displaced = redis.call('HGET', KEYS[5], later)
    if displaced then
      redis.call('SADD', KEYS[7], displaced)
      redis.call('HDEL', KEYS[5], later)
    end
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '(' .. turn, '+inf')
else
  redis.call('HSET', KEYS[5], turn, seq)
  if ARGV[6] == 'snapshot' then redis.call('ZADD', KEYS[6], turn, turn) end
end
redis.call('ZADD', KEYS[3], seq, seq)
redis.call('HSET', KEYS[4], seq, ARGV[5] .. ' ' .. ARGV[7])
redis.call('HINCRBY', KEYS[1], 'log_bytes', string.len(ARGV[7]))

local bytes = tonumber(redis.call('HGET', KEYS[1], 'history_bytes') or '0')
local dropped = tonumber(ARGV[8])
if dropped > 0 then
  for _ = 1, dropped do
    local message = redis.call('RPOP', KEYS[2])
    if not message then break end
    bytes = bytes - content_bytes(message)
  end
  if bytes < 0 then bytes = 0 end
  redis.call('HSET', KEYS[1], 'history_bytes', bytes)
end
local first_message = first_field + fields
if #ARGV >= first_message then
  redis.call('RPUSH', KEYS[2], unpack(ARGV, first_message, #ARGV))
  local added = 0
  for i = first_message, #ARGV do added = added + content_bytes(ARGV[i]) end
  bytes = redis.call('HINCRBY', KEYS[1], 'history_bytes', added)
  local most, most_bytes = tonumber(ARGV[2]), tonumber(ARGV[3])
  local kept = redis.call('LLEN', KEYS[2])
  if kept > most or bytes > most_bytes then
    while kept > 1 and (kept > most or bytes > most_bytes) do
      bytes = bytes - content_bytes(redis.call('LPOP', KEYS[2]))
      kept = kept - 1
    end
    if bytes < 0 then bytes = 0 end
    redis.call('HSET', KEYS[1], 'history_bytes', bytes)
  end
end

-- Every process of the store hears of the commit.
local told = redis.call('HMGET', KEYS[1], 'id', 'plugin', 'owner')
redis.call('PUBLISH', 'agentbox:commits', cjson.encode({
  seq = tonumber(seq), session = told[1], plugin = told[2], owner = told[3] or nil
}))
if served then return {'done', served} end
return {'done'}
