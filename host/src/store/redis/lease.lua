-- Takes or renews (ARGV[3] = 'take') or gives up (ARGV[3] = 'release') a
-- session's lease for one holder; or (ARGV[3] = 'interrupt') asks every
-- process to interrupt the session's turn if its lease is held, publishing
-- the session's id (ARGV[1]) on `agentbox:interrupts`, and answers whether
-- it is.
-- KEYS: 1 the lease; ARGV: 1 holder (the session for 'interrupt'), 2 time
-- to live in ms, 3 operation
local holder = redis.call('GET', KEYS[1])
if ARGV[3] == 'interrupt' then
  if not holder then return 0 end
  redis.call('PUBLISH', 'agentbox:interrupts', ARGV[1])
  return 1
end
if ARGV[3] == 'release' then
  if holder == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return 1
end
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
