-- One KV owner's entries, kept atomically with their bookkeeping. Every key
-- shares the owner's hash tag, so the script runs on one node of a cluster.
--
-- KEYS: 1 the entry (put, incr, delete), 2 the index (sorted set of members,
--       `scope/key`, for listing by prefix), 3 sizes (hash: member -> bytes
--       counted against the quota), 4 expiry (sorted set: member -> expiry in
--       host-clock milliseconds), 5 usage (hash: keys, bytes)
-- ARGV: 1 operation, 2 prefix of entry keys, 3 member, 4 now (host clock),
--       then the operation's own arguments.
local op, prefix, member, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local entry, index, sizes, expiry, usage = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]

-- Whether a member has not expired by the host clock.
local function live(m)
  local at = redis.call('ZSCORE', expiry, m)
  return not (at and tonumber(at) <= now)
end

-- Removes a member and its bookkeeping; 1 if it was counted, else 0.
local function forget(m)
  local size = redis.call('HGET', sizes, m)
  redis.call('DEL', prefix .. m)
  redis.call('ZREM', index, m)
  redis.call('ZREM', expiry, m)
  if not size then return 0 end
  redis.call('HDEL', sizes, m)
  redis.call('HINCRBY', usage, 'keys', -1)
  redis.call('HINCRBY', usage, 'bytes', -tonumber(size))
  return 1
end

local function reclaim()
  local n = 0
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', expiry, '-inf', now)) do
    n = n + forget(m)
  end
  return n
end

-- Nil if the owner may hold `member` at `size` bytes, else why not.
local function refusal(size, quota_keys, quota_bytes)
  local old = redis.call('HGET', sizes, member)
  local keys = tonumber(redis.call('HGET', usage, 'keys') or '0')
  local bytes = tonumber(redis.call('HGET', usage, 'bytes') or '0') + size
  if old then bytes = bytes - tonumber(old) else keys = keys + 1 end
  if keys > quota_keys then return 'quota keys ' .. keys end
  if bytes > quota_bytes then return 'quota bytes ' .. bytes end
  return nil
end

-- The same, after reclaiming expired entries if that could help.
local function refused(size, quota_keys, quota_bytes)
  if refusal(size, quota_keys, quota_bytes) then reclaim() end
  return refusal(size, quota_keys, quota_bytes)
end

-- Counts `member` as holding `size` bytes, expiring at `at` ('' for never).
local function record(size, at)
  local old = redis.call('HGET', sizes, member)
  if not old then
    redis.call('HINCRBY', usage, 'keys', 1)
    redis.call('ZADD', index, 0, member)
  end
  redis.call('HINCRBY', usage, 'bytes', size - tonumber(old or '0'))
  redis.call('HSET', sizes, member, size)
  if at == '' then redis.call('ZREM', expiry, member) else redis.call('ZADD', expiry, at, member) end
end

if op == 'put' then
  -- ARGV: 5 value, 6 bytes, 7 expires at ('' never), 8 ttl ms ('' never),
  --       9 quota keys, 10 quota bytes, 11 'always' | 'absent' | 'equals', 12 expected
  local mode = ARGV[11]
  if mode ~= 'always' then
    local current = false
    if live(member) then current = redis.call('GET', entry) end
    if mode == 'absent' and current then return '0' end
    if mode == 'equals' and current ~= ARGV[12] then return '0' end
  end
  local size = tonumber(ARGV[6])
  local why = refused(size, tonumber(ARGV[9]), tonumber(ARGV[10]))
  if why then return why end
  if ARGV[8] == '' then
    redis.call('SET', entry, ARGV[5])
  else
    redis.call('SET', entry, ARGV[5], 'PX', ARGV[8])
  end
  record(size, ARGV[7])
  return '1'
elseif op == 'incr' then
  -- ARGV: 5 delta, 6 key length, 7 quota keys, 8 quota bytes
  if not live(member) then forget(member) end
  local before = redis.call('GET', entry)
  local ttl = redis.call('PTTL', entry)
  if not pcall(redis.call, 'INCRBY', entry, ARGV[5]) then
    return 'invalid ' .. (before or '')
  end
  local text = redis.call('GET', entry)
  local size = tonumber(ARGV[6]) + #text
  local why = refused(size, tonumber(ARGV[7]), tonumber(ARGV[8]))
  if why then
    if not before then
      redis.call('DEL', entry)
    elseif ttl > 0 then
      redis.call('SET', entry, before, 'PX', ttl)
    else
      redis.call('SET', entry, before)
    end
    return why
  end
  record(size, redis.call('ZSCORE', expiry, member) or '')
  return '=' .. text
elseif op == 'delete' then
  forget(member)
  return '1'
elseif op == 'sweep' then
  return tostring(reclaim())
elseif op == 'list' then
  -- ARGV: 5 lowest member (ZRANGEBYLEX syntax), 6 highest, 7 page size
  local found, low, limit = {}, ARGV[5], tonumber(ARGV[7])
  while #found < limit do
    local page = redis.call('ZRANGEBYLEX', index, low, ARGV[6], 'LIMIT', 0, limit)
    if #page == 0 then break end
    for _, m in ipairs(page) do
      if #found < limit and live(m) then found[#found + 1] = m end
    end
    low = '(' .. page[#page]
  end
  return found
end
return redis.error_reply('unknown operation ' .. tostring(op))
