-- Creates a session or commits one of its turns, with its history, atomically.
-- Answers a tagged array: {'done'} and, for a commit, the plugin that served
-- the session until now ({'done', PLUGIN}), {'exists'}, {'missing'} or
-- {'conflict', REVISION}.
-- KEYS: 1 the session's record (hash), 2 its history (list of JSON messages)
-- ARGV: 1 'create' or the revision the turn read, 2 number of record field
--       arguments that follow (name, value, ...), then the fields, then the
--       messages to append.
local fields = tonumber(ARGV[2])
local stored = redis.call('HGET', KEYS[1], 'revision')
if ARGV[1] == 'create' then
  if stored then return {'exists'} end
elseif not stored then
  return {'missing'}
elseif stored ~= ARGV[1] then
  return {'conflict', stored}
end
local served = redis.call('HGET', KEYS[1], 'plugin')
redis.call('HSET', KEYS[1], unpack(ARGV, 3, 2 + fields))
if ARGV[1] ~= 'create' then redis.call('HINCRBY', KEYS[1], 'revision', 1) end
if #ARGV > 2 + fields then
  redis.call('RPUSH', KEYS[2], unpack(ARGV, 3 + fields, #ARGV))
end
if served then return {'done', served} end
return {'done'}
