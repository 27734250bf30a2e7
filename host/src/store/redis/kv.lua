-- One KV owner's entries, kept atomically with their bookkeeping. Every key
-- shares the owner's hash tag, so the script runs on one node of a cluster.
--
-- KEYS: 1 the entry (put, incr, delete), 2 the index (sorted set of members,
--       `scope/key`, for listing by prefix), 3 expiry (sorted set: member ->
--       expiry in host-clock milliseconds), 4 usage (hash: `#keys` and
--       `#bytes` of the owner, and each member's bytes counted against the
--       quota; members start with a scope, never with `#`)
-- ARGV: 1 operation, 2 prefix of entry keys, 3 member, 4 now (host clock),
--       then the operation's own arguments.
--
-- Writes answer a tagged array: {'stored', 1 | 0}, {'counter', text},
-- {'not-integer', the value}, or {'over-quota', 'keys' | 'bytes', total}.
local op, prefix, member, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local entry, index, expiry, usage = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

-- Whether a member has not expired by the host clock.
local function live(m)
  local at = redis.call('ZSCORE', expiry, m)
  return not (at and tonumber(at) <= now)
end

-- Removes a member and its bookkeeping; 1 if it was counted, else 0.
local function forget(m)
  local size = redis.call('HGET', usage, m)
  redis.call('DEL', prefix .. m)
  redis.call('ZREM', index, m)
  redis.call('ZREM', expiry, m)
  if not size then return 0 end
  redis.call('HDEL', usage, m)
  redis.call('HINCRBY', usage, '#keys', -1)
  redis.call('HINCRBY', usage, '#bytes', -tonumber(size))
  return 1
end

local function reclaim()
  local n = 0
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', expiry, '-inf', now)) do
    n = n + forget(m)
  end
  return n
end

-- The owner's keys and bytes if `member` held `size` bytes, and whether
-- `member` is new.
local function totals(size)
  local held = redis.call('HMGET', usage, '#keys', '#bytes', member)
  local keys, bytes = tonumber(held[1] or '0'), tonumber(held[2] or '0') + size
  if held[3] then bytes = bytes - tonumber(held[3]) else keys = keys + 1 end
  return {keys, bytes, not held[3]}
end

-- The totals after the write if they are within quota, reclaiming expired
-- entries first if they would not be; else nil and the reply that says
-- which quota it would break: {'over-quota', 'keys' | 'bytes', total}.
local function admit(size, quota_keys, quota_bytes)
  local after = totals(size)
  if after[1] > quota_keys or after[2] > quota_bytes then
    reclaim()
    after = totals(size)
  end
  if after[1] > quota_keys then return nil, {'over-quota', 'keys', after[1]} end
  if after[2] > quota_bytes then return nil, {'over-quota', 'bytes', after[2]} end
  return after
end

-- Counts `member` as holding `size` bytes with `after` the owner's totals,
-- expiring at `at` ('' for never).
local function record(after, size, at)
  redis.call('HSET', usage, '#keys', string.format('%d', after[1]),
    '#bytes', string.format('%d', after[2]), member, size)
  if after[3] then redis.call('ZADD', index, 0, member) end
  if at == '' then redis.call('ZREM', expiry, member) else redis.call('ZADD', expiry, at, member) end
end

if op == 'put' then
  -- ARGV: 5 value, 6 bytes, 7 expires at ('' never), 8 ttl ms ('' never),
  --       9 quota keys, 10 quota bytes, 11 'always' | 'absent' | 'equals', 12 expected
  local mode = ARGV[11]
  if mode ~= 'always' then
    local current = false
    if live(member) then current = redis.call('GET', entry) end
    if mode == 'absent' and current then return {'stored', 0} end
    if mode == 'equals' and current ~= ARGV[12] then return {'stored', 0} end
  end
  local size = tonumber(ARGV[6])
  local after, why = admit(size, tonumber(ARGV[9]), tonumber(ARGV[10]))
  if not after then return why end
  if ARGV[8] == '' then
    redis.call('SET', entry, ARGV[5])
  else
    redis.call('SET', entry, ARGV[5], 'PX', ARGV[8])
  end
  record(after, size, ARGV[7])
  return {'stored', 1}
elseif op == 'incr' then
  -- ARGV: 5 delta, 6 key length, 7 quota keys, 8 quota bytes
  if not live(member) then forget(member) end
  local before = redis.call('GET', entry)
  local ttl = redis.call('PTTL', entry)
  if not pcall(redis.call, 'INCRBY', entry, ARGV[5]) then
    return {'not-integer', before or ''}
  end
  local text = redis.call('GET', entry)
  local size = tonumber(ARGV[6]) + #text
  local after, why = admit(size, tonumber(ARGV[7]), tonumber(ARGV[8]))
  if not after then
    if not before then
      redis.call('DEL', entry)
    elseif ttl > 0 then
      redis.call('SET', entry, before, 'PX', ttl)
    else
      redis.call('SET', entry, before)
    end
    return why
  end
  record(after, size, redis.call('ZSCORE', expiry, member) or '')
  -- The counter as text: a Lua number would round it past 2^53.
  return {'counter', text}
elseif op == 'delete' then
  forget(member)
  return 1
elseif op == 'sweep' then
  return reclaim()
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
