-- Creates a session or commits one of its turns, with its history, atomically,
-- then trims the history to its cap (the newest message always stays).
-- Answers a tagged array: {'done'} and, for a commit, the plugin that served
-- the session until now ({'done', PLUGIN}), {'exists'}, {'missing'} or
-- {'conflict', REVISION}.
-- KEYS: 1 the session's record (hash), 2 its history (list of JSON messages)
-- ARGV: 1 'create' or the revision the turn read, 2 most messages kept,
--       3 most bytes of content kept, 4 number of record field arguments
--       that follow (name, value, ...), then the fields, then the messages
--       to append.
local fields = tonumber(ARGV[4])
local stored = redis.call('HGET', KEYS[1], 'revision')
if ARGV[1] == 'create' then
  if stored then return {'exists'} end
elseif not stored then
  return {'missing'}
elseif stored ~= ARGV[1] then
  return {'conflict', stored}
end
local served = redis.call('HGET', KEYS[1], 'plugin')
redis.call('HSET', KEYS[1], unpack(ARGV, 5, 4 + fields))
if ARGV[1] ~= 'create' then redis.call('HINCRBY', KEYS[1], 'revision', 1) end
if #ARGV > 4 + fields then
  local function content_bytes(message)
    return string.len(cjson.decode(message).content)
  end
  redis.call('RPUSH', KEYS[2], unpack(ARGV, 5 + fields, #ARGV))
  local added = 0
  for i = 5 + fields, #ARGV do added = added + content_bytes(ARGV[i]) end
  local bytes = redis.call('HINCRBY', KEYS[1], 'history_bytes', added)
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
if served then return {'done', served} end
return {'done'}
